"""The Label tab's session on a real store: keys, auto-advance, conflicts kept for retry, undo, ranges."""

from __future__ import annotations

import numpy as np
import pytest
from store_helpers import build_store, make_frames

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


def test_undo_walks_back_your_own_writes_across_frames_in_order(db):
    s = LabelSession("ana").load(db, "unlabeled", n=8)
    first, second = s.items[0]["frame_id"], s.items[1]["frame_id"]
    s.press(db, "y", on_screen=first)                     # sludge on the first frame, stays
    s.press(db, "3", on_screen=first)                     # its layout, moves on
    s.press(db, "n", on_screen=second)                    # the second frame, moves on
    assert s.progress()["done"] == 2
    s.press(db, "u", on_screen=s.current["frame_id"])     # takes back the second frame's label and shows it
    assert s.current["frame_id"] == second and s.message.startswith("Undone on frame")
    assert s.progress()["done"] == 1
    # Two undos in a row on the same frame: the first one's own event never makes the second stale.
    s.press(db, "u", on_screen=second)
    assert s.current["frame_id"] == first and "layout back to" in s.message
    s.press(db, "u", on_screen=first)
    assert s.message.startswith("Undone on frame") and "sludge back to" in s.message
    assert s.progress()["done"] == 0
    labels = {r["frame_id"]: (r["sludge"], r["layout"]) for r in store.current_labels(db)}
    assert labels[first] == (None, None) and labels[second] == (None, None)
    assert [e[1:] for e in events(db)] == [
        ("sludge", "1", "ana", "set"), ("layout", "pip", "ana", "set"), ("sludge", "0", "ana", "set"),
        ("sludge", None, "ana", "undo"), ("layout", None, "ana", "undo"), ("sludge", None, "ana", "undo")]
    s.press(db, "u", on_screen=first)
    assert s.message == "Nothing of yours to undo in this session." and len(events(db)) == 6


def test_undo_after_someone_else_changed_the_frame_asks_once_more_and_never_takes_their_change(db):
    s = LabelSession("ana").load(db, "unlabeled", n=8)
    frame_id = s.current["frame_id"]
    s.press(db, "2", on_screen=frame_id)                  # sludge yes + horizontal, moves on
    store.correct_label(db, frame_id, "description", "two games", "bob",
                        seen_revision=store.frame_revision(db, frame_id))
    s.press(db, "u", on_screen=s.current["frame_id"])
    assert s.message.startswith("Not undone yet: bob changed frame") and s.current["frame_id"] == frame_id
    assert store.current_labels(db, frame_ids=[frame_id])[0]["layout"] == "horizontal"
    s.press(db, "u", on_screen=frame_id)                  # seen it: take back ana's label, bob's note stays
    row = store.current_labels(db, frame_ids=[frame_id])[0]
    assert (row["sludge"], row["layout"], row["description"]) == (None, None, "two games")


def test_a_key_for_a_frame_no_longer_on_screen_is_ignored(db):
    s = LabelSession("ana").load(db, "unlabeled", n=8)
    first = s.current["frame_id"]
    # Three quick Enters all pressed while the first frame was on screen: only the first one labels.
    for _ in range(3):
        s.press(db, "Enter", on_screen=first)
    assert {e[0] for e in events(db)} == {first}
    assert s.message.startswith("Ignored 'Enter'") and s.current["frame_id"] == s.items[1]["frame_id"]


def test_the_queue_continues_by_itself_and_never_writes_a_frame_twice(db):
    s = LabelSession("ana").load(db, "unlabeled", n=3)    # 8 frames in the store, fetched 3 at a time
    labelled = []
    while s.current is not None:
        labelled.append(s.current["frame_id"])
        s.press(db, "n", on_screen=s.current["frame_id"])
    assert len(labelled) == 8 == len(set(labelled)) and s.message.startswith("No more frames")
    s.press(db, "n", on_screen=None)                       # n at the end writes nothing
    assert len(events(db)) == 8 and s.progress()["done"] == 8
    s.press(db, "ArrowLeft", on_screen=None)               # back to the last frame
    assert s.current["frame_id"] == labelled[-1]
    s.press(db, "ArrowRight", on_screen=labelled[-1])      # past the end again
    assert s.current is None
    # A video analyzed meanwhile: → fetches its first frame.
    video_id = store.add_video(db, b"a later clip", "later.mp4", {"fps": 30.0})
    (later,) = store.add_frames(db, video_id, make_frames(np.random.default_rng(9), 1), [0.0], [0])
    s.press(db, "ArrowRight", on_screen=None)
    assert s.current["frame_id"] == later and s.video_name == "later.mp4"


def test_range_applies_the_whole_label(db):
    s = LabelSession("ana").load(db, "unlabeled", n=8)
    video_id = s.current["video_id"]
    s.press(db, "3", on_screen=s.current["frame_id"])     # pip (and sludge) on the first frame, moves on
    s.move(db, 2)
    s.press(db, "r", on_screen=s.current["frame_id"])
    assert s.message.startswith("Saved sludge = yes, layout = pip on 4 frames")
    labels = [(r["sludge"], r["layout"]) for r in store.current_labels(db, video_id=video_id)]
    assert labels == [(True, "pip")] * 4
    s.press(db, "u", on_screen=s.current["frame_id"])     # one undo takes back the whole range
    labels = [(r["sludge"], r["layout"]) for r in store.current_labels(db, video_id=video_id)]
    assert labels == [(True, "pip"), (None, None), (None, None), (None, None)]


def test_the_neighbour_strip_shows_the_videos_frames_and_labels(db):
    s = LabelSession("ana").load(db, "unlabeled", n=8)
    s.press(db, "n", on_screen=s.current["frame_id"])
    strip = s.neighbours()
    assert [f["frame_index"] for f in strip] == [0, 15, 30, 45]
    assert [f["current"] for f in strip] == [False, True, False, False]
    assert strip[0]["sludge"] is False and strip[1]["sludge"] is None
    assert s.video_name == "clip_0.mp4"


def test_the_strip_moves_in_steps_around_the_current_frame(tmp_path):
    db, _ = build_store(tmp_path, videos=1, frames_per_video=30)
    s = LabelSession("ana").load(db, "unlabeled", n=30)
    windows = []
    for _ in range(30):
        strip = [f["frame_index"] // 15 for f in s.neighbours()]
        current = next(i for i, f in enumerate(s.neighbours()) if f["current"])
        windows.append(strip[0])
        assert len(strip) == 9 and (current >= 2 or strip[0] == 0) and (len(strip) - current > 2 or strip[-1] == 29)
        s.move(db, 1)
    assert len(set(windows)) == 6  # the window moved 5 times in 30 frames


@pytest.mark.parametrize("per_video", [False, True])
def test_the_label_issue_queue_says_how_it_weighed_the_labels(tmp_path, per_video):
    """Loading the label-issue queue tells the labeler whether each label was weighed with the labels beside
    it in its video (slips frame by frame) or by the model's P alone (raw labels given per video)."""
    import json

    rng = np.random.default_rng(4)
    db, videos = build_store(tmp_path, videos=30, frames_per_video=6, seed=4)
    truth = {v: i % 2 == 0 for i, v in enumerate(videos)}
    frames = {f: v for v, fs in videos.items() for f in fs}
    p = [float(np.clip((0.7 if truth[v] else 0.3) + rng.normal(0, 0.15), 0.01, 0.99)) for v in frames.values()]
    store.record_predictions(db, "tiny@1", list(frames), p, [{"pip": 1.0}] * len(p))
    if per_video:  # a video's label for all its frames, a few videos misjudged whole
        rows = [{"video": v, "sludge": truth[v] != (i < 4)} for i, v in enumerate(videos)]
    else:  # one frame label in eight slipped
        rows = [{"video": v, "frame_index": store.get_frame(db, f)["frame_index"],
                 "sludge": truth[v] != (rng.random() < 0.125)} for f, v in frames.items()]
    (tmp_path / "raw.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    store.import_ground_truth(db, tmp_path / "raw.jsonl")

    s = LabelSession("ana").load(db, "label-issue", n=20)
    assert s.message.startswith("20 frames queued by 'label-issue', ")
    if per_video:
        assert "by the model's P alone" in s.message and all(i["reason"] == "label issue" for i in s.items)
    else:
        assert "each label weighed with the labels beside it in its video" in s.message
    assert "weighed" not in LabelSession("bob").load(db, "uncertain", n=5).message
