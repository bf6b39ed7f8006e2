"""What the app does around an analysis: store it, name the model version, score stored frames, export a zip."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

import annotations as store
from core.config import REPO_ROOT, load_settings
from core.engine import load_model, score_frames
from core.session import (
    analyze_and_store,
    export_zip,
    load_frame_image,
    resolve_model_version,
    score_stored_frames,
    hash_weights,
)
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
    stored = analyze_and_store(lm, db, clip, num_frames=4)
    data = stored.to_dict()
    assert data["video"]["name"] == "split.mp4" and "path" not in data["video"]
    assert [f["frame_id"] for f in data["frames"]] == stored.frame_ids
    assert all(f["revision"] == 0 for f in data["frames"])
    rows = store.video_frames(db, stored.video_id, model_id=stored.model_id)
    assert [r["prediction"]["p_sludge"] for r in rows] == pytest.approx([f["p_sludge"] for f in data["frames"]])
    # The same file again is the same video and the same frames.
    again = analyze_and_store(lm, db, clip, num_frames=4)
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


def test_model_versions_are_named_by_folder_and_weights(lm, tmp_path):
    model_id, source, revision = resolve_model_version(lm)
    assert model_id == f"{source}@{revision}" and len(revision) == 12
    if Path(lm.spec.source).resolve().is_relative_to(REPO_ROOT):
        assert not source.startswith("/")                # inside the repo: named relative to it
    copy = tmp_path / "ckpt"
    shutil.copytree(lm.spec.source, copy)
    assert hash_weights(copy) == revision
    config = json.loads((copy / "config.json").read_text())
    config["sludgelens_note"] = "retrained"
    (copy / "config.json").write_text(json.dumps(config))
    assert hash_weights(copy) != revision


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
