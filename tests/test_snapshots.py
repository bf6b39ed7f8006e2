"""Snapshots with the SQLite backup API, restore at start, and the schedule, against a local target folder."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from pathlib import Path

import pytest
from store_helpers import build_store, correction_worker

import annotations as store


def events_of(path: Path) -> list[tuple[int, int, int]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT id, frame_id, revision FROM label_events ORDER BY id").fetchall()
    finally:
        conn.close()


def assert_consistent(path: Path) -> int:
    """A snapshot is one point in time: event ids without gaps, each frame's revision = its event count."""
    assert store.check_integrity(path) == "ok"
    events = events_of(path)
    assert [e[0] for e in events] == list(range(1, len(events) + 1))
    conn = sqlite3.connect(path)
    try:
        for frame_id, revision in conn.execute("SELECT id, revision FROM frames"):
            assert revision == sum(1 for e in events if e[1] == frame_id)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one self-contained file
    finally:
        conn.close()
    return len(events)


def test_snapshots_while_another_process_writes(tmp_path):
    db, videos = build_store(tmp_path, videos=2, frames_per_video=5, model_id=None)
    frames = [f for fs in videos.values() for f in fs]
    db.close()
    job = (str(tmp_path / "store.db"), str(tmp_path / "media"), "ana", frames, 300, 1)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        pending = pool.apply_async(correction_worker, (job,))
        counts = []
        while not pending.ready() or not counts:
            snapshot = store.snapshot_store(tmp_path / "store.db", tmp_path / "backups", keep=100)
            counts.append(assert_consistent(snapshot))
            time.sleep(0.005)
        result = pending.get()
    assert result["errors"] == []
    final = store.snapshot_store(tmp_path / "store.db", tmp_path / "backups", media_dir=tmp_path / "media", keep=100)
    total = assert_consistent(final)
    assert total == len(events_of(tmp_path / "store.db")) >= 300
    assert counts == sorted(counts) and any(0 < c < total for c in counts)  # some were taken mid-stream


def test_identical_snapshots_are_kept_once_and_old_ones_pruned(tmp_path):
    db, videos = build_store(tmp_path, videos=1, frames_per_video=3, model_id=None)
    frame = next(iter(videos.values()))[0]
    first = store.snapshot_store(tmp_path / "store.db", tmp_path / "b")
    assert store.snapshot_store(tmp_path / "store.db", tmp_path / "b") == first
    names = [first]
    for revision in range(4):
        store.correct_label(db, frame, "sludge", revision % 2 == 0, "ana", revision)
        names.append(store.snapshot_store(tmp_path / "store.db", tmp_path / "b", keep=3))
    assert len(set(names)) == 5
    assert store.list_snapshots(tmp_path / "b") == names[-3:]
    assert not list((tmp_path / "b" / "snapshots").glob(".tmp-*"))


def test_restore_when_missing_skips_damaged_snapshots(tmp_path):
    db, videos = build_store(tmp_path, videos=1, frames_per_video=3)
    frame = next(iter(videos.values()))[0]
    store.correct_label(db, frame, "description", "kept", "ana", 0)
    good = store.snapshot_store(tmp_path / "store.db", tmp_path / "b", media_dir=tmp_path / "media")
    db.close()
    assert sorted(p.name for p in (tmp_path / "b" / "media").rglob("*.png")) == \
        sorted(p.name for p in (tmp_path / "media").rglob("*.png"))
    damaged = good.with_name(store.SNAPSHOT_PREFIX + "99990101T000000000000Z.db")
    damaged.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4096)
    assert store.restore_latest_snapshot(tmp_path / "b", tmp_path / "store.db") is None  # the store exists
    fresh = tmp_path / "fresh"
    used = store.restore_latest_snapshot(tmp_path / "b", fresh / "store.db", media_dir=fresh / "media")
    assert used == good
    restored = store.open_store(fresh / "store.db", fresh / "media")
    assert store.current_labels(restored, frame_ids=[frame])[0]["description"] == "kept"
    assert store.frame_image_path(restored, frame).is_file()
    assert restored.journal_mode == "wal"
    restored.close()
    (fresh / "store.db").write_bytes(b"junk")
    assert store.restore_latest_snapshot(tmp_path / "b", fresh / "store.db", force=True) == good
    assert store.check_integrity(fresh / "store.db") == "ok"
    assert store.restore_latest_snapshot(tmp_path / "empty", tmp_path / "none" / "store.db") is None


def test_backup_and_restore_through_a_folder_target(tmp_path):
    db, _ = build_store(tmp_path, videos=1, frames_per_video=2)
    db.close()
    target = str(tmp_path / "target")
    snapshot = store.backup_store(tmp_path / "store.db", target, media_dir=tmp_path / "media")
    assert snapshot.parent == tmp_path / "target" / "snapshots"
    assert store.restore_store(target, tmp_path / "store.db") is None
    assert store.restore_store(target, tmp_path / "new" / "store.db", media_dir=tmp_path / "new" / "media") == snapshot
    assert len(list((tmp_path / "new" / "media").rglob("*.png"))) == 2


def test_scheduler_snapshots_and_survives_failures(tmp_path):
    db, videos = build_store(tmp_path, videos=1, frames_per_video=2, model_id=None)
    frame = next(iter(videos.values()))[0]
    scheduler = store.schedule_snapshots(tmp_path / "store.db", str(tmp_path / "sched"), every_s=0.05)
    for revision in range(5):
        store.correct_label(db, frame, "sludge", revision % 2 == 0, "ana", revision)
        time.sleep(0.06)
    scheduler.stop(final_snapshot=True)
    assert scheduler.runs >= 3 and scheduler.last_error is None
    assert len(events_of(scheduler.last_snapshot)) == 5
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "snapshots").write_text("a file where a folder should be")
    failing = store.SnapshotScheduler(tmp_path / "store.db", str(tmp_path / "broken"), every_s=60)
    assert failing.run_once() is None and failing.last_error
    with pytest.raises(store.InvalidLabelError):
        store.SnapshotScheduler(tmp_path / "store.db", str(tmp_path / "x"), every_s=0)
