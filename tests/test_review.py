"""Two model versions on the same holdout frames, on a real store."""

from __future__ import annotations

import numpy as np
import pytest
from store_helpers import build_store

import annotations as store
from annotations.review import compare_models, list_truth_sources, read_holdout_truth


@pytest.fixture
def db(tmp_path):
    db, layout = build_store(tmp_path, videos=6, frames_per_video=3, model_id="tiny@1")
    frames = [f for fs in layout.values() for f in fs]
    # Truth: every other frame is sludge (vertical). Model B is right everywhere; model A says "sludge" always.
    for i, frame_id in enumerate(frames):
        store.correct_label(db, frame_id, "sludge", i % 2 == 0, "ana", seen_revision=0)
        if i % 2 == 0:
            store.correct_label(db, frame_id, "layout", "vertical", "ana", seen_revision=1)
    store.register_model(db, "A", "a")
    store.register_model(db, "B", "b")
    scores = {"vertical": 0.7, "horizontal": 0.1, "pip": 0.1, "other": 0.1}
    store.record_predictions(db, "A", frames, [0.9] * len(frames), [scores] * len(frames))
    store.record_predictions(db, "B", frames[:-1], [0.8 if i % 2 == 0 else 0.2 for i in range(len(frames) - 1)],
                             [scores] * (len(frames) - 1))
    return db


def test_both_versions_are_scored_on_the_same_frames(db):
    cmp = compare_models(db, "A", "B", split="all")
    assert cmp["holdout"] == 18 and cmp["frames"] == 17          # B did not score the last frame
    a, b = cmp["models"]
    assert b["accuracy"] == 1.0 and b["f1"] == 1.0 and b["layout_accuracy"] == 1.0
    assert a["accuracy"] == pytest.approx(9 / 17, abs=1e-4) and a["recall"] == 1.0
    assert a["precision"] == pytest.approx(9 / 17, abs=1e-4)
    assert len(cmp["disagreements"]) == 8 and all(not d["truth"] for d in cmp["disagreements"])


def test_the_holdout_is_the_videos_of_one_split(db):
    truth = read_holdout_truth(db, "current", "test")
    everything = read_holdout_truth(db, "current", "all")
    assert set(truth) <= set(everything)
    splits = store.split_videos(db)
    assert truth and all(splits[v["video_id"]] == "test" for v in truth.values())  # six videos: one is test
    assert {f for f, v in everything.items() if splits[v["video_id"]] == "test"} == set(truth)
    with pytest.raises(store.InvalidLabelError):
        read_holdout_truth(db, "current", "holdout")


def test_lists_for_the_selectors(db):
    assert set(store.list_model_versions(db)) == {"A", "B", "tiny@1"}
    assert list_truth_sources(db)[:2] == ["current", "raw-gt"] and "ana" in list_truth_sources(db)
    with pytest.raises(store.NotFoundError):
        compare_models(db, "A", "nope")


def test_importing_the_use_case_modules_leaves_the_store_api_whole():
    import importlib
    import inspect

    for name in ("accounts", "labeling", "review"):
        importlib.import_module(f"annotations.{name}")
    assert not [name for name in store.__all__ if inspect.ismodule(getattr(store, name))]


def test_the_holdout_of_one_collection(db):
    crawl = store.add_video(db, b"crawled", "crawled.mp4", collection="crawl-2024")
    frames = store.add_frames(db, crawl, np.random.default_rng(3).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8),
                              [0, 1, 2, 3], [0, 1, 2, 3])
    for f in frames:
        store.correct_label(db, f, "sludge", False, "ana", 0)
    scores = {"vertical": 0.7, "horizontal": 0.1, "pip": 0.1, "other": 0.1}
    store.record_predictions(db, "A", frames, [0.9] * 4, [scores] * 4)
    store.record_predictions(db, "B", frames, [0.1] * 4, [scores] * 4)
    cmp = compare_models(db, "A", "B", split="all", collection="crawl-2024")
    assert cmp["collection"] == "crawl-2024" and cmp["holdout"] == 4 and cmp["frames"] == 4
    a, b = cmp["models"]
    assert a["accuracy"] == 0.0 and b["accuracy"] == 1.0 and len(cmp["disagreements"]) == 4
    assert compare_models(db, "A", "B", split="all", collection=store.UPLOADS)["frames"] == 17
    assert set(read_holdout_truth(db, "current", "all", "crawl-2024")) == set(frames)
    with pytest.raises(store.NotFoundError):
        compare_models(db, "A", "B", split="all", collection="nope")


def test_the_collection_dropdowns_list_every_collection(db):
    from ui.review import ALL_COLLECTIONS, collection_choices

    store.add_video(db, b"crawled", "crawled.mp4", collection="crawl-2024")
    uploads = store.count_collection_videos(db)[store.UPLOADS]
    assert uploads == db.execute("SELECT count(*) FROM videos WHERE collection = ?", [store.UPLOADS]).fetchone()[0]
    assert collection_choices(db) == [("all collections", ALL_COLLECTIONS), ("crawl-2024 · 1 video", "crawl-2024"),
                                      (f"{store.UPLOADS} · {uploads:,} videos", store.UPLOADS)]
