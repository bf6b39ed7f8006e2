"""The labelling queue on a real store: strategies, leases, roles."""

from __future__ import annotations

import time

import pytest
from store_helpers import build_store

import annotations as store


@pytest.fixture
def queued(tmp_path):
    db, videos = build_store(tmp_path, videos=4, frames_per_video=5)
    yield db, videos
    db.close()


def predictions(db):
    return dict(db.execute("SELECT frame_id, p_sludge FROM predictions WHERE model_id = 'tiny@1'").fetchall())


def test_uncertain_is_closest_to_half_across_all_videos(queued):
    db, videos = queued
    p = predictions(db)
    expected = sorted(p, key=lambda f: (abs(p[f] - 0.5), f))
    got = store.next_frames(db, "ana", "uncertain", n=6)
    assert [f["frame_id"] for f in got] == expected[:6]
    assert len({f["video_id"] for f in got}) > 1
    first = got[0]
    assert first["p_sludge"] == p[first["frame_id"]] and first["model_id"] == "tiny@1"
    assert first["revision"] == 0 and first["lease_expires_at"] > time.time()
    assert first["image"].endswith(".png")
    # A frame a person labelled leaves the uncertain queue.
    store.correct_label(db, first["frame_id"], "sludge", True, "ana", first["revision"])
    again = store.next_frames(db, "ana", "uncertain", n=6)
    assert first["frame_id"] not in [f["frame_id"] for f in again]


def test_leases_keep_two_labelers_apart_and_expire(queued):
    db, _ = queued
    ana = [f["frame_id"] for f in store.next_frames(db, "ana", "uncertain", n=5, lease_s=0.3)]
    bob = [f["frame_id"] for f in store.next_frames(db, "bob", "uncertain", n=5, lease_s=60)]
    assert len(ana) == len(bob) == 5 and not set(ana) & set(bob)
    again = store.next_frames(db, "ana", "uncertain", n=5, lease_s=0.3)
    assert [f["frame_id"] for f in again] == ana  # a labeler's own leases come back to them
    assert store.release_frames(db, "ana", ana[:1]) == 1
    assert [f["frame_id"] for f in store.next_frames(db, "rita", "uncertain", n=1, lease_s=0.01)] == ana[:1]
    time.sleep(0.35)
    assert [f["frame_id"] for f in store.next_frames(db, "rita", "uncertain", n=5)] == ana


def test_correction_releases_the_lease(queued):
    db, _ = queued
    (frame,) = store.next_frames(db, "ana", "unlabeled", n=1)
    assert db.execute("SELECT labeler FROM leases WHERE frame_id = ?", [frame["frame_id"]]).fetchone() == ("ana",)
    store.correct_label(db, frame["frame_id"], "layout", "pip", "ana", frame["revision"])
    assert db.execute("SELECT 1 FROM leases WHERE frame_id = ?", [frame["frame_id"]]).fetchone() is None


def test_unlabeled_and_random(queued):
    db, videos = queued
    all_ids = sorted(f for fs in videos.values() for f in fs)
    assert store.count_unlabeled(db) == len(all_ids)
    store.correct_label(db, all_ids[0], "sludge", False, "ana", 0)
    assert store.count_unlabeled(db) == len(all_ids) - 1
    got = store.next_frames(db, "ana", "unlabeled", n=3)
    assert [f["frame_id"] for f in got] == all_ids[1:4]
    a = [f["frame_id"] for f in store.next_frames(db, "vic", "random", n=5, seed=3)]
    b = [f["frame_id"] for f in store.next_frames(db, "vic", "random", n=5, seed=3)]
    assert a == b and len(set(a)) == 5 and set(a) <= set(all_ids)
    assert len(store.next_frames(db, "vic", "random", n=500)) == len(all_ids) - 3  # ana's 3 leases are held


def test_viewer_sees_the_queue_without_taking_frames(queued):
    db, _ = queued
    seen = store.next_frames(db, "vic", "uncertain", n=3)
    assert all(f["lease_expires_at"] is None for f in seen)
    assert db["leases"].count == 0
    with pytest.raises(store.PermissionDeniedError):
        store.next_frames(db, "nobody", "uncertain")
    with pytest.raises(store.PermissionDeniedError):
        store.next_frames(db, store.RAW_GT, "uncertain")
    with pytest.raises(store.InvalidLabelError):
        store.next_frames(db, "ana", "hardest")


def test_disagreement_puts_labeler_conflicts_first_then_confident_model_errors(queued):
    db, videos = queued
    p = predictions(db)
    ids = sorted(p)
    conflict = ids[0]
    store.correct_label(db, conflict, "sludge", True, "ana", 0)
    store.correct_label(db, conflict, "sludge", False, "bob", 1)
    # Label every other frame the opposite of the model: all of them disagree with it.
    for f in ids[1:8]:
        store.correct_label(db, f, "sludge", p[f] < 0.5, "ana", 0)
    # ana had the last word on the model disagreements; bob answered her on the conflict.
    assert [f["frame_id"] for f in store.next_frames(db, "ana", "disagreement", n=20)] == [conflict]
    store.release_frames(db, "ana")
    got = store.next_frames(db, "rita", "disagreement", n=20)
    assert got[0]["frame_id"] == conflict and got[0]["reason"] == "labelers disagree"
    model_part = [f["frame_id"] for f in got[1:]]
    assert model_part == sorted(ids[1:8], key=lambda f: (-abs(p[f] - 0.5), f))
    # Agreeing with the model, or a reviewer's accept, settles a frame.
    accepted = store.label_history(db, ids[1])[-1]
    store.review_event(db, accepted.id, "rita", accept=True)
    store.correct_label(db, ids[2], "sludge", p[ids[2]] >= 0.5, "ana", 1)
    store.correct_label(db, conflict, "sludge", True, "rita", 2)  # a reviewer's own label settles too
    got = [f["frame_id"] for f in store.next_frames(db, "rita", "disagreement", n=20)]
    assert ids[1] not in got and ids[2] not in got and conflict not in got
    assert set(got) == set(ids[3:8])


def test_uncertain_with_no_predictions_is_empty(tmp_path):
    db, _ = build_store(tmp_path, model_id=None)
    assert store.next_frames(db, "ana", "uncertain") == []
    assert len(store.next_frames(db, "ana", "unlabeled", n=2)) == 2
