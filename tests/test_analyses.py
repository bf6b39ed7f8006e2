"""What the app does around an analysis: store it under the model's identity, score stored frames, export a zip."""

from __future__ import annotations

import json
import zipfile

import pytest

import annotations as store
from annotations.analyses import (
    export_zip,
    load_frame_image,
    record_analysis,
    score_stored_frames,
)
from core.config import load_settings
from core.engine import load_model, score_frames
from training.synthetic import make_clip, write_clip


@pytest.fixture(scope="module")
def lm():
    return load_model(load_settings().model)


@pytest.fixture
def db(tmp_path):
    return store.open_store(tmp_path / "s.db", tmp_path / "media")


def test_an_analysis_is_stored_with_this_model_versions_predictions(lm, db, tmp_path):
    frames, _ = make_clip(3, num_frames=12, size=(128, 72), layouts=("vertical",))
    clip = write_clip(tmp_path / "split.mp4", frames)
    stored = record_analysis(lm, db, clip, num_frames=4)
    data = stored.to_dict()
    assert data["video"]["name"] == "split.mp4" and "path" not in data["video"]
    assert [f["frame_id"] for f in data["frames"]] == stored.frame_ids
    assert all(f["revision"] == 0 for f in data["frames"])
    rows = store.video_frames(db, stored.video_id, model_id=stored.model_id)
    assert [r["prediction"]["p_sludge"] for r in rows] == pytest.approx([f["p_sludge"] for f in data["frames"]])
    # The same file again is the same video and the same frames.
    again = record_analysis(lm, db, clip, num_frames=4)
    assert (again.video_id, again.frame_ids) == (stored.video_id, stored.frame_ids)

    # Scoring stored frames scores only those this version has not scored, from their stored pixels.
    pip, _ = make_clip(4, num_frames=3, size=(128, 72), layouts=("pip",))
    other = store.add_video(db, b"another clip", "other.mp4")
    new_ids = store.add_frames(db, other, pip, [0.0, 0.1, 0.2], [0, 1, 2])
    assert score_stored_frames(lm, db, stored.frame_ids + new_ids) == stored.model_id
    assert db["predictions"].count == 7
    expected = [s.p_sludge for s in score_frames(lm, [load_frame_image(db, f) for f in new_ids])]
    got = [store.get_frame(db, f, stored.model_id)["prediction"]["p_sludge"] for f in new_ids]
    assert got == pytest.approx(expected, abs=1e-5)


def test_predictions_are_stored_under_the_models_identity(lm, db, tmp_path):
    frames, _ = make_clip(5, num_frames=6, size=(128, 72), layouts=("horizontal",))
    stored = record_analysis(lm, db, write_clip(tmp_path / "side.mp4", frames), num_frames=3)
    identity = lm.identity
    assert stored.model_id == identity.id
    row = db["models"].get(identity.id)
    assert (row["source"], row["revision"]) == (identity.source, identity.revision)
    assert not row["source"].startswith("/")            # never where this machine keeps its files


def test_an_export_is_zipped_with_its_manifest(db, tmp_path):
    from store_helpers import build_store

    db, _ = build_store(tmp_path / "store", videos=2, frames_per_video=3)
    manifest, folder, archive = export_zip(db, "training", tmp_path / "exports")
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
        assert {"manifest.json", "training.jsonl"} <= names
        assert json.loads(z.read("manifest.json"))["snapshot_id"] == manifest["snapshot_id"]
    assert archive.name == f"training-{manifest['snapshot_id']}.zip" and (folder / "manifest.json").is_file()
    with pytest.raises(store.InvalidLabelError, match="unknown export kind"):
        export_zip(db, "csv", tmp_path / "exports")


def test_a_stored_video_opens_by_name_as_it_was_analyzed(lm, db, tmp_path):
    from annotations.analyses import open_stored_video
    from ui.analyze import list_stored_videos

    frames, _ = make_clip(6, num_frames=12, size=(128, 72), layouts=("vertical", "none"))
    stored = record_analysis(lm, db, write_clip(tmp_path / "split_then_single.mp4", frames), num_frames=6)
    first = stored.to_dict()
    again = open_stored_video(lm, db, stored.video_id)
    data = again.to_dict()
    # The same frames, scores and verdict as the analysis, from the stored frames: nothing decoded again.
    assert again.frame_ids == stored.frame_ids and again.model_id == stored.model_id
    for key in ("p_sludge", "label", "layout", "layout_scores", "time_s", "frame_index", "frame_id", "revision"):
        assert [f[key] for f in data["frames"]] == [f[key] for f in first["frames"]], key
    assert data["verdict"] == first["verdict"] and data["video"]["name"] == "split_then_single.mp4"
    assert data["video"]["decoder"] == "store" and data["store"] == first["store"]
    assert again.analysis.video.frames.shape == stored.analysis.video.frames.shape

    # A video this model version never scored is scored from its stored pixels, and the scores are stored.
    pip, _ = make_clip(7, num_frames=3, size=(128, 72), layouts=("pip",))
    other = store.add_video(db, b"an ingested clip", "ingested.mp4", {"fps": 12.0, "duration_s": 0.25},
                            collection="crawl-2024")
    ids = store.add_frames(db, other, pip, [0.0, 0.1, 0.2], [0, 1, 2])
    opened = open_stored_video(lm, db, other)
    expected = [s.p_sludge for s in score_frames(lm, list(pip))]
    assert [f["p_sludge"] for f in opened.to_dict()["frames"]] == pytest.approx(expected, abs=1e-5)
    assert [store.get_frame(db, f, opened.model_id)["prediction"]["p_sludge"] for f in ids] == pytest.approx(
        expected, abs=1e-5)

    # The Analyze tab's picker: newest first, searchable by name; a missing or frameless video is refused.
    assert [label.split(" · ")[0] for label, _ in list_stored_videos(db)] == ["ingested.mp4",
                                                                          "split_then_single.mp4"]
    assert list_stored_videos(db, "SPLIT") == [(list_stored_videos(db)[1][0], stored.video_id)]
    assert list_stored_videos(db, "no such clip") == []
    with pytest.raises(store.NotFoundError, match="not in the store"):
        open_stored_video(lm, db, "0" * 64)
    empty = store.add_video(db, b"no frames yet", "empty.mp4")
    with pytest.raises(store.NotFoundError, match="no stored frames"):
        open_stored_video(lm, db, empty)
