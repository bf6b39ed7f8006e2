"""Exports: training JSONL, imagefolder (loaded by datasets for real), Label Studio, push to a folder target."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from store_helpers import build_store

import annotations as store
from core.vocabulary import LABEL_LAYOUTS

RECORD_KEYS = {"image", "sludge", "layout", "description", "explanation", "provenance", "split", "video_id",
               "frame_index", "time_s"}


@pytest.fixture
def labelled(tmp_path):
    """12 videos x 3 frames: some corrected, some raw-gt, the rest only scored by the model."""
    db, videos = build_store(tmp_path, videos=12, frames_per_video=3, seed=4)
    ids = list(videos.items())
    truth = tmp_path / "truth.csv"
    truth.write_text("video,sludge,layout\n" + "".join(f"{v},{i % 2},{'pip' if i % 2 else ''}\n"
                                                       for i, (v, _) in enumerate(ids[:6])))
    store.import_ground_truth(db, truth)
    for video, frames in ids[:3]:
        store.correct_label(db, frames[0], "sludge", True, "ana", store.frame_revision(db, frames[0]))
        store.correct_label(db, frames[0], "layout", "horizontal", "ana", store.frame_revision(db, frames[0]))
        store.correct_label(db, frames[0], "description", "a game <b>above</b>, a podcast below", "ana",
                            store.frame_revision(db, frames[0]))
    yield db, videos, tmp_path
    db.close()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_training_jsonl_holds_human_and_imported_labels_by_default(labelled):
    db, _, tmp = labelled
    manifest = store.export_training_set(db, tmp / "plain")
    records = read_jsonl(tmp / "plain" / "training.jsonl")
    assert len(records) == 18 and {r["provenance"] for r in records} == {"corrected", "raw"}
    assert manifest["counts"]["skipped_unlabelled"] == 18
    assert manifest["pseudo_labels"] == {"included": False, "model_id": None, "records": 0}


def test_training_jsonl_records_and_manifest(labelled):
    db, _, tmp = labelled
    manifest = store.export_training_set(db, tmp / "run1", config=store.ExportConfig(include_model_labels=True))
    records = read_jsonl(tmp / "run1" / "training.jsonl")
    assert len(records) == 36 and all(RECORD_KEYS <= set(r) for r in records)
    assert [(r["video_id"], r["frame_index"]) for r in records] == sorted((r["video_id"], r["frame_index"])
                                                                          for r in records)
    by_prov = {}
    for r in records:
        by_prov.setdefault(r["provenance"], []).append(r)
        assert isinstance(r["sludge"], bool) and r["layout"] in LABEL_LAYOUTS and r["split"] in ("train", "val", "test")
        assert r["explanation"].startswith("Sludge:" if r["sludge"] else "Not sludge:")
        assert r["layout"] == "none" or r["sludge"]
        image = tmp / "run1" / r["image"]
        assert image.is_file() and hashlib.sha256(image.read_bytes()).hexdigest() == r["image_sha256"]
    assert {k: len(v) for k, v in by_prov.items()} == {"corrected": 3, "raw": 15, "model": 18}
    corrected = by_prov["corrected"][0]
    assert (corrected["sludge"], corrected["layout"], corrected["labeler"]) == (True, "horizontal", "ana")
    assert corrected["description"] == "a game <b>above</b>, a podcast below"
    assert corrected["provenance_fields"] == {"sludge": "corrected", "layout": "corrected",
                                              "description": "corrected"}
    model = by_prov["model"][0]
    assert model["labeler"] is None and model["model_id"] == "tiny@1"
    assert model["sludge"] == (model["p_sludge"] >= 0.5) and model["description"].startswith("frame ")
    splits = {}
    rule = store.split_videos(db)
    for r in records:
        splits.setdefault(r["video_id"], set()).add(r["split"])
        assert r["split"] == rule[r["video_id"]]
    assert all(len(s) == 1 for s in splits.values())  # no video spans two splits
    assert manifest["pseudo_labels"] == {"included": True, "model_id": "tiny@1", "records": 18}
    assert manifest["counts"]["records"] == 36 and manifest["counts"]["by_provenance"] == {"corrected": 3,
                                                                                         "model": 18, "raw": 15}
    assert manifest["model_versions"] == ["tiny@1"]
    assert {r["split"] for r in records} == {"train", "val", "test"}
    on_disk = json.loads((tmp / "run1" / "manifest.json").read_text())
    assert on_disk == manifest
    files = {p.relative_to(tmp / "run1").as_posix() for p in (tmp / "run1").rglob("*") if p.is_file()}
    assert set(manifest["files"]) == files - {"manifest.json"}
    for name, sha in manifest["files"].items():
        assert hashlib.sha256((tmp / "run1" / name).read_bytes()).hexdigest() == sha
    row = db.execute("SELECT snapshot_id, kind FROM exports").fetchone()
    assert row == (manifest["snapshot_id"], "training-jsonl")


def test_exports_are_byte_identical_for_the_same_store(labelled):
    db, videos, tmp = labelled
    ids = {}
    for kind, export in (("t", store.export_training_set), ("i", store.export_imagefolder),
                         ("l", store.export_label_studio)):
        first = export(db, tmp / f"{kind}1")
        second = export(db, tmp / f"{kind}2")
        assert first["snapshot_id"] == second["snapshot_id"]
        assert tree_bytes(tmp / f"{kind}1") == tree_bytes(tmp / f"{kind}2")
        ids[kind] = first["snapshot_id"]
    # Exporting again into the same folder replaces it; a new correction changes the snapshot id.
    frame = next(iter(videos.values()))[1]
    store.correct_label(db, frame, "sludge", False, "bob", store.frame_revision(db, frame))
    third = store.export_training_set(db, tmp / "t1")
    assert third["snapshot_id"] != ids["t"]
    assert json.loads((tmp / "t1" / "manifest.json").read_text())["snapshot_id"] == third["snapshot_id"]
    assert tree_bytes(tmp / "t1") != tree_bytes(tmp / "t2")


def test_absolute_images_and_no_model_labels(labelled):
    db, _, tmp = labelled
    manifest = store.export_training_set(db, tmp / "abs", images="absolute",
                                         config=store.ExportConfig(include_model_labels=False))
    records = read_jsonl(tmp / "abs" / "training.jsonl")
    assert len(records) == 18 and manifest["counts"]["skipped_unlabelled"] == 18
    assert all(Path(r["image"]).is_absolute() and Path(r["image"]).is_file() for r in records)
    assert not (tmp / "abs" / "images").exists()
    with pytest.raises(store.InvalidLabelError, match="absolute"):
        store.push_export_to_hub(tmp / "abs", tmp / "target")


def test_refuses_to_overwrite_a_folder_that_is_not_an_export(labelled):
    db, _, tmp = labelled
    (tmp / "precious").mkdir()
    (tmp / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(store.InvalidLabelError, match="not empty"):
        store.export_training_set(db, tmp / "precious")
    assert (tmp / "precious" / "notes.txt").read_text() == "keep me"


def test_imagefolder_loads_with_datasets(labelled):
    datasets = pytest.importorskip("datasets")
    db, _, tmp = labelled
    manifest = store.export_imagefolder(db, tmp / "hf")
    loaded = datasets.load_dataset("imagefolder", data_dir=str(tmp / "hf"), cache_dir=str(tmp / "cache"))
    sizes = {name: len(split) for name, split in loaded.items()}
    expected = {{"train": "train", "val": "validation", "test": "test"}[k]: v
                for k, v in manifest["counts"]["by_split"].items()}
    assert sizes == expected and sum(sizes.values()) == 18  # the labelled frames; no pseudo-labels unless asked
    row = loaded["train"][0]
    assert row["image"].size == (16, 16)
    assert {"sludge", "layout", "description", "explanation", "provenance", "video_id", "frame_index"} <= set(row)
    assert loaded["train"].features["sludge"].dtype == "bool"
    corrected = [r for split in loaded.values() for r in split if r["provenance"] == "corrected"]
    assert len(corrected) == 3 and all(r["layout"] == "horizontal" for r in corrected)


def test_label_studio_tasks_carry_labels_as_annotations_and_predictions(labelled):
    db, _, tmp = labelled
    manifest = store.export_label_studio(db, tmp / "ls")
    tasks = json.loads((tmp / "ls" / "tasks.json").read_text())
    assert manifest["counts"] == {"tasks": 36, "with_annotations": 18, "with_predictions": 36}
    current = {r["frame_id"]: r for r in store.current_labels(db)}
    for task in tasks:
        frame = current[task["data"]["frame_id"]]
        # Labels are never task data: Label Studio reads them from "annotations" (and our guesses from "predictions").
        assert set(task["data"]) == {"image", "frame_id", "video_id", "frame_index", "time_s"}
        if frame["sludge"] is None:
            assert "annotations" not in task
            continue
        (annotation,) = task["annotations"]
        by_name = {r["from_name"]: r["value"] for r in annotation["result"]}
        assert by_name["sludge"] == {"choices": ["sludge" if frame["sludge"] else "not_sludge"]}
        if frame["layout"] is not None:
            assert by_name["layout"] == {"choices": [frame["layout"]]}
        assert task["meta"]["provenance"] == ("corrected" if frame["sludge_labeler"] == "ana" else "raw")
    corrected = [t for t in tasks if t.get("meta", {}).get("labeler") == "ana"]
    assert len(corrected) == 3 and all(
        {"from_name": "description", "to_name": "image", "type": "textarea", "id": f"{t['id']}-description",
         "value": {"text": ["a game <b>above</b>, a podcast below"]}} in t["annotations"][0]["result"]
        for t in corrected)
    p = dict(db.execute("SELECT frame_id, p_sludge FROM predictions").fetchall())
    config = (tmp / "ls" / "label_config.xml").read_text()
    for task in tasks:
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == "tiny@1"
        by_name = {r["from_name"]: r for r in prediction["result"]}
        sludge = by_name["sludge"]["value"]["choices"] == ["sludge"]
        assert sludge == (p[task["data"]["frame_id"]] >= 0.5)
        for result in prediction["result"]:
            assert f'name="{result["from_name"]}"' in config and result["to_name"] == "image"
        image = task["data"]["image"].removeprefix("/data/local-files/?d=")
        assert (tmp / "ls" / image).is_file()
    # The pre-annotations follow the configured threshold (the app passes its engine's).
    store.export_label_studio(db, tmp / "ls-strict", config=store.ExportConfig(threshold=0.99))
    strict = json.loads((tmp / "ls-strict" / "tasks.json").read_text())
    assert all(t["predictions"][0]["result"][0]["value"]["choices"] == ["not_sludge"]
               for t in strict if p[t["data"]["frame_id"]] < 0.99)
    assert store.has_export(db, manifest["snapshot_id"]) and not store.has_export(db, "nope")


def test_push_to_a_local_folder_target(labelled):
    db, _, tmp = labelled
    manifest = store.export_training_set(db, tmp / "run1")
    where = Path(store.push_export_to_hub(tmp / "run1", str(tmp / "hub-mirror")))
    assert where == (tmp / "hub-mirror" / "exports" / manifest["snapshot_id"]).resolve()
    assert tree_bytes(where) == tree_bytes(tmp / "run1")
    with pytest.raises(store.InvalidLabelError, match="outside"):
        store.push_export_to_hub(tmp / "run1", str(tmp / "hub-mirror"), path_in_repo="../../escape")
    with pytest.raises(store.InvalidLabelError, match="manifest"):
        store.push_export_to_hub(tmp, str(tmp / "hub-mirror"))


def test_parse_target():
    from annotations.targets import parse_target

    assert parse_target("hf://datasets/me/labels") == ("hub", "me/labels")
    assert parse_target("me/labels") == ("hub", "me/labels")
    assert parse_target("/mnt/backups") == ("local", Path("/mnt/backups"))
    assert parse_target("./me/labels") == ("local", Path("me/labels"))
    assert parse_target("file:///srv/x") == ("local", Path("/srv/x"))
    with pytest.raises(store.InvalidLabelError):
        parse_target("hf://datasets/../../x")


def test_a_small_collection_gets_a_test_and_a_validation_video(tmp_path):
    from annotations.exports import assign_splits
    from annotations.review import read_holdout_truth

    db, videos = build_store(tmp_path, videos=3, frames_per_video=2, seed=1)
    for frames in videos.values():
        for frame_id in frames:
            store.correct_label(db, frame_id, "sludge", True, "ana", store.frame_revision(db, frame_id))
    manifest = store.export_training_set(db, tmp_path / "small")
    assert manifest["counts"]["by_split"] == {"test": 2, "train": 2, "val": 2}
    # The review holdout is the export's test split.
    records = read_jsonl(tmp_path / "small" / "training.jsonl")
    assert set(read_holdout_truth(db, "current", "test")) == {r["frame_id"] for r in records if r["split"] == "test"}
    # Two videos are too few to hold one out; a large collection follows the hash alone.
    assert set(assign_splits(["a", "b"]).values()) <= {"train", "val", "test"}
    many = [f"video-{i}" for i in range(400)]
    assert assign_splits(many) == {v: store.split_for_video(v) for v in many}
    # Adding videos keeps every video that the hash put in val or test where it was.
    grown = assign_splits(many + [f"new-{i}" for i in range(50)])
    assert all(grown[v] == split for v, split in assign_splits(many).items() if split != "train")
