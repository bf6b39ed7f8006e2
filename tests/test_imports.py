"""Importing raw ground truth (CSV / JSONL, video- or frame-level) as labeler raw-gt."""

from __future__ import annotations

import json

import pytest
from store_helpers import build_store

import annotations as store


@pytest.fixture
def two_videos(tmp_path):
    db, videos = build_store(tmp_path, videos=2, frames_per_video=4, model_id=None)
    yield db, videos, tmp_path
    db.close()


def test_csv_video_level_with_frame_level_override(two_videos):
    db, videos, tmp = two_videos
    (va, fa), (vb, fb) = videos.items()
    truth = tmp / "truth.csv"
    # The frame-level row comes first; it still wins over its video's row. \ufeff: a BOM from a spreadsheet.
    truth.write_text("\ufeffvideo,frame_index,sludge,layout,description\n"
                     f"clip_0.mp4,15,no,,\"a single stream, \"\"quoted\"\"\"\n"
                     f"clip_0.mp4,,yes,vertical,\n"
                     f"{vb},,0,,\n"
                     "clip_9.mp4,,1,,\n", encoding="utf-8")
    report = store.import_ground_truth(db, truth)
    assert report["unknown_videos"] == ["clip_9.mp4"]
    labels = {r["frame_id"]: r for r in store.current_labels(db)}
    assert [labels[f]["sludge"] for f in fa] == [True, False, True, True]
    assert [labels[f]["layout"] for f in fa] == ["vertical"] * 4
    assert labels[fa[1]]["description"] == 'a single stream, "quoted"'
    assert all(labels[f]["sludge"] is False and labels[f]["sludge_labeler"] == store.RAW_GT for f in fb)
    assert report["events"] == 4 + 4 + 1 + 4
    assert all(e.kind == "import" and e.source == "import" for e in store.label_history(db, fa[0]))
    again = store.import_ground_truth(db, truth)
    assert (again["events"], again["unchanged"]) == (0, report["events"])


def test_jsonl_frame_level_and_changed_truth(two_videos):
    db, videos, tmp = two_videos
    (va, fa), _ = videos.items()
    truth = tmp / "truth.jsonl"
    truth.write_text("\n".join(json.dumps({"video_id": va, "frame_index": i, "label": i % 2 == 0})
                               for i in (0, 15, 30)) + "\n\n")
    assert store.import_ground_truth(db, truth)["events"] == 3
    truth.write_text(json.dumps({"video_id": va, "frame_index": 0, "sludge": False}) + "\n")
    report = store.import_ground_truth(db, truth)
    assert report["events"] == 1
    history = store.label_history(db, fa[0], "sludge")
    assert [(e.old_value, e.new_value) for e in history] == [(None, True), (True, False)]
    assert store.frame_revision(db, fa[0]) == 2
    missing = tmp / "missing.jsonl"
    missing.write_text(json.dumps({"video": va, "frame_index": 999, "sludge": True}) + "\n")
    assert store.import_ground_truth(db, missing)["unknown_frames"] == 1


def test_a_bad_row_imports_nothing(two_videos):
    db, videos, tmp = two_videos
    (va, _), _ = videos.items()
    truth = tmp / "bad.csv"
    truth.write_text(f"video,sludge,layout\n{va},1,vertical\n{va},1,diagonal\n")
    with pytest.raises(store.InvalidLabelError, match="row 2"):
        store.import_ground_truth(db, truth)
    assert db["label_events"].count == 0
    broken = tmp / "broken.jsonl"
    broken.write_text('{"video": "x", "sludge": true}\n{not json\n')
    with pytest.raises(store.InvalidLabelError, match="line 2"):
        store.import_ground_truth(db, broken)
    with pytest.raises(store.InvalidLabelError, match="names no video"):
        (tmp / "novideo.csv").write_text("sludge\n1\n")
        store.import_ground_truth(db, tmp / "novideo.csv")
    with pytest.raises(store.InvalidLabelError, match=".csv or .jsonl"):
        (tmp / "truth.xlsx").write_text("")
        store.import_ground_truth(db, tmp / "truth.xlsx")


def test_ambiguous_names_are_reported_not_guessed(tmp_path):
    db, videos = build_store(tmp_path, videos=2, frames_per_video=2, model_id=None)
    for i, video in enumerate(videos):
        db.execute("UPDATE videos SET name = 'same.mp4' WHERE id = ?", [video])
    truth = tmp_path / "t.csv"
    truth.write_text("video,sludge\nsame.mp4,1\n")
    report = store.import_ground_truth(db, truth)
    assert report["ambiguous_videos"] == ["same.mp4"] and report["events"] == 0
