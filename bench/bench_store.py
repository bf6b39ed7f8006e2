"""The annotation store under load: correction latency with concurrent writers, and exports of 100 k labels.

    python -m bench.bench_store [--writers 8] [--corrections 200] [--frames 100000]

Side by side in one run, each on a fresh store file:

* correct_label latency (ms, p50 / p99 / max) with 1 writer and with N writer processes on a shared pool of
  40 frames: back to back (saturation: every writer always waiting for the lock) with the store's
  default synchronous=FULL (an fsync per commit) and with NORMAL, and paced (a pause of ~think-ms
  between one writer's corrections, still far busier than people clicking); each writer reads the
  frame's revision, then corrects it, retrying when another writer got there first;
* export time for a store of ``--frames`` frames (16 per video) whose labels are 10 % corrections and
  90 % imported ground truth, plus layouts and one model's predictions: collect_records alone, the
  training JSONL with absolute image paths, the training JSONL copying images, and Label Studio tasks.

Goals (issue): p99 < 20 ms with 8 writers; < 5 s to export 100 k frame labels.
The last line is the headline: correction p99 with N writers back to back at synchronous=FULL. Latency
with FULL is bound by the disk's fsync time, which on a shared machine varies several-fold between runs.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import annotations as store
from annotations.schema import utc_now
from annotations.writes import encode_image, save_media
from core.vocabulary import LABEL_LAYOUTS


def writer(args: tuple) -> tuple[list[float], int, float, float]:
    """One labeler process: ``n`` corrections on a shared frame pool, ``think_s`` apart.

    Returns latencies (ms), stale retries, and the wall-clock start and end of its corrections.
    """
    db_path, media_dir, labeler, frame_ids, n, seed, synchronous, think_s = args
    db = store.open_store(db_path, media_dir, store.StoreConfig(synchronous=synchronous))
    rng = random.Random(seed)
    latencies, stale = [], 0
    began = time.time()
    for i in range(n):
        if think_s:
            time.sleep(rng.uniform(0, 2 * think_s))
        frame_id = rng.choice(frame_ids)
        while True:
            revision = store.frame_revision(db, frame_id)
            start = time.perf_counter()
            try:
                store.correct_label(db, frame_id, "sludge", rng.random() < 0.5, labeler, revision, note=f"#{i}")
            except store.StaleRevisionError:
                stale += 1
                continue
            latencies.append((time.perf_counter() - start) * 1000)
            break
    ended = time.time()
    db.close()
    return latencies, stale, began, ended


def bench_corrections(root: Path, writers: int, corrections: int, synchronous: str, think_s: float = 0.0) -> dict:
    db = store.open_store(root / "store.db", root / "media", store.StoreConfig(synchronous=synchronous))
    rng = np.random.default_rng(0)
    frame_ids = []
    for v in range(2):
        video = store.add_video(db, f"bench-{v}".encode(), f"bench_{v}.mp4")
        frame_ids += store.add_frames(db, video, rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8),
                                      [i / 2 for i in range(20)], list(range(20)))
    for w in range(writers):
        store.add_labeler(db, f"w{w}", "labeler")
    db.close()
    jobs = [(str(root / "store.db"), str(root / "media"), f"w{w}", frame_ids, corrections, w, synchronous, think_s)
            for w in range(writers)]
    with multiprocessing.get_context("spawn").Pool(writers) as pool:
        results = pool.map(writer, jobs)
    wall = max(r[3] for r in results) - min(r[2] for r in results)
    latencies = sorted(x for r in results for x in r[0])
    return {
        "p50": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, int(round(0.99 * (len(latencies) - 1))))],
        "max": latencies[-1],
        "n": len(latencies),
        "stale": sum(r[1] for r in results),
        "wall": wall,
    }


def build_big_store(root: Path, frames: int, per_video: int = 16, images: int = 64):
    """A store with ``frames`` frames, bulk-inserted (images shared round-robin so building stays quick)."""
    db = store.open_store(root / "big.db", root / "media")
    store.add_labeler(db, "ana", "labeler")
    store.register_model(db, "bench@1", "bench", "1")
    rng = np.random.default_rng(1)
    media = [save_media(root / "media", encode_image(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)), ".png")
             for _ in range(images)]
    now = utc_now()
    videos = (frames + per_video - 1) // per_video
    p = rng.random(frames)
    sludge = rng.random(frames) < 0.5
    layouts = rng.integers(0, 4, frames)
    corrected = rng.random(frames) < 0.1
    with store.write_transaction(db):
        db.conn.executemany(
            "INSERT INTO videos (id, name, meta, created_at) VALUES (?, ?, '{}', ?)",
            [(f"{v:064x}", f"clip_{v}.mp4", now) for v in range(videos)])
        frame_rows, pred_rows, events = [], [], []
        for i in range(frames):
            rel, sha = media[i % images]
            frame_id = i + 1
            is_sludge = bool(sludge[i])
            frame_rows.append((frame_id, f"{i // per_video:064x}", i % per_video, (i % per_video) * 0.5, rel, sha,
                               2 if is_sludge else 1, now))
            pred_rows.append((frame_id, "bench@1", float(p[i]), LABEL_LAYOUTS[layouts[i]],
                              '{"vertical": 0.4, "horizontal": 0.3, "pip": 0.2, "other": 0.1}', None, None, now))
            labeler, source, kind = ("ana", "human", "set") if corrected[i] else (store.RAW_GT, "import", "import")
            events.append((frame_id, "sludge", None, "1" if is_sludge else "0", labeler, source, now, "", 1, kind))
            if is_sludge:
                events.append((frame_id, "layout", None, LABEL_LAYOUTS[layouts[i]], labeler, source, now, "", 2, kind))
        db.conn.executemany(
            "INSERT INTO frames (id, video_id, frame_index, time_s, image_path, image_sha256, width, height,"
            " revision, created_at) VALUES (?, ?, ?, ?, ?, ?, 32, 32, ?, ?)", frame_rows)
        db.conn.executemany(
            "INSERT INTO predictions (frame_id, model_id, p_sludge, layout, layout_scores, description, explanation,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", pred_rows)
        db.conn.executemany(
            "INSERT INTO label_events (frame_id, field, old_value, new_value, labeler, source, created_at, note,"
            " revision, kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", events)
    return db, len(events)


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--corrections", type=int, default=200, help="per writer")
    parser.add_argument("--frames", type=int, default=100_000, help="frames in the export store")
    parser.add_argument("--think-ms", type=float, default=20.0,
                        help="mean pause between one writer's corrections in the paced case")
    args = parser.parse_args(argv)

    n = args.writers
    cases = [(f"{n} writers back to back, FULL", n, "FULL", 0.0),
             (f"{n} writers back to back, NORMAL", n, "NORMAL", 0.0),
             (f"{n} writers ~{args.think_ms:g} ms apart, FULL", n, "FULL", args.think_ms / 1000),
             ("1 writer back to back, FULL", 1, "FULL", 0.0)]
    print(f"correct_label latency, {args.corrections} corrections per writer on 40 shared frames")
    print(f"{'case':<38}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'corrections/s':>15}{'stale retries':>15}")
    headline = None
    for name, writers, synchronous, think_s in cases:
        with tempfile.TemporaryDirectory() as tmp:
            r = bench_corrections(Path(tmp), writers, args.corrections, synchronous, think_s)
        print(f"{name:<38}{r['p50']:>9.2f}{r['p99']:>9.2f}{r['max']:>9.2f}{r['n'] / r['wall']:>15.0f}"
              f"{r['stale']:>15}")
        headline = headline if headline is not None else r["p99"]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_s, (db, events) = timed(lambda: build_big_store(root, args.frames))
        print(f"\nexport store: {args.frames} frames, {events} label events, {args.frames} predictions "
              f"(built in {build_s:.1f} s)")
        rows = [
            ("collect_records (read only)", lambda: store.collect_records(db, "bench@1")),
            ("training JSONL, absolute image paths", lambda: store.export_training_set(
                db, root / "out-abs", "bench@1", images="absolute")),
            ("training JSONL, images copied", lambda: store.export_training_set(db, root / "out-copy", "bench@1")),
            ("Label Studio tasks", lambda: store.export_label_studio(db, root / "out-ls", "bench@1")),
        ]
        export_s = None
        for name, fn in rows:
            seconds, _ = timed(fn)
            print(f"{name:<40}{seconds:>8.2f} s")
            if name.startswith("training JSONL, absolute"):
                export_s = seconds
        db.close()
    print(f"export_{args.frames // 1000}k_s: {export_s:.2f}")
    print(f"correction_p99_ms: {headline:.2f}")


if __name__ == "__main__":
    main()
