"""Command line: python -m core analyze VIDEO [--frames N] [--model SPEC] [--revision REV] [--json]."""

from __future__ import annotations

import argparse
import json
import sys

from core.config import ModelSpec, load_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="Score short-form video for sludge.")
    sub = parser.add_subparsers(dest="command", required=True)
    analyze = sub.add_parser("analyze", help="sample frames of a video and print each frame's P(sludge) and the verdict")
    analyze.add_argument("video", help="path to a video file (mp4, mov, webm, mkv, avi)")
    analyze.add_argument("--frames", type=int, default=None, help="frames to sample uniformly (default 16)")
    analyze.add_argument("--model", default=None, help="local checkpoint folder or hub id (default: the embedded model)")
    analyze.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")
    analyze.add_argument("--batch-size", type=int, default=None, help="frames per batched forward")
    analyze.add_argument("--json", action="store_true", help="print the full result as JSON")
    return parser


def run_analyze(args, settings) -> int:
    from core.analyze import analyze_video
    from core.engine import ModelLoadError, load_model
    from core.video import VideoError

    spec = ModelSpec(args.model, args.revision) if args.model else settings.model
    try:
        lm = load_model(spec, settings.engine)
        result = analyze_video(lm, args.video, num_frames=args.frames or settings.num_frames,
                               limits=settings.video, batch_size=args.batch_size)
    except VideoError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ModelLoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    data = result.to_dict()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    v = data["verdict"]
    print(f"{args.video}: {'SLUDGE' if v['label'] else 'not sludge'} "
          f"({v['majority']:.0%} of {v['frames']} frames, mean P {v['mean_p']:.2f}, layout {v['layout']})")
    for f in data["frames"]:
        print(f"  {f['time_s']:7.2f}s  P={f['p_sludge']:.3f}  {'sludge' if f['label'] else '-':6}  {f['layout']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_settings()
    if args.command == "analyze":
        return run_analyze(args, settings)
    return 1


if __name__ == "__main__":
    sys.exit(main())
