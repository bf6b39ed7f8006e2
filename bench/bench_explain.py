"""What explanations cost: scoring plus explanations against scoring alone, same model, same 16 frames.

    python -m bench.bench_explain [--frames 16] [--rounds 9] [--model models/tiny-vqwen-qformer]

Side by side in each round:

* score                  core.engine.score_frames: the fast tier (vision, Q-Former, one LM forward, classify + layout)
* score + maps           explain_frames(faithfulness=False): the same single pass, now also keeping the Q-Former
                         cross-attention and reading the LM's answer attention through hooks -> scores, every
                         map, relevance and the token mask
* + faithfulness         the four masked re-scores of each mask (keep / drop the top, keep / drop a random set)
* + deletion curve       the full slow tier: also top/random deletion at 4 shares (8 more re-scores per frame)
* gradient maps          explain_frames(method="gradient", faithfulness=False): a backward through the LM

Medians and minima over the rounds. On a shared machine a round can stall on someone else's work, which
swings medians by 2x; the minimum is the cost of the code itself, so the last line, the headline, is
min(score + maps) / min(score).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from core.config import EMBEDDED_BLIP2, ModelSpec
from core.engine import load_model, score_frames
from core.explain import ExplainConfig, explain_frames
from training import synthetic


def time_call(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--model", default=str(EMBEDDED_BLIP2))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    frames, _ = synthetic.make_frames(seed=99, n=args.frames, pool="holdout")
    lm = load_model(ModelSpec(args.model))
    batch = lm.config.batch_size
    no_curve = ExplainConfig(batch_size=batch, curve_rhos=())
    full = ExplainConfig(batch_size=batch)
    cases = {
        "score": lambda: score_frames(lm, frames),
        "score + maps": lambda: explain_frames(lm, frames, faithfulness=False, config=no_curve),
        "score + maps + faithfulness": lambda: explain_frames(lm, frames, config=no_curve),
        "  + deletion curve (full slow tier)": lambda: explain_frames(lm, frames, config=full),
        "gradient maps": lambda: explain_frames(lm, frames, method="gradient", faithfulness=False, config=no_curve),
    }
    for fn in cases.values():  # warm-up: first calls pay for allocator growth and lazy init
        fn()
    times = {name: [] for name in cases}
    for r in range(args.rounds):
        for name, fn in cases.items():
            times[name].append(time_call(fn))
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    base = medians["score"]
    print(f"\nmodel {lm.version} ({lm.family.name}), {args.frames} frames, batch {batch}, {args.threads} threads")
    best = {name: min(ts) for name, ts in times.items()}
    print(f"{'median over ' + str(args.rounds) + ' rounds':<40}{'seconds':>9}{'ms/frame':>10}{'vs score':>10}{'min vs min':>12}")
    for name, seconds in medians.items():
        print(f"{name:<40}{seconds:>9.3f}{1000 * seconds / args.frames:>10.1f}{seconds / base:>9.2f}x"
              f"{best[name] / best['score']:>11.2f}x")
    print(f"explain_overhead_score_plus_maps_vs_score: {best['score + maps'] / best['score']:.2f}x")


if __name__ == "__main__":
    main()
