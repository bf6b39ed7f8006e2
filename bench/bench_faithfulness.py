"""Do the masks predict the model? Drop-top vs drop-random and keep-top on synthetic sludge frames.

    python -m bench.bench_faithfulness [--frames 64] [--rho 0.25] [--seed 0] [--model models/tiny-vqwen-qformer]

On held-out synthetic sludge frames (photos the training pool never shows), for each relevance method side
by side (attention, the default, and gradient x attention), with rho fixed at 0.25:

* drop ratio    mean |P(full) - P(drop top 25 %)| / mean |P(full) - P(drop random 25 %)|   (goal >= 3)
* keep-top ok   share of frames with |P(keep top 25 %) - P(full)| <= 0.1                     (goal >= 80 %)
* keep-random   the same for a random 25 % kept: how far a mask of this size moves P by itself
* the deletion curve: mean |dP| deleting the top / a random share, per share
* the budget rule: the rho it would pick (mean, and the spread)

The last line is the headline: the default method's drop ratio at rho = 0.25.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from core.config import EMBEDDED_BLIP2, ModelSpec
from core.engine import load_model
from core.explain import METHODS, ExplainConfig, choose_budget, explain_frames
from training import synthetic


def summarise(found, rho: float) -> dict:
    """The bench's figures for one method's explanations."""
    d_top = np.array([abs(e.p_full - e.faithfulness.p_drop_top) for e in found])
    d_rand = np.array([abs(e.p_full - e.faithfulness.p_drop_random) for e in found])
    keep_gap = np.array([abs(e.p_full - e.faithfulness.p_keep_top) for e in found])
    keep_random_gap = np.array([abs(e.p_full - e.faithfulness.p_keep_random) for e in found])
    curve = {}
    for i, point in enumerate(found[0].faithfulness.curve):
        curve[point["rho"]] = (
            float(np.mean([abs(e.p_full - e.faithfulness.curve[i]["p_drop_top"]) for e in found])),
            float(np.mean([abs(e.p_full - e.faithfulness.curve[i]["p_drop_random"]) for e in found])),
        )
    budgets = [choose_budget(e.relevance) for e in found]
    return {
        "ratio": float(d_top.mean() / max(d_rand.mean(), 1e-12)),
        "d_top": float(d_top.mean()), "d_rand": float(d_rand.mean()),
        "frames_top_beats_random": float(np.mean(d_top > d_rand)),
        "keep_ok": float(np.mean(keep_gap <= 0.1)), "keep_gap": float(keep_gap.mean()),
        "keep_random_ok": float(np.mean(keep_random_gap <= 0.1)), "keep_random_gap": float(keep_random_gap.mean()),
        "keep_signed": float(np.mean([e.faithfulness.p_keep_top - e.p_full for e in found])),
        "p_full": float(np.mean([e.p_full for e in found])), "curve": curve,
        "rho_auto_mean": float(np.mean(budgets)), "rho_auto_sd": float(np.std(budgets)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--rho", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-seed", type=int, default=31337)
    parser.add_argument("--model", default=str(EMBEDDED_BLIP2))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    frames, truths = synthetic.make_frames(seed=args.data_seed, n=args.frames, pool="holdout", sludge_share=1.0)
    frames = frames[[i for i, t in enumerate(truths) if t.sludge]]
    lm = load_model(ModelSpec(args.model))
    config = ExplainConfig(batch_size=16, rescore_batch=64)
    print(f"model {lm.version} ({lm.family.name}), {len(frames)} held-out synthetic sludge frames, rho = {args.rho}")
    results = {}
    for method in args.methods:
        t0 = time.perf_counter()
        found = explain_frames(lm, frames, rho=args.rho, seed=args.seed, method=method, config=config)
        seconds = time.perf_counter() - t0
        results[method] = r = summarise(found, args.rho)
        print(f"\n[{method}] {seconds:.1f}s for {len(found)} frames, mean P(full) {r['p_full']:.3f}")
        print(f"  mean |dP| drop top {args.rho:.0%}: {r['d_top']:.4f}   drop random {args.rho:.0%}: {r['d_rand']:.4f}"
              f"   ratio {r['ratio']:.2f}x (goal >= 3)   frames where top > random: {r['frames_top_beats_random']:.0%}")
        print(f"  keep top {args.rho:.0%} within 0.1 of P(full): {r['keep_ok']:.0%} of frames (goal >= 80 %),"
              f" mean |dP| {r['keep_gap']:.4f} (signed {r['keep_signed']:+.4f})")
        print(f"  keep random {args.rho:.0%} within 0.1 of P(full): {r['keep_random_ok']:.0%} of frames,"
              f" mean |dP| {r['keep_random_gap']:.4f}   (the sufficiency baseline)")
        print("  deletion curve (share deleted: mean |dP| top / random): " + ", ".join(
            f"{k:.2f}: {a:.4f}/{b:.4f}" for k, (a, b) in r["curve"].items()))
        print(f"  budget rule would pick rho {r['rho_auto_mean']:.3f} +- {r['rho_auto_sd']:.3f}")
    default = "attention" if "attention" in results else args.methods[0]
    print()
    for method, r in results.items():
        print(f"{method:<10} drop ratio {r['ratio']:.2f}x  keep-top ok {r['keep_ok']:.0%}")
    print(f"keep_top_within_0.1_share_{default}: {results[default]['keep_ok']:.3f}")
    print(f"faithfulness_drop_ratio_rho{args.rho}_{default}: {results[default]['ratio']:.2f}")


if __name__ == "__main__":
    main()
