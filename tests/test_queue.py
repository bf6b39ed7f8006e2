"""The labelling queue on a real store: strategies, leases, roles."""

from __future__ import annotations

import time

import numpy as np
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


def import_raw(db, tmp_path, labels: dict[int, bool]):
    """Import raw ground truth for frames (frame id -> sludge) as raw-gt, through a JSONL file."""
    import json

    rows = []
    for frame_id, sludge in labels.items():
        frame = store.get_frame(db, frame_id)
        rows.append({"video": frame["video_id"], "frame_index": frame["frame_index"], "sludge": sludge})
    path = tmp_path / "truth.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    store.import_ground_truth(db, path)


def set_scores(db, p: dict[int, float], model_id: str = "tiny@1"):
    store.record_predictions(db, model_id, list(p), list(p.values()), [{"pip": 1.0}] * len(p))


def test_label_issue_puts_flips_the_model_is_sure_of_first(queued, tmp_path):
    from cleanlab.rank import get_label_quality_scores

    db, videos = queued
    ids = sorted(f for fs in videos.values() for f in fs)
    # The model is sure of most frames; raw-gt agrees with it except on four flips: three where the model is
    # sure (0.97, 0.02, 0.95) and one where it hesitates (0.55). Two frames have no label, one no score.
    p = {f: (0.9 + 0.004 * i if i % 2 else 0.1 - 0.004 * i) for i, f in enumerate(ids)}
    flips = {ids[3]: 0.97, ids[6]: 0.02, ids[11]: 0.95, ids[14]: 0.55}
    p.update(flips)
    set_scores(db, p)
    labels = {f: p[f] >= 0.5 for f in ids[:-2]}
    for f in flips:
        labels[f] = not labels[f]
    import_raw(db, tmp_path, labels)
    db.execute("DELETE FROM predictions WHERE frame_id = ?", [ids[0]])  # a frame the model never scored

    got = store.next_frames(db, "ana", "label-issue", n=50)
    order = [f["frame_id"] for f in got]
    assert order[:3] == [ids[6], ids[3], ids[11]] and order[3] == ids[14]
    assert got[0]["reason"] == "label issue" and got[0]["sludge"] is True and got[0]["p_sludge"] == 0.02
    # Candidates: a current label and a score of this model version; lowest cleanlab label quality first.
    candidates = [f for f in ids[1:-2]]
    expected = get_label_quality_scores(np.array([int(labels[f]) for f in candidates]),
                                        np.array([[1 - p[f], p[f]] for f in candidates]))
    ranked = sorted(zip(expected, candidates), key=lambda t: (round(t[0], 9), t[1]))
    assert order == [f for _, f in ranked]
    assert [f["score"] for f in got] == pytest.approx([round(q, 6) for q, _ in ranked])

    # A frame the labeler fixed leaves their queue (it goes to someone else, as in disagreement); a
    # reviewer's label settles it for everyone; a new score of the model moves a frame up.
    store.correct_label(db, ids[6], "sludge", False, "ana", got[0]["revision"])
    store.release_frames(db, "ana")
    assert ids[6] not in [f["frame_id"] for f in store.next_frames(db, "ana", "label-issue", n=50)]
    store.release_frames(db, "ana")
    assert [f["frame_id"] for f in store.next_frames(db, "bob", "label-issue", n=2)] == [ids[3], ids[11]]
    store.release_frames(db, "bob")
    store.correct_label(db, ids[3], "sludge", True, "rita", store.frame_revision(db, ids[3]))
    set_scores(db, {ids[20 - 2 - 1]: 0.0 if labels[ids[17]] else 1.0})
    order = [f["frame_id"] for f in store.next_frames(db, "bob", "label-issue", n=50)]
    assert ids[3] not in order and order[0] == ids[17] and order[1] == ids[11]


def judge_in_context(db, model_id: str, reach: int = 2) -> dict[int, float]:
    """Each labelled frame's cleanlab quality under the label context, computed here from the store's rows: a
    logistic regression of the model's log-odds and the mean +1/-1 vote of the `reach` nearest frames' sludge
    labels on each side in the video."""
    from cleanlab.rank import get_label_quality_scores
    from sklearn.linear_model import LogisticRegression

    p = dict(db.execute("SELECT frame_id, p_sludge FROM predictions WHERE model_id = ?", [model_id]).fetchall())
    label = dict(db.execute("SELECT frame_id, sludge FROM current_labels WHERE sludge IS NOT NULL").fetchall())
    videos: dict[str, list[int]] = {}
    for frame_id, video, _ in db.execute("SELECT id, video_id, frame_index FROM frames ORDER BY video_id, frame_index"):
        videos.setdefault(video, []).append(frame_id)
    rows = []
    for frames in videos.values():
        for i, f in enumerate(frames):
            if f in label and f in p:
                near = frames[max(0, i - reach):i] + frames[i + 1:i + 1 + reach]
                vote = sum(2 * label[g] - 1 for g in near if g in label) / (2 * reach)
                q = min(max(p[f], 1e-4), 1 - 1e-4)
                rows.append((f, np.log(q / (1 - q)), vote, label[f]))
    x = np.array([r[1:3] for r in rows])
    y = np.array([r[3] for r in rows])
    fitted = LogisticRegression().fit(x, y).predict_proba(x)[:, 1]
    quality = get_label_quality_scores(y, np.stack([1 - fitted, fitted], axis=1))
    return {r[0]: float(q) for r, q in zip(rows, quality)}


def test_label_issue_weighs_what_the_rest_of_the_video_says(tmp_path):
    """With enough labels, the queue refits P(sludge) on the store's own labels with each frame's neighbours'
    vote: a slip the model is unsure of, amid neighbours labelled the other way, comes before a frame whose
    label the model doubts as much but whose neighbours agree with it."""
    from annotations.queue import QueueConfig, get_label_index

    rng = np.random.default_rng(5)
    db, videos = build_store(tmp_path, videos=30, frames_per_video=6, seed=5)
    truth = {f: v % 2 == 0 for v, frames in enumerate(videos.values()) for f in frames}
    # The model leans the right way with noise; two frames get the same doubtful 0.45.
    p = {f: float(np.clip((0.7 if s else 0.3) + rng.normal(0, 0.15), 0.01, 0.99)) for f, s in truth.items()}
    sludge_videos = [frames for v, frames in enumerate(videos.values()) if v % 2 == 0]
    slip, kept = sludge_videos[0][2], sludge_videos[1][2]
    p[slip] = p[kept] = 0.45
    labels = dict(truth)
    labels[slip] = False  # raw-gt's slip: its five neighbours in the video say sludge
    # More slips frame by frame (17 in all, 9 % of the frames: what per-video labels never leave), so the
    # fit sees what a slip looks like.
    for frames in sludge_videos[2:8]:
        labels[frames[3]] = False
    for frames in [frames for v, frames in enumerate(videos.values()) if v % 2][:10]:
        labels[frames[3]] = True
    set_scores(db, p)
    import_raw(db, tmp_path, labels)

    ranked = store.next_frames(db, "ana", "label-issue", n=len(p))
    order = [f["frame_id"] for f in ranked]
    assert order.index(slip) < order.index(kept)
    # The reason beside the frame says what its neighbours' labels said.
    assert ranked[order.index(slip)]["reason"] == "label issue · 4 of 4 labelled frames beside it say otherwise"
    assert ranked[order.index(kept)]["reason"] == "label issue · 0 of 4 labelled frames beside it say otherwise"
    expected = judge_in_context(db, "tiny@1")
    assert order == sorted(expected, key=lambda f: (round(expected[f], 6), f))
    store.release_frames(db, "ana")

    # label-issue-model (for raw labels given per video, where neighbours share a slip) judges by the model's
    # P alone, as label-issue does with the context off or too few labels of a class to fit it.
    model_only = store.next_frames(db, "vic", "label-issue-model", n=len(p))
    assert [f["frame_id"] for f in model_only].index(kept) < [f["frame_id"] for f in model_only].index(slip)
    assert [f["score"] for f in model_only] == [round(f["p_sludge"] if f["sludge"] else 1 - f["p_sludge"], 6)
                                                for f in model_only]
    for config in (QueueConfig(label_context=0), QueueConfig(context_min_labels=10_000)):
        plain = store.open_store(tmp_path / "store.db", tmp_path / "media")
        get_label_index(plain).config = config
        assert store.next_frames(plain, "vic", "label-issue", n=len(p)) == model_only
        plain.close()

    # Correcting the slip rescores its neighbours (their vote changed), in place, without a refit.
    scores = get_label_index(db).models["tiny@1"]
    weights = scores.context
    got = {f["frame_id"]: f["score"] for f in store.next_frames(db, "bob", "label-issue", n=len(p))}
    store.correct_label(db, slip, "sludge", True, "ana", store.frame_revision(db, slip))
    store.release_frames(db, "bob")
    after = {f["frame_id"]: f["score"] for f in store.next_frames(db, "bob", "label-issue", n=len(p))}
    assert scores.context == weights
    neighbour = sludge_videos[0][1]
    assert after[neighbour] > got[neighbour]
    assert {f for f in got if after.get(f) != got[f]} <= set(sludge_videos[0])


def test_label_issue_leaves_the_neighbours_out_where_labels_came_per_video(tmp_path):
    """Raw labels given per video (some videos misjudged whole) leave no frame labelled unlike its neighbours:
    their vote would only repeat each label, so label-issue ranks that collection by the model's P, as
    label-issue-model does, while a collection in the same store whose labels slip frame by frame keeps it."""
    import json

    from annotations.queue import get_label_index

    rng = np.random.default_rng(8)
    db, videos = build_store(tmp_path, videos=30, frames_per_video=6, seed=8)
    crawl = {}
    for v in range(30):
        video = store.add_video(db, f"crawled-{v}".encode(), f"crawled_{v}.mp4", collection="crawl-2024")
        crawl[video] = store.add_frames(db, video, rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8),
                                        [i / 2 for i in range(6)], list(range(6)))
    truth = {v: i % 2 == 0 for i, v in enumerate(videos)} | {v: i % 2 == 0 for i, v in enumerate(crawl)}
    p = {f: float(np.clip((0.75 if truth[v] else 0.25) + rng.normal(0, 0.2), 0.01, 0.99))
         for v, frames in (videos | crawl).items() for f in frames}
    set_scores(db, p)
    misjudged = list(videos)[:4]
    rows = [{"video": v, "sludge": truth[v] != (v in misjudged)} for v in videos]
    (tmp_path / "per-video.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    store.import_ground_truth(db, tmp_path / "per-video.jsonl")
    # The crawl's labels: per frame, one in eight flipped.
    import_raw(db, tmp_path, {f: truth[v] != (rng.random() < 0.125) for v, frames in crawl.items() for f in frames})

    uploads = store.next_frames(db, "vic", "label-issue", n=len(p), collection=store.UPLOADS)
    index = get_label_index(db)
    slots = index.find_slots([f for frames in videos.values() for f in frames])
    assert index.count_isolated_share(slots) == 0.0
    fits = index.models["tiny@1"].context
    assert fits[index.collections[store.UPLOADS]] is None and fits[index.collections["crawl-2024"]] is not None
    assert uploads == store.next_frames(db, "vic", "label-issue-model", n=len(p), collection=store.UPLOADS)
    first = {f["frame_id"] for f in uploads[:12]}
    assert len(first & {f for v in misjudged for f in videos[v]}) >= 9
    assert {f["reason"] for f in uploads} == {"label issue"}
    crawled = store.next_frames(db, "vic", "label-issue", n=len(p), collection="crawl-2024")
    assert crawled != store.next_frames(db, "vic", "label-issue-model", n=len(p), collection="crawl-2024")
    assert all(f["reason"].startswith("label issue · ") for f in crawled)


def test_a_collection_labelled_after_the_first_fit_gets_its_own_label_context(tmp_path):
    """A collection ingested and given raw labels while the app runs (after the queue first fitted the label
    context) is weighed with its neighbours as soon as it has the labels, and ranks as a freshly opened store
    ranks it; a few corrections in a fitted collection do not refit it."""
    from annotations.queue import get_label_index

    rng = np.random.default_rng(11)
    db, videos = build_store(tmp_path, videos=30, frames_per_video=6, seed=11)

    def add_labels(frames_by_video: dict[str, list[int]], folder) -> None:
        truth = {f: i % 2 == 0 for i, frames in enumerate(frames_by_video.values()) for f in frames}
        set_scores(db, {f: float(np.clip((0.7 if s else 0.3) + rng.normal(0, 0.15), 0.01, 0.99))
                        for f, s in truth.items()})
        folder.mkdir()
        import_raw(db, folder, {f: s != (rng.random() < 0.12) for f, s in truth.items()})  # slips frame by frame

    add_labels(videos, tmp_path / "uploads")
    store.next_frames(db, "vic", "label-issue", n=10)  # the first fit: one collection
    crawl = {}
    for v in range(30):
        video = store.add_video(db, f"crawled-{v}".encode(), f"crawled_{v}.mp4", collection="crawl-2024")
        crawl[video] = store.add_frames(db, video, rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8),
                                        [i / 2 for i in range(6)], list(range(6)))
    add_labels(crawl, tmp_path / "crawl")

    ranked = store.next_frames(db, "vic", "label-issue", n=180, collection="crawl-2024")
    index = get_label_index(db)
    scores = index.models["tiny@1"]
    assert scores.context.get(index.collections["crawl-2024"]) is not None
    assert all(f["reason"].startswith("label issue · ") for f in ranked)
    fresh = store.open_store(tmp_path / "store.db", tmp_path / "media")
    afresh = store.next_frames(fresh, "vic", "label-issue", n=180, collection="crawl-2024")
    fresh.close()
    assert [(f["frame_id"], f["score"], f["reason"]) for f in afresh] == [
        (f["frame_id"], f["score"], f["reason"]) for f in ranked]

    weights = dict(scores.context)
    for f in ranked[:5]:
        store.correct_label(db, f["frame_id"], "sludge", not f["sludge"], "ana", f["revision"])
    store.next_frames(db, "bob", "label-issue", n=10, collection="crawl-2024")
    assert scores.context == weights


def test_label_issue_ties_go_to_the_lower_frame_id(queued, tmp_path):
    db, videos = queued
    ids = sorted(f for fs in videos.values() for f in fs)
    set_scores(db, {f: 0.8 for f in ids})
    import_raw(db, tmp_path, {f: False for f in ids})
    first = [f["frame_id"] for f in store.next_frames(db, "ana", "label-issue", n=7)]
    assert first == ids[:7]
    assert [f["frame_id"] for f in store.next_frames(db, "bob", "label-issue", n=7)] == ids[7:14]


def test_every_strategy_keeps_to_a_collection(tmp_path):
    db, videos = build_store(tmp_path, videos=4, frames_per_video=5)
    crawl = store.add_video(db, b"crawled clip", "crawled.mp4", collection="crawl-2024")
    crawled = store.add_frames(db, crawl, np.random.default_rng(1).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8),
                               [i / 2 for i in range(6)], list(range(6)))
    set_scores(db, dict(zip(crawled, [0.9, 0.1, 0.52, 0.48, 0.7, 0.3])))
    # The model disagrees with two of the labels; the last frame has none.
    import_raw(db, tmp_path, {f: i < 3 for i, f in enumerate(crawled[:-1])})
    uploads = {f for fs in videos.values() for f in fs}
    store.correct_label(db, sorted(uploads)[0], "sludge", True, "ana", 0)
    for strategy in store.STRATEGIES:
        got = {f["frame_id"] for f in store.next_frames(db, "vic", strategy, n=50, collection="crawl-2024")}
        assert got and got <= set(crawled), strategy
        rest = {f["frame_id"] for f in store.next_frames(db, "vic", strategy, n=50, collection=store.UPLOADS)}
        assert rest <= uploads, strategy
    assert store.count_unlabeled(db, "crawl-2024") == 1
    assert store.count_unlabeled(db, store.UPLOADS) == len(uploads) - 1
    assert store.count_unlabeled(db) == len(uploads)
    with pytest.raises(store.NotFoundError, match="no collection named 'crawl-2025'"):
        store.next_frames(db, "ana", "uncertain", collection="crawl-2025")
    with pytest.raises(store.NotFoundError, match="crawl-2024"):
        store.count_unlabeled(db, "crawl-2025")
    assert store.list_collection_names(db) == ["crawl-2024", store.UPLOADS]


def test_the_label_index_follows_writes_from_another_connection(queued, tmp_path):
    """The index reads only what is new; it must agree with the current_labels view after any mix of writes."""
    from annotations.queue import get_label_index
    from core.vocabulary import LABEL_LAYOUTS

    db, videos = queued
    other = store.open_store(tmp_path / "store.db", tmp_path / "media")
    ids = sorted(f for fs in videos.values() for f in fs)
    rng = np.random.default_rng(7)
    import_raw(db, tmp_path, {f: bool(rng.random() < 0.5) for f in ids[::2]})
    for step in range(120):
        writer = other if step % 3 else db
        f = int(rng.choice(ids))
        who = ["ana", "bob", "rita"][step % 3]
        revision = store.frame_revision(writer, f)
        kind = rng.random()
        try:
            if kind < 0.5:
                store.correct_label(writer, f, "sludge", bool(rng.random() < 0.5), who, revision)
            elif kind < 0.75:
                store.correct_label(writer, f, "layout", str(rng.choice(LABEL_LAYOUTS)), who, revision)
            elif kind < 0.9:
                store.undo(writer, f, "sludge", who, revision)
            else:
                store.review_event(writer, store.label_history(writer, f)[-1].id, "rita", bool(rng.random() < 0.5))
        except (store.InvalidLabelError, IndexError):
            pass
        if step % 10 == 0:
            store.next_frames(db, "ana", "disagreement", n=5)  # the index catches up at every call
            store.release_frames(db, "ana")
    index = get_label_index(db)
    with index.lock:
        index.refresh(db)
    view = {r["frame_id"]: r for r in store.current_labels(db)}
    for slot, frame_id in enumerate(index.ids.tolist()):
        row = view[frame_id]
        assert index.cur_val[0][slot] == (-1 if row["sludge"] is None else int(row["sludge"]))
        assert index.cur_val[1][slot] == (-1 if row["layout"] is None else LABEL_LAYOUTS.index(row["layout"]))
    assert store.count_unlabeled(db) == sum(r["sludge"] is None for r in view.values())
    other.close()


def test_the_label_tab_session_keeps_to_its_collection(tmp_path):
    from annotations.labeling import LabelSession

    db, videos = build_store(tmp_path, videos=2, frames_per_video=4)
    crawl = store.add_video(db, b"crawled clip", "crawled.mp4", collection="crawl-2024")
    crawled = store.add_frames(db, crawl, np.random.default_rng(2).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8),
                               [0.0, 0.5, 1.0], [0, 1, 2])
    set_scores(db, dict(zip(crawled, [0.2, 0.9, 0.6])))
    import_raw(db, tmp_path, dict(zip(crawled, [True, True, True])))
    session = LabelSession("ana")
    session.collection = "crawl-2024"
    session.load(db, "label-issue", n=5, model_id="tiny@1")
    assert [item["frame_id"] for item in session.items] == [crawled[0], crawled[2], crawled[1]]
    assert store.count_unlabeled(db, session.collection) == 0


def test_walking_the_sorted_orders_ranks_as_one_pass_does(tmp_path):
    """At scale the queue walks each strategy's sorted order and scores changed frames apart; on a small store it
    ranks everything in one pass. Both must give the same frames, in the same order, after any mix of writes."""
    from annotations.queue import QueueConfig, get_label_index
    from core.vocabulary import LABEL_LAYOUTS

    db, videos = build_store(tmp_path, videos=5, frames_per_video=6, seed=3)
    rng = np.random.default_rng(11)
    crawl = store.add_video(db, b"crawled", "crawled.mp4", collection="crawl-2024")
    store.add_frames(db, crawl, rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8), [i / 2 for i in range(6)],
                     list(range(6)))
    ids = sorted(r[0] for r in db.execute("SELECT id FROM frames"))
    set_scores(db, {f: round(float(rng.random()), 1) for f in ids})  # coarse scores: many ties
    import_raw(db, tmp_path, {f: bool(rng.random() < 0.5) for f in ids if rng.random() < 0.8})
    walking = store.open_store(tmp_path / "store.db", tmp_path / "media")
    # Both weigh each label's neighbours (a fit on this small store's few labels); a label written rescores
    # its frame and its neighbours in both.
    get_label_index(db).config = QueueConfig(context_min_labels=3)
    get_label_index(walking).config = QueueConfig(dense_frames=0, dense_share=0.0, resort_after=5,
                                                  context_min_labels=3)
    for step in range(60):
        f = int(rng.choice(ids))
        who = ["ana", "bob", "rita"][step % 3]
        revision = store.frame_revision(db, f)
        kind = rng.random()
        try:
            if kind < 0.45:
                store.correct_label(db, f, "sludge", bool(rng.random() < 0.5), who, revision)
            elif kind < 0.65:
                store.correct_label(db, f, "layout", str(rng.choice(LABEL_LAYOUTS)), who, revision)
            elif kind < 0.75:
                store.undo(db, f, "sludge", who, revision)
            elif kind < 0.85:
                store.review_event(db, store.label_history(db, f)[-1].id, "rita", bool(rng.random() < 0.6))
            else:
                set_scores(db, {f: round(float(rng.random()), 1)})
        except (store.InvalidLabelError, IndexError):
            pass
        if step % 6 == 5:
            for strategy in ("uncertain", "disagreement", "unlabeled", "label-issue", "label-issue-model"):
                for labeler, collection in (("ana", None), ("bob", "crawl-2024"), ("rita", store.UPLOADS)):
                    one_pass = store.next_frames(db, labeler, strategy, n=12, collection=collection)
                    walked = store.next_frames(walking, labeler, strategy, n=12, collection=collection)
                    assert [(f["frame_id"], f["score"], f["reason"]) for f in walked] == [
                        (f["frame_id"], f["score"], f["reason"]) for f in one_pass], (step, strategy, labeler)
                    store.release_frames(db, labeler)
    assert any(fit is not None for fit in get_label_index(walking).models["tiny@1"].context.values())
    walking.close()
