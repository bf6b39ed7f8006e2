"""The Label tab's session on a real store: keys, auto-advance, conflicts kept for retry, undo, ranges."""

from __future__ import annotations

import pytest
from store_helpers import build_store

import annotations as store
from annotations.labeling import LabelSession


@pytest.fixture
def db(tmp_path):
    db, _ = build_store(tmp_path, videos=2, frames_per_video=4)
    return db


def events(db, frame_id=None):
    sql = "SELECT frame_id, field, new_value, labeler, kind FROM label_events"
    rows = db.execute(sql + (" WHERE frame_id = ?" if frame_id else "") + " ORDER BY id",
                      [frame_id] if frame_id else []).fetchall()
    return [tuple(r) for r in rows]


def test_keys_write_events_and_move_on_as_documented(db):
    s = LabelSession("ana").load(db, "unlabeled", n=8)
    first, second, third = (item["frame_id"] for item in s.items[:3])
    s.label(db, "sludge", False, note="one stream")        # n: writes and moves on
    assert s.current["frame_id"] == second
    s.label(db, "sludge", True)                             # y: waits for a layout
    assert s.current["frame_id"] == second
    s.label(db, "layout", "pip")                            # 3: writes and moves on
    assert s.current["frame_id"] == third
    s.label(db, "layout", "vertical")                       # a layout alone also labels the frame sludge
    assert events(db) == [
        (first, "sludge", "0", "ana", "set"), (second, "sludge", "1", "ana", "set"),
        (second, "layout", "pip", "ana", "set"), (third, "sludge", "1", "ana", "set"),
        (third, "layout", "vertical", "ana", "set"),
    ]
    assert db.execute("SELECT note FROM label_events WHERE id = 1").fetchone()[0] == "one stream"
    assert s.progress() == {"done": 3, "queued": 8, "position": 4}


def test_enter_accepts_the_prediction(db):
    s = LabelSession("ana").load(db, "unlabeled", n=4)
    item = s.current
    sludge = item["p_sludge"] >= 0.5
    s.accept_prediction(db)
    expected = [(item["frame_id"], "sludge", "1" if sludge else "0", "ana", "set")]
    if sludge:
        expected.append((item["frame_id"], "layout", item["model_layout"], "ana", "set"))
    assert events(db, item["frame_id"]) == expected
    assert s.position == 1


def test_a_stale_write_is_refused_kept_and_retried(db):
    s = LabelSession("ana").load(db, "unlabeled", n=4)
    frame_id = s.current["frame_id"]
    store.correct_label(db, frame_id, "sludge", False, "bob", seen_revision=0)   # bob gets there first
    s.label(db, "sludge", True, note="two streams")
    assert s.pending is not None and "revision 1" in s.pending.reason and s.message.startswith("Not saved")
    assert events(db, frame_id) == [(frame_id, "sludge", "0", "bob", "set")]     # nothing of ana's written
    assert s.current["frame_id"] == frame_id and s.current["sludge"] is False   # she sees bob's value
    s.retry_pending(db)
    assert s.pending is None
    assert events(db, frame_id)[-1] == (frame_id, "sludge", "1", "ana", "set")
    assert db.execute("SELECT note FROM label_events ORDER BY id DESC LIMIT 1").fetchone()[0] == "two streams"


def test_a_dropped_conflict_keeps_the_other_labelers_value(db):
    s = LabelSession("ana").load(db, "unlabeled", n=4)
    frame_id = s.current["frame_id"]
    store.correct_label(db, frame_id, "sludge", False, "bob", seen_revision=0)
    s.label(db, "sludge", True)
    s.discard_pending()
    assert s.pending is None and len(events(db, frame_id)) == 1


def test_undo_takes_back_one_key_press_and_never_someone_elses_change(db):
    s = LabelSession("ana").load(db, "unlabeled", n=4)
    frame_id = s.current["frame_id"]
    s.label(db, "layout", "horizontal")          # two events: sludge=yes, layout
    s.undo_last(db)
    assert [e[1:] for e in events(db, frame_id)][-2:] == [("layout", None, "ana", "undo"),
                                                          ("sludge", None, "ana", "undo")]
    assert store.current_labels(db, frame_ids=[frame_id])[0]["sludge"] is None
    assert s.current["frame_id"] == frame_id

    s.label(db, "sludge", False)
    revision = store.frame_revision(db, frame_id)
    store.correct_label(db, frame_id, "sludge", True, "bob", seen_revision=revision)
    s.undo_last(db)
    assert "Not undone" in s.message
    assert store.current_labels(db, frame_ids=[frame_id])[0]["sludge"] is True   # bob's value stands


def test_range_applies_the_last_label_up_to_the_current_frame(db):
    s = LabelSession("ana").load(db, "unlabeled", n=8)
    video_id = s.current["video_id"]
    s.label(db, "sludge", True, advance=False)
    s.move(db, 3)                                 # the same video's last frame (4 frames per video)
    assert s.current["video_id"] == video_id
    s.apply_range(db)
    labels = store.current_labels(db, video_id=video_id)
    assert [row["sludge"] for row in labels] == [True, True, True, True]
    assert s.message.startswith("Saved sludge = yes on 4 frames")


def test_a_range_over_a_changed_frame_is_refused_whole(db):
    s = LabelSession("ana").load(db, "unlabeled", n=8)
    video_id = s.current["video_id"]
    s.label(db, "sludge", True, advance=False)
    middle = s.items[2]["frame_id"]
    s.move(db, 3)
    store.correct_label(db, middle, "sludge", False, "bob", seen_revision=0)
    before = len(events(db))
    s.apply_range(db)
    assert s.pending is not None and s.pending.kind == "range" and len(events(db)) == before
    s.retry_pending(db)
    assert [row["sludge"] for row in store.current_labels(db, video_id=video_id)] == [True] * 4


def test_a_viewer_can_queue_but_not_write(db):
    s = LabelSession("vic").load(db, "uncertain", n=3)
    assert s.items and s.items[0]["lease_expires_at"] is None
    with pytest.raises(store.PermissionDeniedError):
        s.label(db, "sludge", True)
    assert events(db) == []
