"""Real-footage check of a model: clips composed from held-out packages' pictures, at real sizes, H.264.

    python -m bench.bench_real_video [--model models/tiny-vqwen-qformer] [--per-layout 4] [--frames 16]
                                     [--pool real-holdout|real-train] [--composers renderer,plain,footage]
                                     [--threshold 0.5]

Per composer and size (1080x1920 portrait and 1280x720 landscape), `--per-layout` clips of a single scene
and of each sludge layout (vertical, horizontal, pip, other), drawn from the "real-holdout" pool only
(training.imagery: packages the embedded models never saw), cached under data/bench/<pool>-v3-<fp>/ (the
training renderer with the pool's pictures, game and video stills, none of its procedural scenes),
data/bench/<pool>-plain-<fp>/ (plain compositing of still pictures: crop, slow zoom and pan, paste) and
data/bench/<pool>-footage-<fp>/ (the same compositing of the pool's real videos, playing), <fp> being the
pool's fingerprint (training.imagery.fingerprint_pool). Each clip goes through
the app's own path (decode, sample 16 frames, score). Also checks the app's five bundled examples at video level. Prints
the per-clip table (with the sources each clip's streams come from), the figures per composer and over
all clips (single-scene frames also by source: which kinds of picture the model misreads) and, last,
``real_video_accuracy: X`` (video level over all clips). Goals: video level >= 0.90, single-scene frames
called not sludge >= 85 %, sludge frames found >= 90 %, layout >= 80 %, all 5 examples right.

``--pool real-train`` builds the same kinds of clips from the training pool's packages instead: a validation
set for choosing among checkpoints, so that the held-out clips only report.
"""

from __future__ import annotations

import argparse
import json

from bench.clips import BENCH_DIR


COMPOSERS = ("renderer", "plain", "footage")


def make_clip_set(pool: str, per_layout: int = 4, clip_frames: int = 24, composers: tuple[str, ...] = COMPOSERS):
    """The check's clips (training.real_footage.RealClip) from `pool`, each composer's cached in its own folder:
    only missing clips are made."""
    from training.imagery import fingerprint_pool
    from training.real_footage import make_footage_clips, make_plain_clips, make_real_clips

    # The renderer's folder is named for its stream mix: its clips changed when real video stills joined it
    # (v2) and when composites of one kind of stream did (v3). Every folder also carries the pool's fingerprint:
    # a package joining or leaving the pool changes which pictures and videos the same seeds draw.
    fingerprint = fingerprint_pool(pool.split("-", 1)[1])
    makers = {"renderer": (make_real_clips, BENCH_DIR / f"{pool}-v3-{fingerprint}"),
              "plain": (make_plain_clips, BENCH_DIR / f"{pool}-plain-{fingerprint}"),
              "footage": (make_footage_clips, BENCH_DIR / f"{pool}-footage-{fingerprint}")}
    return [clip for name in composers
            for clip in makers[name][0](makers[name][1], per_layout=per_layout, num_frames=clip_frames, pool=pool)]


def main(argv: list[str] | None = None) -> dict:
    from training.synthetic import REAL_POOLS

    parser = argparse.ArgumentParser(prog="python -m bench.bench_real_video", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="", help="model folder or id (default: the embedded default)")
    parser.add_argument("--per-layout", type=int, default=4, help="clips per kind and size (default 4)")
    parser.add_argument("--frames", type=int, default=16, help="frames sampled per clip, as the app does")
    parser.add_argument("--clip-frames", type=int, default=24, help="frames per clip (12 fps)")
    parser.add_argument("--pool", default="real-holdout", choices=REAL_POOLS,
                        help="packages the clips are composed from (default: the held-out pool, the goals' check)")
    parser.add_argument("--composers", default="renderer,plain,footage",
                        help="which clips: some of renderer, plain, footage, comma-separated (default all three)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="P(sludge) from which a frame is sludge (default: the engine's, 0.5)")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)

    import torch

    from core.config import EMBEDDED_BLIP2, EngineConfig, ModelSpec
    from core.engine import load_model
    from training import synthetic
    from training.real_footage import check_examples, check_real_footage, format_shares

    composers = tuple(name.strip() for name in args.composers.split(",") if name.strip())
    if not composers or set(composers) - set(COMPOSERS):
        parser.error(f"--composers takes some of {', '.join(COMPOSERS)}, got {args.composers!r}")
    try:
        synthetic.pool_sources(args.pool)  # a pool with a package missing would make other clips
    except ValueError as error:
        parser.error(str(error))
    torch.set_num_threads(2)
    clips = make_clip_set(args.pool, args.per_layout, args.clip_frames, composers)
    engine = EngineConfig() if args.threshold is None else EngineConfig(threshold=args.threshold)
    lm = load_model(ModelSpec(args.model or str(EMBEDDED_BLIP2)), engine)
    figures = check_real_footage(lm, clips, num_frames=args.frames)
    examples = check_examples(lm, num_frames=args.frames)
    for row in figures["rows"]:
        mark = "ok " if row["right"] else "BAD"
        print(f"{mark} {row['composer']:8} {row['clip']:42} truth {row['truth']:10} sludge frames "
              f"{row['sludge_frames']:2d}/{row['frames']}  layouts {row['layout_votes']}  "
              f"sources {'+'.join(row['sources'])}")
    for row in examples["rows"]:
        print(f"{'ok ' if row['right'] else 'BAD'} example {row['example']:26} truth {row['truth']!s:5} "
              f"majority {row['majority']:.2f}")
    print(f"model: {lm.version}, threshold {lm.config.threshold}")
    print(f"clips: {figures['clips']} from the {args.pool} pool ({args.per_layout} per kind, size and composer, "
          f"sizes 1080x1920 and 1280x720, composers {', '.join(composers)})")
    for name, part in [*figures["by_composer"].items(), ("all clips", figures)]:
        print(f"-- {name}: video level {part['video_accuracy']:.3f} (goal >= 0.90), single-scene frames called not "
              f"sludge {part['single_frames_not_sludge']:.1%} (goal >= 85 %), sludge frames found "
              f"{part['sludge_frames_found']:.1%} (goal >= 90 %), layout {part['layout_accuracy']:.1%} (goal >= 80 %)")
    print(f"video accuracy by truth: {figures['video_accuracy_by_layout']}")
    print(f"single-scene frames called not sludge, by source: {format_shares(figures['single_not_sludge_by_source'])}")
    print("layout accuracy by layout, portrait / landscape: " + ", ".join(
        f"{kind} {shapes.get('portrait', float('nan')):.0%} / {shapes.get('landscape', float('nan')):.0%}"
        for kind, shapes in figures["layout_accuracy_by_shape"].items()))
    print(f"bundled examples right at video level: {examples['right']}/{examples['examples']} (goal 5/5)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"figures": figures, "examples": examples, "model": lm.version}, f, indent=2)
    print(f"real_video_accuracy: {figures['video_accuracy']}")
    return {"figures": figures, "examples": examples}


if __name__ == "__main__":
    main()
