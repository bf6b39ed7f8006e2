"""Command line: python -m core analyze VIDEO [--frames N] [--model SPEC] [--revision REV] [--json].

Every refusal is one line on stderr, ``error: ...``, with a non-zero exit: 2 for a bad argument or a file
we cannot use (checked before the model loads), 3 for a model that cannot be loaded.
"""

from __future__ import annotations

import argparse
import json
import sys

from core.config import ModelSpec, Settings, check_frame_count, load_settings
from core.video import COMMON_FORMATS, OLDER_FORMATS


def frame_count_type(settings: Settings):
    """The argparse type of ``--frames``: a whole number from 1 to ``settings.video.max_sampled_frames``.

    >>> frame_count_type(load_settings({}))("8")
    8
    """
    def parse(text: str) -> int:
        try:
            return check_frame_count(text, settings.video)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = "frame count"  # argparse names the type in its messages
    return parse


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1.

    >>> positive_int("4")
    4
    """
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def build_parser(settings: Settings | None = None) -> argparse.ArgumentParser:
    """The argument parser; ``--frames`` is checked against ``settings`` (default: from the environment)."""
    settings = settings or load_settings()
    top = settings.video.max_sampled_frames
    parser = argparse.ArgumentParser(prog="python -m core", description="Score short-form video for sludge.")
    sub = parser.add_subparsers(dest="command", required=True)
    analyze = sub.add_parser("analyze", help="sample frames of a video and print each frame's P(sludge) and the verdict")
    analyze.add_argument("video", help=f"path to a video file ({', '.join(COMMON_FORMATS + OLDER_FORMATS)})")
    analyze.add_argument("--frames", type=frame_count_type(settings), default=None,
                         help=f"frames to sample uniformly, 1 to {top} (default {settings.num_frames})")
    analyze.add_argument("--model", default=None, help="local checkpoint folder or hub id (default: the embedded model)")
    analyze.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")
    analyze.add_argument("--batch-size", type=positive_int, default=None, help="frames per batched forward")
    analyze.add_argument("--json", action="store_true", help="print the full result as JSON")
    return parser


def check_video(path: str, settings: Settings):
    """Refuse a file we cannot use before any model loads (size, signature, a probe of its first picture).

    >>> check_video("no/such/clip.mp4", load_settings({}))
    Traceback (most recent call last):
    ...
    core.video.MissingFileError: There is no file at 'no/such/clip.mp4'.
    """
    from core.video import check_video_file

    return check_video_file(path, settings.video)


def run_analyze(args, settings) -> int:
    from core.video import VideoError

    try:
        check_video(args.video, settings)
    except VideoError as err:
        return refuse(err, 2)
    except OSError as err:
        return refuse(f"cannot read {args.video!r}: {err.strerror or err}", 2)
    # torch and transformers take seconds to import: only a file that passed the checks pays for them.
    from core.analyze import analyze_video
    from core.engine import ModelLoadError, load_model

    spec = ModelSpec(args.model, args.revision) if args.model else settings.model
    try:
        lm = load_model(spec, settings.engine)
        result = analyze_video(lm, args.video, num_frames=args.frames or settings.num_frames,
                               limits=settings.video, batch_size=args.batch_size)
    except VideoError as err:
        return refuse(err, 2)
    except ModelLoadError as err:
        return refuse(err, 3)
    except OSError as err:  # a file that vanished or cannot be read between the checks and the decode
        return refuse(f"cannot read {args.video!r}: {err.strerror or err}", 2)
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


def refuse(err, code: int) -> int:
    """Print one line, ``error: <message>``, on stderr and return the exit status."""
    print("error: " + " ".join(str(err).split()), file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    settings = load_settings()
    args = build_parser(settings).parse_args(argv)
    if args.command == "analyze":
        return run_analyze(args, settings)
    return 1


if __name__ == "__main__":
    sys.exit(main())
