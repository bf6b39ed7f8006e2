"""File -> verdict on a 60 s 720p clip with the embedded model on CPU, and where the time goes.

    python -m bench.bench_e2e [--rounds 3] [--frames 16]

Each round runs core.analyze.analyze_video on the cached clip (bench.clips.ensure_clip) with a model loaded
once, as the app does; it also times the two halves (sampling and scoring) so a regression can be placed.
The last line is the median end-to-end time.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from bench.clips import ensure_clip
from core.analyze import analyze_video
from core.config import EMBEDDED_BLIP2, ModelSpec
from core.engine import load_model


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--model", default=str(EMBEDDED_BLIP2))
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    clip = ensure_clip()
    lm = load_model(ModelSpec(args.model))
    analyze_video(lm, clip, num_frames=4)  # warm-up: first-call allocations
    totals, decode, score = [], [], []
    for _ in range(args.rounds):
        result = analyze_video(lm, clip, num_frames=args.frames)
        totals.append(result.timings["total"])
        decode.append(result.timings["decode"])
        score.append(result.timings["score"])
    print(f"clip: {clip.name}, {args.frames} frames, model {lm.version} on {lm.device.type}")
    print(f"sampling (decode) median: {statistics.median(decode):.3f} s")
    print(f"scoring median:           {statistics.median(score):.3f} s")
    print(f"verdict: {result.verdict.to_dict()}")
    print(f"e2e_seconds: {statistics.median(totals):.3f}")


if __name__ == "__main__":
    main()
