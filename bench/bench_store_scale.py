"""The store at collection scale: the queue, a correction and an export on 100 k videos x 16 frames.

    python -m bench.bench_store_scale [--videos 100000] [--frames-per-video 16] [--rounds 40]

The store is synthetic and built in bulk with SQL (cached under data/bench/, so a rerun starts at once):
three collections (60 / 30 / 10 % of the videos), one model version's predictions for every frame (P(sludge)
right about 90 % of the time), raw ground truth imported for every frame with 12 % of the sludge labels
flipped, human corrections on 5 % of the frames (mostly those nearest the threshold, as the uncertain queue
hands them out, 1 in 10 answered the other way by a second labeler), 5 000 accepted reviews, and 8 labelers
holding 60 leased frames each.

Measured side by side in one run:

* ``next_frames`` (n = 20) per strategy, over all collections and over one collection (30 % of the frames),
  rounds interleaved; between two queue calls the labeler corrects one frame it was given, so every call
  also reads what changed since the last one; the first call of the process builds the label index and is
  timed apart;
* ``correct_label`` on random frames (the revision read first, as a labeler's screen holds it);
* the training JSONL export (absolute image paths: the lightest export that writes every frame's label).

Targets: queue p95 < 50 ms for every strategy, correction p99 < 20 ms, export of 1.6 M frame labels < 60 s.
The last line is the headline: the worst strategy's queue p95 in ms.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

import annotations as store
from annotations.schema import utc_now
from annotations.writes import encode_image, save_media
from core.vocabulary import LAYOUTS

CACHE = Path("data/bench")
COLLECTIONS = (("crawl-a", 0.6), ("crawl-b", 0.3), ("crawl-c", 0.1))
MODEL = "bench@1"
LABELERS = [f"labeler-{i}" for i in range(8)]
# A format version of the built store: bump it when the builder changes, so a stale cache is rebuilt.
BUILD_VERSION = 1


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def build_scale_store(path: Path, media: Path, videos: int, per_video: int, seed: int = 0) -> dict:
    """Build the synthetic store in bulk (see the module docstring); returns counts."""
    db = store.open_store(path, media)
    for name in LABELERS:
        store.add_labeler(db, name, "labeler")
    store.add_labeler(db, "reviewer", "reviewer")
    store.register_model(db, MODEL, "bench", "1")
    rng = np.random.default_rng(seed)
    images = [save_media(media, encode_image(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)), ".png")
              for _ in range(64)]
    n = videos * per_video
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    created = [(start + timedelta(seconds=v)).isoformat(timespec="microseconds") for v in range(videos)]
    collection = rng.choice(len(COLLECTIONS), size=videos, p=[share for _, share in COLLECTIONS])
    video_ids = [f"{seed:08x}{v:056x}" for v in range(videos)]

    truth = rng.random(n) < 0.45
    margin = np.abs(rng.normal(2.5, 1.5, n))
    right = rng.random(n) < 0.9
    logit = np.where(truth == right, margin, -margin)
    p = np.round(1 / (1 + np.exp(-logit)), 6)
    layout = rng.integers(0, len(LAYOUTS), n)
    raw = truth ^ (rng.random(n) < 0.12)
    # People corrected the frames nearest the threshold (the uncertain queue's), and a few at random.
    near = np.argsort(np.abs(p - 0.5), kind="stable")[: int(0.04 * n)]
    corrected = np.unique(np.concatenate([near, rng.choice(n, int(0.01 * n), replace=False)]))
    second = corrected[rng.random(len(corrected)) < 0.1]

    frame_id = np.arange(1, n + 1)
    # Events: the import (sludge for every frame, a layout for raw sludge frames), then people's corrections.
    ev_frame = [frame_id, frame_id[raw]]
    ev_field = [np.zeros(n, np.int8), np.ones(int(raw.sum()), np.int8)]
    ev_value = [raw.astype(np.int64), layout[raw]]
    ev_labeler = [np.full(n, -1), np.full(int(raw.sum()), -1)]
    who = rng.integers(0, len(LABELERS), len(corrected))
    ev_frame += [frame_id[corrected], frame_id[second]]
    ev_field += [np.zeros(len(corrected), np.int8), np.zeros(len(second), np.int8)]
    ev_value += [truth[corrected].astype(np.int64), (~truth[second]).astype(np.int64)]
    ev_labeler += [who, (who[np.isin(corrected, second)] + 1) % len(LABELERS)]
    ev_frame, ev_field, ev_value, ev_labeler = (np.concatenate(a) for a in (ev_frame, ev_field, ev_value, ev_labeler))
    seen: dict[int, int] = {}
    revisions = []
    for f in ev_frame.tolist():
        seen[f] = seen.get(f, 0) + 1
        revisions.append(seen[f])
    now = utc_now()
    built = time.perf_counter()
    conn = db.conn
    conn.execute("PRAGMA synchronous = OFF")
    with store.write_transaction(db):
        conn.executemany(
            "INSERT INTO videos (id, name, size_bytes, duration_s, fps, width, height, meta, collection, created_at)"
            " VALUES (?, ?, 1000000, 8.0, 30.0, 1080, 1920, '{}', ?, ?)",
            ((video_ids[v], f"clip_{v:06d}.mp4", COLLECTIONS[c][0], created[v])
             for v, c in enumerate(collection.tolist())))
        conn.executemany(
            "INSERT INTO frames (id, video_id, frame_index, time_s, image_path, image_sha256, width, height,"
            " revision, created_at) VALUES (?, ?, ?, ?, ?, ?, 32, 32, ?, ?)",
            ((i + 1, video_ids[i // per_video], (i % per_video) * 15, (i % per_video) * 0.5,
              images[i % len(images)][0], images[i % len(images)][1], seen.get(i + 1, 0), created[i // per_video])
             for i in range(n)))
        conn.executemany(
            "INSERT INTO predictions (frame_id, model_id, p_sludge, layout, layout_scores, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            ((i + 1, MODEL, pi, LAYOUTS[li], '{"horizontal": 0.2, "other": 0.1, "pip": 0.2, "vertical": 0.5}', now)
             for i, (pi, li) in enumerate(zip(p.tolist(), layout.tolist()))))
        names = [store.RAW_GT, *LABELERS]
        conn.executemany(
            "INSERT INTO label_events (frame_id, field, new_value, labeler, source, created_at, note, revision, kind)"
            " VALUES (?, ?, ?, ?, ?, ?, '', ?, ?)",
            ((f, "sludge" if fld == 0 else "layout", str(v) if fld == 0 else LAYOUTS[v], names[lab + 1],
              "import" if lab < 0 else "human", now, rev, "import" if lab < 0 else "set")
             for f, fld, v, lab, rev in zip(ev_frame.tolist(), ev_field.tolist(), ev_value.tolist(),
                                            ev_labeler.tolist(), revisions)))
        human_events = [r[0] for r in conn.execute("SELECT id FROM label_events WHERE source = 'human'")]
        reviewed = random.Random(seed).sample(human_events, min(5000, len(human_events)))
        conn.executemany("INSERT INTO reviews (event_id, reviewer, accepted, note, created_at)"
                         " VALUES (?, 'reviewer', 1, '', ?)", ((e, now) for e in sorted(reviewed)))
        leased = rng.choice(n, 60 * len(LABELERS), replace=False) + 1
        conn.executemany("INSERT INTO leases (frame_id, labeler, expires_at) VALUES (?, ?, ?)",
                         ((int(f), LABELERS[i % len(LABELERS)], time.time() + 10 * 365 * 86400)
                          for i, f in enumerate(leased)))
    conn.execute("ANALYZE")
    conn.execute(f"PRAGMA synchronous = {db.config.synchronous}")
    counts = {"videos": videos, "frames": n, "build_s": time.perf_counter() - built}
    db.close()
    del ev_frame, ev_field, ev_value, ev_labeler, revisions
    return counts


def open_scale_store(videos: int, per_video: int) -> tuple[store.Store, dict]:
    """The cached store for these sizes, built first when missing."""
    CACHE.mkdir(parents=True, exist_ok=True)
    name = f"scale-v{BUILD_VERSION}-{videos}x{per_video}"
    path, media = CACHE / f"{name}.db", CACHE / f"{name}-media"
    info = {"cached": path.exists()}
    if not path.exists():
        partial = CACHE / f"{name}.partial.db"
        for leftover in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
            leftover.unlink(missing_ok=True)
        info.update(build_scale_store(partial, media, videos, per_video))
        os.replace(partial, path)
    db = store.open_store(path, media)
    return db, info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=100_000)
    parser.add_argument("--frames-per-video", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=40, help="queue calls per strategy and scope")
    parser.add_argument("--corrections", type=int, default=500)
    parser.add_argument("--no-export", action="store_true", help="skip the export (the slowest part)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    db, info = open_scale_store(args.videos, args.frames_per_video)
    frames = db.execute("SELECT max(id) FROM frames").fetchone()[0]
    events = db.execute("SELECT max(id) FROM label_events").fetchone()[0]
    how = "cached" if info["cached"] else f"built in {info['build_s']:.0f} s"
    print(f"store: {args.videos} videos, {frames} frames, {events} label events, {frames} predictions "
          f"({how}; ready in {time.perf_counter() - started:.1f} s)")

    # The first call of a process builds the label index; the first of each strategy sorts its order (and
    # label-issue imports cleanlab and scores every label). Timed apart, once.
    firsts = []
    for strategy in store.STRATEGIES:
        t = time.perf_counter()
        store.next_frames(db, LABELERS[0], strategy, n=20, model_id=MODEL)
        firsts.append(f"{strategy} {time.perf_counter() - t:.1f} s")
        store.release_frames(db, LABELERS[0])
    print("first call of each strategy (the first builds the label index): " + ", ".join(firsts))

    scopes = (None, COLLECTIONS[1][0])
    latency: dict[tuple[str, str | None], list[float]] = {(s, c): [] for s in store.STRATEGIES for c in scopes}
    corrections: list[float] = []
    rnd = random.Random(1)
    for r in range(args.rounds):
        for scope in scopes:
            for strategy in store.STRATEGIES:
                who = LABELERS[r % len(LABELERS)]
                t = time.perf_counter()
                got = store.next_frames(db, who, strategy, n=20, model_id=MODEL, collection=scope)
                latency[(strategy, scope)].append((time.perf_counter() - t) * 1000)
                if got:
                    frame = got[0]
                    t = time.perf_counter()
                    store.correct_label(db, frame["frame_id"], "sludge", rnd.random() < 0.5, who, frame["revision"])
                    corrections.append((time.perf_counter() - t) * 1000)
                store.release_frames(db, who)
    print(f"\nnext_frames latency (ms, n = 20, {args.rounds} calls each; a correction between calls)")
    print(f"{'strategy':<19}{'scope':<18}{'p50':>8}{'p95':>8}{'max':>8}")
    worst = 0.0
    for (strategy, scope), values in latency.items():
        p95 = percentile(values, 0.95)
        worst = max(worst, p95)
        print(f"{strategy:<19}{scope or 'all collections':<18}{statistics.median(values):>8.1f}{p95:>8.1f}"
              f"{max(values):>8.1f}")

    ids = list(range(1, frames + 1))
    for i in range(args.corrections):
        frame_id = rnd.choice(ids)
        revision = store.frame_revision(db, frame_id)
        t = time.perf_counter()
        store.correct_label(db, frame_id, "sludge", rnd.random() < 0.5, LABELERS[i % len(LABELERS)], revision)
        corrections.append((time.perf_counter() - t) * 1000)
    correction_p99 = percentile(corrections, 0.99)
    print(f"\ncorrect_label on {frames} frames: p50 {statistics.median(corrections):.2f} ms, p99 "
          f"{correction_p99:.2f} ms, max {max(corrections):.2f} ms ({len(corrections)} corrections, synchronous="
          f"{db.config.synchronous})")

    if not args.no_export:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            manifest = store.export_training_set(db, Path(tmp) / "training", MODEL, images="absolute")
            export_s = time.perf_counter() - t
        print(f"training JSONL export, absolute image paths: {manifest['counts']['records']} frame labels in "
              f"{export_s:.1f} s")
    print(f"\ntargets: queue p95 < 50 ms (worst {worst:.1f}), correction p99 < 20 ms ({correction_p99:.2f})"
          + ("" if args.no_export else f", export < 60 s ({export_s:.1f})"))
    db.close()
    print(f"queue_p95_ms: {worst:.1f}")


if __name__ == "__main__":
    main()
