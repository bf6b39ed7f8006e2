"""How fast each queue strategy finds wrong labels: a synthetic collection with uniform label flips.

    python -m bench.bench_queue [--clips 60] [--frames-per-clip 8] [--noise 0.12] [--noise-kind uniform|video]
                                [--source synthetic|real-holdout|real-train]

The collection: ``--clips`` synthetic clips (``training.synthetic.make_clip``), ``--frames-per-clip`` frames
each, scored by the embedded model (``core.engine.score_frames``), stored with its predictions, and raw
ground truth imported as raw-gt with ``--noise`` of the sludge labels flipped, drawn uniformly over all
frames (``training.loop_experiment.flip_labels``: a flipped sludge frame reads "none", a flipped single
stream a random layout). ``--noise-kind video`` flips whole clips instead, as when raw labels come per video:
the case where a frame's neighbours share its slip, so their vote must not count (``label-issue`` finds no
frames labelled unlike their neighbours and leaves it out; ``label-issue-model`` never counts it).

``--source real-holdout`` stores the real-footage check's 120 clips instead (bench.bench_real_video: single
scenes and every layout composed from packages the model never saw, real video among them), each through the
app's own analysis, every frame of a clip true to the clip.

Each strategy then starts from the same store (a copy) and a scripted labeler walks its queue as a person
would: a batch at a time, setting every frame it is shown to the truth (which is what takes it out of the
queue). The table is the share of the flipped labels among the first N frames looked at, for N = 5, 10, 20
and 30 % of the frames, side by side in one run. The last line is label-issue recall over disagreement
recall at a budget of 10 % of the frames (goal: 1.5 or more).
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np

import annotations as store
from core.config import load_settings
from core.engine import load_model, score_frames
from training import synthetic
from training.loop_experiment import flip_labels, import_raw_labels

STRATEGIES = ("label-issue", "label-issue-model", "disagreement", "uncertain", "random")
BUDGETS = (0.05, 0.10, 0.20, 0.30)
WALKER = "walker"


def build_collection(root: Path, clips: int, frames_per_clip: int, noise: float, seed: int,
                     per_video: bool = False, source: str = "synthetic") -> dict:
    """The store under root: frames, the embedded model's predictions, raw-gt with uniform flips (of whole
    clips with `per_video`). `source` "synthetic" renders `clips` clips; a real pool ("real-holdout",
    "real-train") stores the real-footage check's clips instead, through the app's own analysis."""
    db = store.open_store(root / "base.db", root / "media")
    lm = load_model(load_settings().model)
    model_id = lm.identity.id
    store.register_model(db, model_id, lm.identity.source, lm.identity.revision)
    truth: dict[int, synthetic.FrameTruth] = {}
    video_of: dict[int, int] = {}
    render_s = score_s = 0.0
    if source != "synthetic":
        from annotations.analyses import record_analysis
        from bench.bench_real_video import make_clip_set

        t = time.perf_counter()
        real = make_clip_set(source)
        render_s = time.perf_counter() - t
        for k, clip in enumerate(real):
            t = time.perf_counter()
            stored = record_analysis(lm, db, clip.path, num_frames=frames_per_clip, collection="bench-queue")
            score_s += time.perf_counter() - t
            truth.update((f, synthetic.FrameTruth(clip.sludge, clip.layout, "", "")) for f in stored.frame_ids)
            video_of.update((f, k) for f in stored.frame_ids)
    else:
        for k in range(clips):
            t = time.perf_counter()
            frames, truths = synthetic.make_clip(seed * 10_000 + k, num_frames=frames_per_clip, fps=4.0)
            render_s += time.perf_counter() - t
            video = store.add_video(db, f"bench-queue-{seed}-{k}".encode(), f"clip_{k:03d}.mp4", {"fps": 4.0},
                                    collection="bench-queue")
            ids = store.add_frames(db, video, frames, [i / 4.0 for i in range(len(frames))], list(range(len(frames))))
            t = time.perf_counter()
            scores = score_frames(lm, frames)
            score_s += time.perf_counter() - t
            store.record_predictions(db, model_id, ids, [s.p_sludge for s in scores], [s.layout_scores for s in scores])
            truth.update(zip(ids, truths))
            video_of.update((f, k) for f in ids)
    raw = flip_labels(truth, noise, seed, clips=video_of if per_video else None)
    import_raw_labels(db, raw, root / "raw.jsonl")
    store.add_labeler(db, WALKER, "labeler")
    flipped = {f for f in truth if raw[f][0] != truth[f].sludge}
    p = np.array([r[0] for r in db.execute("SELECT p_sludge FROM predictions ORDER BY frame_id")])
    said = p >= lm.config.threshold
    sludge = np.array([truth[f].sludge for f in sorted(truth)])
    db.close()
    return {"truth": truth, "flipped": flipped, "model_id": model_id, "render_s": render_s, "score_s": score_s,
            "video_of": video_of, "model_accuracy": float((said == sludge).mean())}


def walk(root: Path, strategy: str, built: dict, budget: int, batch: int = 16, seed: int = 0) -> list[int]:
    """The frames a labeler looks at by `strategy`, in order, up to `budget`, each set to its truth."""
    path = root / f"{strategy}.db"
    with sqlite3.connect(root / "base.db") as source, sqlite3.connect(path) as copy:
        source.backup(copy)
    db = store.open_store(path, root / "media")
    looked: list[int] = []
    seen: set[int] = set()
    for round_ in range(10 * budget):
        # The random strategy's draws must not repeat the flips' draw (same generator, same seed, same size).
        frames = store.next_frames(db, WALKER, strategy, n=batch, model_id=built["model_id"],
                                   seed=1_000_003 * (seed + 1) + round_)
        fresh = [f for f in frames if f["frame_id"] not in seen]
        if not fresh:
            break
        for frame in fresh:
            if len(looked) >= budget:
                break
            t = built["truth"][frame["frame_id"]]
            event = store.correct_label(db, frame["frame_id"], "sludge", t.sludge, WALKER, frame["revision"])
            layout = t.layout if t.sludge else "none"
            if frame["layout"] != layout:
                store.correct_label(db, frame["frame_id"], "layout", layout, WALKER, event.revision)
            looked.append(frame["frame_id"])
            seen.add(frame["frame_id"])
        store.release_frames(db, WALKER)
        if len(looked) >= budget:
            break
    db.close()
    return looked


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--frames-per-clip", type=int, default=8)
    parser.add_argument("--noise", type=float, default=0.12, help="share of sludge labels flipped, uniformly")
    parser.add_argument("--noise-kind", choices=("uniform", "video"), default="uniform",
                        help="flip frames drawn uniformly, or whole clips (raw labels given per video)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", choices=("synthetic", "real-holdout", "real-train"), default="synthetic",
                        help="synthetic clips, or the real-footage check's 120 clips of a pool (--clips unused)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        built = build_collection(root, args.clips, args.frames_per_clip, args.noise, args.seed,
                                 per_video=args.noise_kind == "video", source=args.source)
        n = len(built["truth"])
        flips = built["flipped"]
        clips = len(set(built["video_of"].values()))
        print(f"{clips} {args.source} clips x {args.frames_per_clip} frames = {n} frames (made in "
              f"{built['render_s']:.0f} s, scored in {built['score_s']:.0f} s); model accuracy on the truth "
              f"{built['model_accuracy']:.1%}; {len(flips)} sludge labels flipped ({len(flips) / n:.1%}, "
              f"{'whole clips' if args.noise_kind == 'video' else 'uniform'})")
        budgets = [max(1, round(b * n)) for b in BUDGETS]
        recall: dict[str, list[float]] = {}
        for strategy in STRATEGIES:
            looked = walk(root, strategy, built, max(budgets), seed=args.seed)
            recall[strategy] = [len(flips & set(looked[:b])) / len(flips) for b in budgets]

    print("\nshare of the flipped labels found in the first N frames looked at")
    print(f"{'strategy':<19}" + "".join(f"{f'{b:.0%} ({m})':>14}" for b, m in zip(BUDGETS, budgets)))
    for strategy, values in recall.items():
        print(f"{strategy:<19}" + "".join(f"{v:>14.1%}" for v in values))
    at = BUDGETS.index(0.10)
    for strategy in STRATEGIES[1:]:
        base = recall[strategy][at]
        ratio = recall["label-issue"][at] / base if base else float("inf")
        print(f"label-issue / {strategy} at 10 %: {ratio:.2f}")
    headline = recall["label-issue"][at] / recall["disagreement"][at] if recall["disagreement"][at] else float("inf")
    print(f"issue_recall_ratio: {headline:.2f}")
    return {"recall": recall, "budgets": budgets, "ratio": headline}


if __name__ == "__main__":
    main()
