"""Builders and child-process writers shared by the annotation-store tests (real SQLite files, real images).

The writers live here, not in a test module, so spawned processes import only this and the store.
"""

from __future__ import annotations

import random
import sqlite3
import sys
from pathlib import Path

import numpy as np

import annotations as store
from core.vocabulary import LABEL_LAYOUTS

LAYOUT_SCORES = ("vertical", "horizontal", "pip", "other")


def make_frames(rng: np.random.Generator, n: int, size: int = 16) -> np.ndarray:
    """n distinct small RGB frames."""
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def build_store(root: Path, videos: int = 3, frames_per_video: int = 4, model_id: str | None = "tiny@1",
                seed: int = 0, labelers: dict[str, str] | None = None):
    """A store under ``root`` with videos, frames, labelers and (optionally) one model's random predictions.

    Returns (db, {video_id: [frame_id, ...]}).
    """
    rng = np.random.default_rng(seed)
    db = store.open_store(root / "store.db", root / "media")
    for name, role in (labelers or {"ana": "labeler", "bob": "labeler", "rita": "reviewer",
                                    "vic": "viewer"}).items():
        store.add_labeler(db, name, role)
    layout = {}
    for v in range(videos):
        video_id = store.add_video(db, f"video-{seed}-{v}".encode(), f"clip_{v}.mp4", {"fps": 30.0, "duration_s": 4.0})
        indices = [15 * i for i in range(frames_per_video)]
        layout[video_id] = store.add_frames(db, video_id, make_frames(rng, frames_per_video),
                                            [i / 30 for i in indices], indices)
    if model_id:
        store.register_model(db, model_id, "models/tiny-vqwen-qformer", None)
        ids = [f for fs in layout.values() for f in fs]
        scores = [dict(zip(LAYOUT_SCORES, rng.dirichlet(np.ones(4)).round(6))) for _ in ids]
        store.record_predictions(db, model_id, ids, rng.random(len(ids)).round(6).tolist(), scores,
                                 descriptions=[f"frame {i}" for i in ids])
    return db, layout


def correction_worker(args: tuple) -> dict:
    """One labeler's process: ``n`` corrections on a shared pool of frames, retrying on stale revisions.

    Also sends a deliberately stale write every 20 corrections, which must be refused. Returns the
    acknowledged events, counts, per-correction latencies (ms) and any unexpected error messages.
    """
    import time

    db_path, media_dir, labeler, frame_ids, n, seed = args
    db = store.open_store(db_path, media_dir)
    rng = random.Random(seed)
    acks, latencies, errors = [], [], []
    stale_retries = stale_refused = stale_accepted = 0
    for i in range(n):
        frame_id = rng.choice(frame_ids)
        value = rng.random() < 0.5
        note = f"{labeler} #{i}"
        while True:
            revision = store.frame_revision(db, frame_id)
            start = time.perf_counter()
            try:
                event = store.correct_label(db, frame_id, "sludge", value, labeler, revision, note=note)
            except store.StaleRevisionError:
                stale_retries += 1
                continue
            except sqlite3.Error as error:
                errors.append(f"{type(error).__name__}: {error}")
                break
            latencies.append((time.perf_counter() - start) * 1000)
            acks.append((event.id, frame_id, event.revision, int(value), note))
            break
        if i % 20 == 0 and acks:
            try:
                store.correct_label(db, acks[-1][1], "sludge", True, labeler, max(acks[-1][2] - 1, 0), note="stale")
                stale_accepted += 1
            except store.StaleRevisionError:
                stale_refused += 1
            except sqlite3.Error as error:
                errors.append(f"{type(error).__name__}: {error}")
    db.close()
    return {"acks": acks, "latencies": latencies, "errors": errors, "stale_retries": stale_retries,
            "stale_refused": stale_refused, "stale_accepted": stale_accepted}


def kill_target_writer(db_path: str, media_dir: str, labeler: str, video_id: str, seed: int) -> None:
    """Write corrections and ranges forever, printing "ACK <event id> <frame id> <revision> <batch size>" after
    each commit; the test kills it with SIGKILL at a random moment."""
    db = store.open_store(db_path, media_dir)
    rng = random.Random(seed)
    frames = [(f["frame_id"], f["frame_index"]) for f in store.current_labels(db, video_id=video_id)]
    out = sys.stdout
    while True:
        if rng.random() < 0.3:
            first = rng.randrange(len(frames) - 8)
            lo, hi = frames[first][1], frames[first + 7][1]
            seen = {fid: store.frame_revision(db, fid) for fid, idx in frames if lo <= idx <= hi}
            events = store.apply_range(db, video_id, lo, hi, "layout", rng.choice(LABEL_LAYOUTS), labeler, seen)
            for event in events:
                out.write(f"ACK {event.id} {event.frame_id} {event.revision} {len(events)}\n")
        else:
            frame_id = rng.choice(frames)[0]
            event = store.correct_label(db, frame_id, "sludge", rng.random() < 0.5, labeler,
                                        store.frame_revision(db, frame_id), note=f"seed {seed}")
            out.write(f"ACK {event.id} {event.frame_id} {event.revision} 1\n")
        out.flush()


if __name__ == "__main__":
    kill_target_writer(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
