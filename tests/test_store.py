"""The annotation store on real SQLite files: schema, writes, revisions, undo, review, concurrency, crashes."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from store_helpers import build_store, correction_worker, make_frames

import annotations as store
from annotations.schema import MIGRATIONS, resolve_media_path

HOSTILE = [
    "<script>alert('x')</script>",
    "<img src=x onerror=alert(1)>",
    "'; DROP TABLE label_events; --",
    "\" OR 1=1 --",
    "Robert'); DELETE FROM frames WHERE ('1'='1",
    "%s %d {0} {{}} $(rm -rf /) `id`",
    "../../../../etc/passwd",
    "..\\..\\windows\\system32",
    "line one\nline two\r\n\ttabbed \\ backslash",
    "ünïcödé 🧪 日本語 \u202e reversed",
]


@pytest.fixture
def small(tmp_path):
    db, videos = build_store(tmp_path)
    yield db, videos
    db.close()


def first_frame(videos):
    return next(iter(videos.values()))[0]


# ---------------------------------------------------------------- schema


def test_open_store_applies_migrations_and_pragmas(tmp_path):
    db = store.open_store(tmp_path / "s.db", tmp_path / "media")
    assert db.journal_mode == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] == store.StoreConfig().busy_timeout_ms
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert {"videos", "frames", "models", "predictions", "labelers", "label_events", "reviews", "leases",
            "exports"} <= set(db.table_names())
    assert "current_labels" in db.view_names()
    assert [m.name for m in MIGRATIONS.applied(db)] == ["m001_initial", "m002_collections",
                                                        "m003_collection_scale_indexes"]
    assert MIGRATIONS.pending(db) == []
    assert db["labelers"].get(store.RAW_GT)["kind"] == "import"
    db.close()
    again = store.open_store(tmp_path / "s.db", tmp_path / "media")
    assert again.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0] == 3
    assert again["labelers"].count == 1
    again.close()


def test_a_store_from_before_collections_keeps_its_videos_as_uploads(tmp_path):
    import sqlite_utils
    from sqlite_utils import Migrations

    from annotations.schema import m001_initial

    first_only = Migrations("sludgelens")
    first_only()(m001_initial)
    old = sqlite_utils.Database(tmp_path / "old.db")
    first_only.apply(old)
    old["videos"].insert({"id": "v1", "name": "a.mp4", "created_at": "2026-01-01T00:00:00Z"})
    old.close()
    db = store.open_store(tmp_path / "old.db", tmp_path / "media")
    assert [v["collection"] for v in store.list_videos(db)] == [store.UPLOADS]
    video = store.add_video(db, b"new bytes", "b.mp4", collection="dataset-1")
    assert store.list_videos(db, "dataset-1")[0]["id"] == video
    assert store.add_video(db, b"new bytes", "b.mp4", collection="other") == video  # stays where it was first added
    assert [(c["collection"], c["videos"]) for c in store.list_collections(db)] == [("dataset-1", 1), ("uploads", 1)]


def test_label_events_are_append_only(small):
    db, videos = small
    store.correct_label(db, first_frame(videos), "sludge", True, "ana", 0)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE label_events SET new_value = '0'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM label_events")
    assert db["label_events"].count == 1


def test_foreign_keys_are_enforced(small):
    db, _ = small
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO frames (video_id, frame_index, time_s, image_path, image_sha256, width, height,"
                   " created_at) VALUES ('nope', 0, 0, 'x', 'x', 1, 1, 'now')")


# ---------------------------------------------------------------- videos, frames, models, predictions


def test_add_video_dedupes_by_sha256(tmp_path):
    db = store.open_store(tmp_path / "s.db", tmp_path / "media")
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00fake video bytes" * 1000)
    a = store.add_video(db, clip, "clip.mp4", {"fps": 30, "extra": [1, 2]})
    b = store.add_video(db, clip.read_bytes(), "renamed.mp4")
    assert a == b and len(a) == 64
    assert db["videos"].count == 1
    row = db["videos"].get(a)
    assert row["name"] == "clip.mp4" and row["fps"] == 30.0 and row["size_bytes"] == clip.stat().st_size


def test_add_frames_content_addressed_and_idempotent(tmp_path):
    db = store.open_store(tmp_path / "s.db", tmp_path / "media")
    video = store.add_video(db, b"v", "v.mp4")
    frames = make_frames(np.random.default_rng(1), 3)
    frames[2] = frames[0]  # identical pictures share one file
    ids = store.add_frames(db, video, frames, [0.0, 0.5, 1.0], [0, 15, 30])
    assert len(set(ids)) == 3
    files = sorted(p for p in (tmp_path / "media").rglob("*") if p.is_file())
    assert len(files) == 2
    for frame_id, frame in zip(ids, frames):
        path = store.frame_image_path(db, frame_id)
        assert path.parent.parent == (tmp_path / "media").resolve()
        from PIL import Image
        assert np.array_equal(np.asarray(Image.open(path)), frame)  # PNG is lossless
        import hashlib
        assert path.stem == hashlib.sha256(path.read_bytes()).hexdigest()
    assert store.add_frames(db, video, frames, [0.0, 0.5, 1.0], [0, 15, 30]) == ids
    with pytest.raises(store.InvalidLabelError, match="uint8"):
        store.add_frames(db, video, frames.astype(np.float32), [0, 1, 2], [0, 1, 2])
    with pytest.raises(store.NotFoundError):
        store.add_frames(db, "missing", frames, [0, 1, 2], [0, 1, 2])


def add_two_frame_clip(db, source: bytes, **given) -> list[int]:
    """A two-frame clip stored with one model's predictions, its frames given as ``saved`` or ``images``."""
    from annotations.writes import add_analyzed_video

    scores = [{"vertical": 1.0, "horizontal": 0.0, "pip": 0.0, "other": 0.0}] * 2
    return add_analyzed_video(db, source, f"{source.decode()}.mp4", {"fps": 30.0}, None, [0.0, 0.5], [0, 15],
                              ("tiny@1", "models/tiny", "1"), [0.9, 0.2], scores, **given)[1]


def read_stored_pixels(db, frame_id: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(store.frame_image_path(db, frame_id)))


def test_images_saved_ahead_are_stored_by_reference_and_a_missing_one_is_refused(tmp_path):
    from annotations.writes import save_frame_image

    db = store.open_store(tmp_path / "s.db", tmp_path / "media")
    frames = make_frames(np.random.default_rng(2), 2)
    saved = [save_frame_image(tmp_path / "media", frame) for frame in frames]  # as a decode worker does
    ids = add_two_frame_clip(db, b"clip", saved=saved)
    for frame_id, frame in zip(ids, frames):
        assert np.array_equal(read_stored_pixels(db, frame_id), frame)
    assert db["frames"].get(ids[0])["width"] == frames.shape[2]

    gone = saved[0]._replace(path="00/" + "0" * 64 + ".png")
    before = {t: db[t].count for t in ("videos", "frames", "predictions")}
    with pytest.raises(store.InvalidLabelError, match="not in this store's media folder"):
        add_two_frame_clip(db, b"other clip", saved=[gone, saved[1]])
    assert {t: db[t].count for t in before} == before


def test_images_encoded_elsewhere_are_stored_with_their_header_sizes_and_bad_bytes_are_refused(tmp_path):
    from annotations.writes import encode_image

    db = store.open_store(tmp_path / "s.db", tmp_path / "media")
    frames = np.random.default_rng(3).integers(0, 256, (2, 40, 56, 3), dtype=np.uint8)  # width and height differ
    images = [encode_image(frame) for frame in frames]  # as a Ray shard holds them
    ids = add_two_frame_clip(db, b"clip", images=images)
    for frame_id, frame in zip(ids, frames):
        assert np.array_equal(read_stored_pixels(db, frame_id), frame)
        assert (db["frames"].get(frame_id)["width"], db["frames"].get(frame_id)["height"]) == (56, 40)

    before = {t: db[t].count for t in ("videos", "frames", "predictions")}
    for bad, message in (([images[0], b"not an image"], "could not be read"),
                         ([images[0], encode_image(frames[0])[:20]], "could not be read"),
                         ([images[0]], "encoded images")):
        with pytest.raises(store.InvalidLabelError, match=message):
            add_two_frame_clip(db, b"other clip", images=bad)
    assert {t: db[t].count for t in before} == before


def test_register_model_and_record_predictions(small):
    db, videos = small
    ids = first = next(iter(videos.values()))
    assert store.register_model(db, "tiny@1", "models/tiny-vqwen-qformer", None) == "tiny@1"  # idempotent
    with pytest.raises(store.InvalidLabelError, match="already registered"):
        store.register_model(db, "tiny@1", "elsewhere", "2")
    store.record_predictions(db, "tiny@1", ids[:1], [0.25], [{"pip": 0.9, "other": 0.1}], ["two streams"])
    row = db.execute("SELECT p_sludge, layout, description FROM predictions WHERE frame_id = ? AND model_id = ?",
                     [first[0], "tiny@1"]).fetchone()
    assert row == (0.25, "pip", "two streams")
    before = db["predictions"].count
    with pytest.raises(store.InvalidLabelError):
        store.record_predictions(db, "tiny@1", ids[:1], [1.5], [{}])
    with pytest.raises(store.NotFoundError):
        store.record_predictions(db, "nope@0", ids[:1], [0.5], [{}])
    with pytest.raises(store.NotFoundError):
        store.record_predictions(db, "tiny@1", [ids[0], 999_999], [0.5, 0.5], [{}, {}])
    assert db["predictions"].count == before


# ---------------------------------------------------------------- corrections and revisions


def test_correct_label_bumps_revision_and_records_event(small):
    db, videos = small
    frame = first_frame(videos)
    assert store.frame_revision(db, frame) == 0
    e1 = store.correct_label(db, frame, "sludge", True, "ana", 0, note="split", model_seen="tiny@1")
    e2 = store.correct_label(db, frame, "layout", "vertical", "bob", 1)
    e3 = store.correct_label(db, frame, "sludge", False, "bob", 2)
    assert (e1.revision, e2.revision, e3.revision) == (1, 2, 3)
    assert (e3.old_value, e3.new_value, e1.model_seen) == (True, False, "tiny@1")
    assert store.frame_revision(db, frame) == 3
    row = store.current_labels(db, frame_ids=[frame])[0]
    assert (row["sludge"], row["layout"], row["sludge_labeler"], row["sludge_source"]) == (False, "vertical", "bob",
                                                                                           "human")
    assert [e.id for e in store.label_history(db, frame)] == [e1.id, e2.id, e3.id]


@pytest.mark.parametrize("labeler, field, value, error", [
    ("nobody", "sludge", True, store.PermissionDeniedError),
    ("vic", "sludge", True, store.PermissionDeniedError),
    (store.RAW_GT, "sludge", True, store.PermissionDeniedError),
    ("ana", "colour", "red", store.InvalidLabelError),
    ("ana", "sludge", "maybe", store.InvalidLabelError),
    ("ana", "layout", "diagonal", store.InvalidLabelError),
    ("ana", "layout", None, store.InvalidLabelError),
    ("ana", "description", 42, store.InvalidLabelError),
    ("ana", "description", "x" * 30_000, store.InvalidLabelError),
])
def test_refused_writes_change_nothing(small, labeler, field, value, error):
    db, videos = small
    frame = first_frame(videos)
    store.correct_label(db, frame, "sludge", True, "ana", 0)
    before = (db["label_events"].count, store.frame_revision(db, frame), store.current_labels(db))
    with pytest.raises(error):
        store.correct_label(db, frame, field, value, labeler, 1)
    assert (db["label_events"].count, store.frame_revision(db, frame), store.current_labels(db)) == before


def test_stale_write_is_refused_with_a_clear_message(small):
    db, videos = small
    frame = first_frame(videos)
    store.correct_label(db, frame, "sludge", True, "ana", 0)
    with pytest.raises(store.StaleRevisionError) as refused:
        store.correct_label(db, frame, "sludge", False, "bob", 0)
    message = str(refused.value)
    assert "revision 1" in message and "revision 0" in message and "Nothing was written" in message
    assert store.current_labels(db, frame_ids=[frame])[0]["sludge"] is True
    with pytest.raises(store.InvalidLabelError):
        store.correct_label(db, frame, "sludge", False, "bob", -1)
    with pytest.raises(store.NotFoundError):
        store.correct_label(db, 123_456, "sludge", False, "bob", 0)


def test_apply_range_is_all_or_nothing(small):
    db, videos = small
    video, frames = next(iter(videos.items()))
    store.correct_label(db, frames[1], "sludge", False, "bob", 0)
    seen = {f: store.frame_revision(db, f) for f in frames}
    events = store.apply_range(db, video, 0, 30, "sludge", True, "ana", seen, note="whole intro")
    assert [e.frame_id for e in events] == frames[:3]
    assert len({e.batch for e in events}) == 1 and all(e.kind == "range" for e in events)
    assert [r["sludge"] for r in store.current_labels(db, video_id=video)] == [True, True, True, None]
    count = db["label_events"].count
    with pytest.raises(store.StaleRevisionError, match="3 of 4 frames"):
        store.apply_range(db, video, 0, 45, "layout", "pip", "ana", 0)
    with pytest.raises(store.InvalidLabelError, match="no entry"):
        store.apply_range(db, video, 0, 45, "layout", "pip", "ana", {frames[0]: 1})
    with pytest.raises(store.NotFoundError):
        store.apply_range(db, video, 500, 600, "layout", "pip", "ana", 0)
    assert db["label_events"].count == count
    events = store.apply_range(db, video, 45, 45, "layout", "pip", "ana", 0)
    assert [e.frame_id for e in events] == [frames[3]]


def test_undo_walks_back_and_keeps_history(small):
    db, videos = small
    frame = first_frame(videos)
    store.correct_label(db, frame, "layout", "vertical", "ana", 0)
    store.correct_label(db, frame, "layout", "pip", "bob", 1)
    u1 = store.undo(db, frame, "layout", "ana", 2, note="misclick")
    assert (u1.kind, u1.old_value, u1.new_value, u1.revision) == ("undo", "pip", "vertical", 3)
    assert store.current_labels(db, frame_ids=[frame])[0]["layout"] == "vertical"
    u2 = store.undo(db, frame, "layout", "ana", 3)
    assert u2.new_value is None
    assert store.current_labels(db, frame_ids=[frame])[0]["layout"] is None
    with pytest.raises(store.InvalidLabelError, match="no layout change left"):
        store.undo(db, frame, "layout", "ana", 4)
    with pytest.raises(store.StaleRevisionError):
        store.undo(db, frame, "sludge", "ana", 0)
    assert [e.kind for e in store.label_history(db, frame)] == ["set", "set", "undo", "undo"]
    store.correct_label(db, frame, "layout", "other", "ana", 4)
    assert store.undo(db, frame, "layout", "ana", 5).new_value is None


def test_review_accept_and_reject(small):
    db, videos = small
    frame = first_frame(videos)
    e1 = store.correct_label(db, frame, "sludge", True, "ana", 0)
    e2 = store.correct_label(db, frame, "sludge", False, "bob", 1)
    with pytest.raises(store.PermissionDeniedError):
        store.review_event(db, e2.id, "ana", accept=True)
    assert [e.id for e in store.pending_reviews(db)] == [e1.id, e2.id]
    accepted = store.review_event(db, e1.id, "rita", accept=True, note="fine")
    assert accepted.accepted and accepted.revert is None
    superseded = store.review_event(db, e1.id, "rita", accept=False)
    assert superseded.revert is None  # e1 no longer holds the value: recorded only
    rejected = store.review_event(db, e2.id, "rita", accept=False, note="it is a split")
    assert rejected.revert.kind == "reject" and rejected.revert.new_value is True
    assert rejected.revert.revision == 3 and store.frame_revision(db, frame) == 3
    assert store.current_labels(db, frame_ids=[frame])[0]["sludge"] is True
    assert db["reviews"].count == 3 and store.pending_reviews(db) == []
    with pytest.raises(store.NotFoundError):
        store.review_event(db, 99_999, "rita", accept=True)


def test_imported_truth_never_hides_a_correction(small, tmp_path):
    db, videos = small
    video, frames = next(iter(videos.items()))
    store.correct_label(db, frames[0], "sludge", False, "ana", 0)
    truth = tmp_path / "truth.csv"
    truth.write_text(f"video,sludge,layout\n{video},1,vertical\n")
    report = store.import_ground_truth(db, truth)
    assert report["events"] == 8 and report["shadowed"] == 1
    rows = {r["frame_id"]: r for r in store.current_labels(db, video_id=video)}
    assert (rows[frames[0]]["sludge"], rows[frames[0]]["sludge_source"]) == (False, "human")
    assert (rows[frames[1]]["sludge"], rows[frames[1]]["sludge_source"]) == (True, "import")
    assert rows[frames[0]]["layout"] == "vertical"
    # Undoing the only human change lets the imported value show again.
    store.undo(db, frames[0], "sludge", "ana", store.frame_revision(db, frames[0]))
    row = store.current_labels(db, frame_ids=[frames[0]])[0]
    assert (row["sludge"], row["sludge_labeler"]) == (True, store.RAW_GT)


# ---------------------------------------------------------------- hostile text and paths


def test_hostile_strings_round_trip_verbatim(tmp_path):
    db = store.open_store(tmp_path / "s.db", tmp_path / "media")
    frames = make_frames(np.random.default_rng(3), len(HOSTILE))
    for i, text in enumerate(HOSTILE):
        store.add_labeler(db, text, "reviewer")
        video = store.add_video(db, f"v{i}".encode(), text, {"note": text})
        (frame,) = store.add_frames(db, video, frames[i:i + 1], [0.0], [0])
        store.register_model(db, f"{text}@{i}", text, text)
        event = store.correct_label(db, frame, "description", text, text, 0, note=text, model_seen=text)
        reviewed = store.review_event(db, event.id, text, accept=True, note=text)
        assert (event.note, event.new_value, event.labeler, event.model_seen, reviewed.note) == (text,) * 5
        assert db["videos"].get(video)["name"] == text
        assert store.current_labels(db, frame_ids=[frame])[0]["description"] == text
        assert store.label_history(db, frame)[0].note == text
    assert set(db.table_names()) >= {"label_events", "frames", "videos"}
    assert db["label_events"].count == len(HOSTILE)
    assert {r["name"] for r in db["labelers"].rows} == set(HOSTILE) | {store.RAW_GT}
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_path_like_names_cannot_escape_the_media_folder(tmp_path):
    media = tmp_path / "inner" / "media"
    db = store.open_store(tmp_path / "inner" / "s.db", media)
    for i, name in enumerate(["../../../escape.mp4", "/etc/passwd", "..\\..\\x", "a/../../b"]):
        video = store.add_video(db, f"bytes{i}".encode(), name)
        store.add_frames(db, video, make_frames(np.random.default_rng(i), 2), [0, 1], [0, 1])
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(tmp_path / "inner")]
    assert outside == []
    assert all(p.is_relative_to(media) for p in media.rglob("*") if p.is_file())
    for bad in ("../escape.png", "/etc/passwd", "ab/../../x.png", ""):
        with pytest.raises(store.InvalidLabelError, match="outside"):
            resolve_media_path(media, bad)
    frame = db.execute("SELECT id FROM frames LIMIT 1").fetchone()[0]
    store.add_labeler(db, "ana")
    store.correct_label(db, frame, "sludge", True, "ana", 0)
    db.conn.execute("UPDATE frames SET image_path = '../../../../etc/passwd' WHERE id = ?", [frame])
    db.conn.commit()
    with pytest.raises(store.InvalidLabelError, match="outside"):
        store.frame_image_path(db, frame)
    with pytest.raises(store.InvalidLabelError, match="outside"):
        store.export_training_set(db, tmp_path / "export")
    assert not (tmp_path / "export").exists()


# ---------------------------------------------------------------- concurrency and crashes


def test_eight_processes_two_hundred_corrections_each(tmp_path):
    db, videos = build_store(tmp_path, videos=2, frames_per_video=10, model_id=None,
                             labelers={f"w{i}": "labeler" for i in range(8)})
    frame_ids = [f for fs in videos.values() for f in fs]
    db.close()
    jobs = [(str(tmp_path / "store.db"), str(tmp_path / "media"), f"w{i}", frame_ids, 200, i) for i in range(8)]
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        results = pool.map(correction_worker, jobs)
    errors = [e for r in results for e in r["errors"]]
    assert errors == []  # in particular no "database is locked"
    assert sum(r["stale_accepted"] for r in results) == 0
    assert sum(r["stale_refused"] for r in results) == 8 * 10
    acks = [a for r in results for a in r["acks"]]
    assert len(acks) == 1600
    db = store.open_store(tmp_path / "store.db", tmp_path / "media")
    rows = {r["id"]: r for r in db.query("SELECT * FROM label_events")}
    assert len({a[0] for a in acks}) == 1600
    assert set(rows) == {a[0] for a in acks}  # every acknowledged event once, nothing unacknowledged
    for event_id, frame_id, revision, value, note in acks:
        row = rows[event_id]
        assert (row["frame_id"], row["revision"], row["new_value"], row["note"]) == (frame_id, revision, str(value),
                                                                                     note)
    for frame_id in frame_ids:
        revisions = [r["revision"] for r in rows.values() if r["frame_id"] == frame_id]
        assert sorted(revisions) == list(range(1, len(revisions) + 1))  # no lost update, no double revision
        assert store.frame_revision(db, frame_id) == len(revisions)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_writer_killed_with_sigkill_loses_no_acknowledged_write(tmp_path):
    db, videos = build_store(tmp_path, videos=1, frames_per_video=40, model_id=None)
    video = next(iter(videos))
    db.close()
    helper = Path(__file__).with_name("store_helpers.py")
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), str(helper.parent)])}
    acked: dict[int, tuple[int, int, int]] = {}
    rng = random.Random(7)
    for kill in range(10):
        child = subprocess.Popen([sys.executable, str(helper), str(tmp_path / "store.db"), str(tmp_path / "media"),
                                  "ana", video, str(kill)], stdout=subprocess.PIPE, text=True, env=env)
        wanted, seen = rng.randint(5, 60), 0
        while seen < wanted:
            line = child.stdout.readline()
            assert line, f"writer exited early with {child.wait()}"
            _, event_id, frame_id, revision, size = line.split()
            acked[int(event_id)] = (int(frame_id), int(revision), int(size))
            seen += 1
        time.sleep(rng.random() * 0.02)
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        assert child.returncode == -signal.SIGKILL
    assert store.check_integrity(tmp_path / "store.db") == "ok"
    db = store.open_store(tmp_path / "store.db", tmp_path / "media")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = {r["id"]: r for r in db.query("SELECT id, frame_id, revision, batch FROM label_events")}
    for event_id, (frame_id, revision, _) in acked.items():
        assert (rows[event_id]["frame_id"], rows[event_id]["revision"]) == (frame_id, revision)
    for batch, count in db.execute("SELECT batch, count(*) FROM label_events WHERE batch IS NOT NULL GROUP BY batch"):
        assert count == 8, f"range {batch} was half written"
    for (frame_id,) in db.execute("SELECT id FROM frames"):
        revisions = sorted(r["revision"] for r in rows.values() if r["frame_id"] == frame_id)
        assert revisions == list(range(1, len(revisions) + 1))
        assert store.frame_revision(db, frame_id) == len(revisions)
    assert len(acked) >= 50
