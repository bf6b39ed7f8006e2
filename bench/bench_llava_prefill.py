"""LLaVA prefill with 25 % of the image tokens against all of them: token selection really shortens the LM.

    python -m bench.bench_llava_prefill [--frames 16] [--rounds 5] [--keep 0.25] [--real-frames 2] [--no-real-shape]

For each model, the image tokens of a batch of frames are computed once; then, side by side in each round,
the LM prefill (one forward to the answer position, classify question) runs over

* all image tokens                        (embedded: 12x12 = 144; vqwen3-4b shape: 24x24 = 576)
* the top 25 % by answer attention        (explain_frames' relevance; the dropped tokens leave the sequence)

on the embedded LLaVA and on the vqwen3-4b shape (CLIP ViT-L/14-336 -> Qwen3-4B widths, one LM layer,
random weights: the per-layer cost ratio of the real model). Rounds interleave the two cases; medians and
minima are printed, and ratios use the minima (the cost of the code, not of a stall on a shared machine).
The last line is the headline: prefill time with all tokens / with 25 %, on the vqwen3-4b shape (the
embedded model's ratio when --no-real-shape).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch

from core import vocabulary
from core.config import EMBEDDED_LLAVA, ModelSpec
from core.engine import encode_frames, load_model, run_answer_pass
from core.explain import explain_frames
from training import synthetic
from training.tiny_models import VQWEN_LLAVA_SHAPE, save_real_shape_checkpoint


def time_call(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(lm, frames, keep_share: float, rounds: int) -> dict:
    """Median prefill seconds with all image tokens and with the top `keep_share` of them."""
    visual = encode_frames(lm, frames)
    found = explain_frames(lm, frames, rho=keep_share, faithfulness=False)
    keep = torch.from_numpy(np.stack([e.mask for e in found]))
    cases = {
        "all image tokens": lambda: run_answer_pass(lm, visual, [vocabulary.CLASSIFY]),
        f"top {keep_share:.0%} image tokens": lambda: run_answer_pass(lm, visual, [vocabulary.CLASSIFY], keep=keep),
    }
    lengths = {name: int(fn().attention_mask.shape[1]) for name, fn in cases.items()}  # also a warm-up
    times = {name: [] for name in cases}
    for _ in range(rounds):  # interleaved, so a stall on the shared machine hits both cases alike
        for name, fn in cases.items():
            times[name].append(time_call(fn))
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    best = {name: min(ts) for name, ts in times.items()}
    print(f"\nmodel {lm.version}: {visual.embeds.shape[1]} image tokens, {len(frames)} frames, {rounds} rounds")
    for name in cases:
        print(f"  {name:<26} sequence {lengths[name]:>5}   median {medians[name]:.4f}s   min {best[name]:.4f}s")
    full, short = list(cases)
    ratio = best[full] / best[short]
    print(f"  all / top {keep_share:.0%}: {ratio:.2f}x by minima, {medians[full] / medians[short]:.2f}x by medians;"
          f" sequence {lengths[full] / lengths[short]:.2f}x shorter")
    return {"ratio": ratio, "lengths": lengths}


def build_real_shape(folder: str):
    """The vqwen3-4b shape at one LM layer with random weights, saved and loaded like any checkpoint."""
    save_real_shape_checkpoint(folder, "llava", VQWEN_LLAVA_SHAPE)
    return load_model(ModelSpec(folder))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", type=float, default=0.25)
    parser.add_argument("--model", default=str(EMBEDDED_LLAVA))
    parser.add_argument("--no-real-shape", action="store_true", help="skip the vqwen3-4b-shaped model (~3 GB RAM)")
    # At Qwen3-4B width one 600-token row is ~0.12 TFLOP per layer: a few seconds each on two CPU cores.
    parser.add_argument("--real-frames", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    frames, _ = synthetic.make_frames(seed=5, n=args.frames, pool="holdout")
    embedded = measure(load_model(ModelSpec(args.model)), frames, args.keep, args.rounds)
    if args.no_real_shape:
        print(f"llava_prefill_speedup_keep{args.keep}_embedded: {embedded['ratio']:.2f}x")
        return
    with tempfile.TemporaryDirectory() as folder:
        real = measure(build_real_shape(folder), frames[: args.real_frames], args.keep, args.rounds)
    print(f"embedded prefill all / top {args.keep:.0%}: {embedded['ratio']:.2f}x")
    print(f"vqwen3-4b shape (1 LM layer) prefill all / top {args.keep:.0%}: {real['ratio']:.2f}x")
    print(f"llava_prefill_speedup_keep{args.keep}_vqwen3_4b_shape: {real['ratio']:.2f}x")


if __name__ == "__main__":
    main()
