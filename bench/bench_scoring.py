"""Scoring frames: the vqwen card's way (generate + parse, one frame at a time) against our batched pass.

    python -m bench.bench_scoring [--frames 16] [--rounds 3] [--model SPEC]

Same model, same frames, side by side in each round:

* card     for each frame: processor -> model.generate(max_new_tokens=8, greedy) -> decode -> "yes"/"no"
           (the usage snippet of the vqwen card); the layout question is a second generate call
* rows     vision (+ Q-Former) once per frame, one LM forward over left-padded [frame x {classify, layout}]
           rows (core.engine.answer_logits, the pass explanations read), P(yes) and layout from the logits
* batched  core.engine.score_frames: vision once per frame, the LM over the prompts' shared prefix (image
           slots included) once per frame, then each question's tail on its cached keys and values

Medians over rounds; runs on CUDA when present (bf16 there). The last line is the headline ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from core import vocabulary
from core.config import EMBEDDED_BLIP2, ModelSpec
from core.engine import answer_logits, encode_frames, load_model, score_frames, summarise_logits
from training import synthetic


def score_the_card_way(lm, frames) -> list[str]:
    """One generate call per frame and question, as in the model card's usage snippet."""
    answers = []
    for frame in frames:
        for question in (vocabulary.CLASSIFY, vocabulary.LAYOUT):
            text = lm.tokenizer.apply_chat_template(vocabulary.build_messages(question), add_generation_prompt=True, tokenize=False)
            inputs = lm.processor(text=text, images=frame, return_tensors="pt").to(lm.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(lm.dtype)
            with torch.inference_mode():
                out = lm.model.generate(**inputs, max_new_tokens=8, do_sample=False,
                                        pad_token_id=lm.tokenizer.pad_token_id)
            answers.append(lm.tokenizer.decode(out[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True))
    return answers


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default=str(EMBEDDED_BLIP2))
    args = parser.parse_args(argv)
    lm = load_model(ModelSpec(args.model))
    frames, truths = synthetic.make_frames(seed=7, n=args.frames)
    score_frames(lm, frames[:2])  # warm-up
    card_s, rows_s, batched_s = [], [], []
    for _ in range(args.rounds):
        t = time.perf_counter()
        answers = score_the_card_way(lm, frames)
        card_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        rows = summarise_logits(lm, answer_logits(lm, encode_frames(lm, frames), [vocabulary.CLASSIFY,
                                                                                   vocabulary.LAYOUT]))
        rows_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        scores = score_frames(lm, frames, batch_size=args.frames)
        batched_s.append(time.perf_counter() - t)
    said_yes = [a.strip().lower().startswith("yes") for a in answers[::2]]
    agree = np.mean([s.label == y for s, y in zip(scores, said_yes)])
    drift = max(abs(a.p_sludge - b.p_sludge) for a, b in zip(rows, scores))
    card, row, batched = statistics.median(card_s), statistics.median(rows_s), statistics.median(batched_s)
    print(f"model: {lm.version} on {lm.device.type} ({lm.dtype})")
    print(f"card way (generate per frame, 2 questions):     {card:.3f} s for {args.frames} frames")
    print(f"rows (one padded row per question):            {row:.3f} s for {args.frames} frames")
    print(f"batched scoring (shared prefix, 2 questions):  {batched:.3f} s for {args.frames} frames")
    print(f"labels agree between the card way and batched: {agree:.0%}; shared prefix against rows: "
          f"{row / batched:.2f}x, P(sludge) within {drift:.1e}")
    print(f"scoring_speedup: {card / batched:.1f}x")


if __name__ == "__main__":
    main()
