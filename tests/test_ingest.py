"""`python -m annotations ingest` with the local engine: real clips encoded with PyAV, real bad files, real worker
processes, the embedded model, a real SQLite store; a run killed with SIGKILL and resumed."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ingest_helpers import (BAD_FILES, compare_stores, decode_and_tell_niceness, decode_or_crash,
                            decode_with_unreadable_frames, store_contents, write_bad_files, write_clip_as, write_clips)

import annotations as store
from annotations.__main__ import main
from annotations.analyses import record_analysis
from annotations.ingest import (IngestConfig, IngestError, _decode_in_worker, _start_worker, choose_resize,
                                decode_video, ingest, read_source)
from core.config import EngineConfig, ModelSpec, VideoLimits, load_settings
from core.engine import load_model
from core.resize import plan_resize
from core.video import sample_frames

REPO = Path(__file__).resolve().parent.parent
FRAMES = 4


@pytest.fixture(scope="module")
def lm():
    return load_model(load_settings().model)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """crawl/: five clips at the top, two in a subfolder, and the bad files."""
    root = tmp_path_factory.mktemp("src") / "crawl"
    write_clips(root, 5)
    write_clips(root / "more", 2, seed=50, prefix="deep")
    write_bad_files(root)
    return root


def open_db(path: Path):
    return store.open_store(path / "s.db", path / "media")


def config(tmp_path: Path, **kw) -> IngestConfig:
    return IngestConfig(num_frames=FRAMES, batch_size=6, progress=False, report_path=tmp_path / "report.jsonl", **kw)


def read_report(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_folder_is_ingested_with_every_bad_file_reported_and_a_rerun_skips_it_all(lm, folder, tmp_path):
    db = open_db(tmp_path)
    summary = ingest(read_source(folder), db, lm, config(tmp_path))
    assert (summary.collection, summary.total, summary.stored, summary.skipped) == ("crawl", 10, 7, 0)
    assert summary.failed_by_code == {code: 1 for code in BAD_FILES.values()}
    failures = [r for r in read_report(tmp_path / "report.jsonl") if r["kind"] == "failure"]
    assert {r["name"]: r["code"] for r in failures} == BAD_FILES
    assert all(r["message"] and r["path"].endswith(r["name"]) for r in failures)
    assert read_report(tmp_path / "report.jsonl")[-1]["kind"] == "summary"

    videos = store.list_videos(db, "crawl")
    assert sorted(v["name"] for v in videos) == ["clip_00.mp4", "clip_01.mp4", "clip_02.mp4", "clip_03.mp4",
                                                 "clip_04.mp4", "more/deep_00.mp4", "more/deep_01.mp4"]
    assert store.list_collections(db) == [{"collection": "crawl", "videos": 7, "frames": 7 * FRAMES}]
    assert len(store.frames_scored_by(db, lm.identity.id)) == 7 * FRAMES

    # The same steps as an upload: the app's one-video path gives the same frames and predictions.
    single = open_db(tmp_path / "single")
    for name in ("clip_00.mp4", "more/deep_01.mp4"):
        record_analysis(lm, single, folder / name, num_frames=FRAMES, name=name, collection="crawl")
    compare_stores(store_contents(db), store_contents(single), subset=True)

    # A rerun hashes each file, finds it done and skips it before decoding: nothing new in the store.
    counts = {t: db[t].count for t in ("videos", "frames", "predictions", "label_events")}
    again = ingest(read_source(folder), db, ModelSpec(str(load_settings().model.source)),
                   config(tmp_path / "again"))
    assert (again.stored, again.skipped, again.failed) == (0, 7, 3)
    assert {t: db[t].count for t in counts} == counts


def test_decode_workers_resize_the_frames_of_a_model_on_the_cpu_and_of_none_on_a_gpu(lm, folder, tmp_path):
    plan = plan_resize(lm.processor.image_processor)
    assert plan is not None and choose_resize(IngestConfig(), lm, None) == plan
    spec = ModelSpec(str(load_settings().model.source))
    assert choose_resize(IngestConfig(), None, spec, EngineConfig(device="cpu")) == plan  # read, not loaded
    assert choose_resize(IngestConfig(), None, spec, EngineConfig(device="cuda")) is None
    assert choose_resize(IngestConfig(resize_in_workers=False), lm, None) is None

    # What one worker does with a file: decode, encode the images, resize for the model.
    _start_worker(frozenset(), decode_video, str(tmp_path / "media"), 0, plan)
    try:
        outcome = _decode_in_worker("k", str(folder / "clip_00.mp4"), FRAMES, VideoLimits())
    finally:
        _start_worker(frozenset(), decode_video, None, 0, None)
    assert outcome.status == "decoded" and len(outcome.saved) == FRAMES
    assert all((tmp_path / "media" / image.path).is_file() for image in outcome.saved)
    assert outcome.resized.dtype.name == "uint8" and outcome.resized.shape == (FRAMES, 3, 224, 224)
    assert outcome.frames is None  # nothing in the model's process needs them: not sent back

    # Resized in the workers or not, the store ends the same.
    stores = []
    for resize in (True, False):
        db = open_db(tmp_path / f"resize-{resize}")
        summary = ingest(read_source(folder), db, lm, config(tmp_path / f"resize-{resize}", resize_in_workers=resize))
        assert summary.stored == 7
        stores.append(store_contents(db))
    compare_stores(stores[0], stores[1], tolerance=0)


def test_a_folder_takes_older_containers_and_counts_the_files_it_leaves_out(lm, tmp_path):
    root = tmp_path / "archive"
    write_clip_as(root / "old" / "talk.ogv", "libvpx", seed=3)
    write_clip_as(root / "tv.MPG", "mpeg1video", seed=4)
    write_clip_as(root / "cam.wmv", "wmv2", seed=5)
    write_clip_as(root / "old" / "00001.MTS", "mpeg2video", seed=6)
    (root / "README.txt").write_text("clips from the archive\n")
    (root / "old" / "talk.ogv.gz").write_bytes(b"\x1f\x8b\x08\x00")
    (root / "old" / "LICENSE").write_text("CC-BY\n")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    collection = read_source(root)
    assert [v.name for v in collection.videos] == ["cam.wmv", "old/00001.MTS", "old/talk.ogv", "tv.MPG"]
    assert collection.left_out == {".txt": 1, ".gz": 1, "": 1}

    db = open_db(tmp_path)
    summary = ingest(collection, db, lm, config(tmp_path))
    assert (summary.stored, summary.failed) == (4, 0)
    assert summary.to_dict()["left_out"] == {"": 1, ".gz": 1, ".txt": 1}
    assert "; 3 other files left out (no suffix: 1, .gz: 1, .txt: 1); " in summary.describe()
    # Where the main thread's time went: every stage counted, all of it inside the run.
    assert set(summary.waits) == {"decoding", "model", "storing"}
    assert summary.waits["model"] > 0 and summary.waits["storing"] > 0
    assert sum(summary.waits.values()) <= summary.seconds
    assert summary.describe().endswith(" s storing")
    assert {v["name"] for v in store.list_videos(db, "archive")} == {"cam.wmv", "old/00001.MTS", "old/talk.ogv",
                                                                     "tv.MPG"}
    assert len(store.frames_scored_by(db, lm.identity.id)) == 4 * FRAMES


def test_a_glob_takes_the_files_it_matches(lm, folder, tmp_path):
    db = open_db(tmp_path)
    summary = ingest(read_source(str(folder / "*.mp4"), collection="top"), db, lm, config(tmp_path))
    assert (summary.collection, summary.stored) == ("top", 5)
    assert summary.failed_by_code == {"not_media": 1, "image_not_video": 1}  # empty.mov does not match
    assert len(store.list_videos(db, "top")) == 5
    deep = read_source(str(folder / "**" / "deep_*.mp4"))
    assert (deep.name, [v.name for v in deep.videos]) == ("crawl", ["more/deep_00.mp4", "more/deep_01.mp4"])


def test_a_manifest_brings_raw_ground_truth_imported_by_video_id(lm, folder, tmp_path):
    db = open_db(tmp_path)
    # Another video of the same name is already in the store: the import names videos by sha256, so the
    # names' ambiguity never matters.
    store.add_video(db, b"some other upload", "clip_00.mp4")
    manifest = tmp_path / "labels" / "truth.csv"
    manifest.parent.mkdir()
    relative = os.path.relpath(folder / "clip_00.mp4", manifest.parent)
    first_index = sample_frames(folder / "clip_01.mp4", FRAMES).indices[0]
    rows = [
        {"path": relative, "sludge": "yes", "layout": "vertical", "frame_index": ""},
        {"path": str(folder / "clip_01.mp4"), "sludge": "no", "layout": "", "frame_index": ""},
        {"path": str(folder / "clip_01.mp4"), "sludge": "yes", "layout": "pip", "frame_index": "-1"},
        {"path": str(folder / "clip_02.mp4"), "sludge": "", "layout": "", "frame_index": ""},
        {"path": str(folder / "notes.mp4"), "sludge": "yes", "layout": "", "frame_index": ""},
    ]
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "sludge", "layout", "frame_index"])
        writer.writeheader()
        writer.writerows(rows)
    # A frame_index of -1 is refused before anything is written.
    with pytest.raises(IngestError, match=r"truth.csv row 3: frame_index must be a whole number"):
        read_source(manifest)
    assert db["videos"].count == 1

    rows[2]["frame_index"] = str(first_index)
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "sludge", "layout", "frame_index"])
        writer.writeheader()
        writer.writerows(rows)
    summary = ingest(read_source(manifest), db, lm, config(tmp_path))
    assert (summary.collection, summary.stored, summary.failed_by_code) == ("truth", 3, {"not_media": 1})
    assert summary.truth["unknown_videos"] == [] and summary.truth["ambiguous_videos"] == []
    assert summary.truth["left_out_rows"] == 1  # notes.mp4 failed, so its row has no video
    by_name = {v["name"]: v["id"] for v in store.list_videos(db, "truth")}
    truth = store.truth_labels(db, "raw-gt", collection="truth")
    clip0 = [t for t in truth.values() if t["video_id"] == by_name[relative]]
    assert len(clip0) == FRAMES and all(t["sludge"] and t["layout"] == "vertical" for t in clip0)
    labels = store.current_labels(db, video_id=by_name[str(folder / "clip_01.mp4")])
    assert [(r["sludge"], r["layout"]) for r in labels] == [(True, "pip")] + [(False, None)] * (FRAMES - 1)
    assert all(r["sludge"] is None for r in store.current_labels(db, video_id=by_name[str(folder / "clip_02.mp4")]))

    events = db["label_events"].count
    again = ingest(read_source(manifest), db, lm, config(tmp_path / "again"))
    assert (again.stored, again.skipped, again.truth["events"]) == (0, 3, 0)
    assert db["label_events"].count == events


def test_saved_datasets_with_video_bytes_and_with_paths(lm, folder, tmp_path):
    import datasets

    clips = sorted(folder.glob("clip_*.mp4"))
    features = datasets.Features({"video": datasets.Video(), "sludge": datasets.Value("bool")})
    data = {"video": [{"path": "inline_a.mp4", "bytes": clips[0].read_bytes()},
                      {"path": "broken.mp4", "bytes": b"not a video at all"}],
            "sludge": [True, True]}
    saved = tmp_path / "tiktok-ds"
    datasets.Dataset.from_dict(data, features=features).save_to_disk(str(saved))
    db = open_db(tmp_path)
    summary = ingest(read_source(saved), db, lm, config(tmp_path))
    assert (summary.collection, summary.stored, summary.failed_by_code) == ("tiktok-ds", 1, {"not_media": 1})
    [video] = store.list_videos(db, "tiktok-ds")
    assert (video["name"], video["source_path"], video["size_bytes"]) == ("inline_a.mp4", None, clips[0].stat().st_size)
    truth = store.truth_labels(db, "raw-gt", collection="tiktok-ds")
    assert [t["sludge"] for t in truth.values()] == [True] * FRAMES

    # A column of paths: relative ones are resolved against the dataset's folder.
    paths = tmp_path / "paths-ds"
    relative = os.path.relpath(clips[1], paths)
    datasets.Dataset.from_dict({"path": [relative], "layout": ["pip"]}).save_to_disk(str(paths))
    summary = ingest(read_source(paths), db, lm, config(tmp_path / "paths"))
    assert (summary.collection, summary.stored) == ("paths-ds", 1)
    [video] = store.list_videos(db, "paths-ds")
    assert (video["name"], video["source_path"]) == (relative, str(clips[1].resolve()))
    assert [(r["layout"], r["layout_labeler"]) for r in store.current_labels(db, video_id=video["id"])] == \
        [("pip", "raw-gt")] * FRAMES


def test_a_run_killed_with_sigkill_resumes_to_the_same_store_as_an_uninterrupted_one(lm, tmp_path):
    clips = tmp_path / "kill-me"
    write_clips(clips, 10, seed=100)
    killed = tmp_path / "killed"
    killed.mkdir()
    command = [sys.executable, "-m", "annotations", "--db", str(killed / "s.db"), "--media", str(killed / "media"),
               "ingest", str(clips), "--frames", str(FRAMES), "--batch-size", "4", "--workers", "1", "--no-progress",
               "--report", str(killed / "first.jsonl")]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    watcher = None
    stored_at_kill = 0
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if (killed / "s.db").exists():
                watcher = watcher or store.connect_store(killed / "s.db", killed / "media")
                try:
                    stored_at_kill = watcher["videos"].count
                except Exception:  # the schema is not there yet
                    stored_at_kill = 0
                if stored_at_kill >= 2:
                    break
            time.sleep(0.01)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the run, its worker processes and their decoders
        process.wait()
    assert 2 <= stored_at_kill < 10, f"the run was not caught mid-way: {stored_at_kill} stored"
    watcher.close()

    # Whatever was committed is whole: every stored video has all its frames and predictions.
    db = open_db(killed)
    before = store.list_videos(db)
    for video in before:
        frames = store.video_frames(db, video["id"], lm.identity.id)
        assert len(frames) == FRAMES and all(f["prediction"] is not None for f in frames)
    assert stored_at_kill <= len(before) < 10
    resumed = ingest(read_source(clips), db, lm, config(killed))
    assert (resumed.skipped, resumed.stored, resumed.failed) == (len(before), 10 - len(before), 0)

    straight = open_db(tmp_path / "straight")
    ingest(read_source(clips), straight, lm, config(tmp_path / "straight"))
    compare_stores(store_contents(db), store_contents(straight))


def test_a_worker_crash_is_reported_and_the_run_goes_on(lm, tmp_path):
    clips = tmp_path / "crashy"
    write_clips(clips, 4, seed=200)
    (clips / "clip_01.mp4").rename(clips / "crash_here.mp4")
    db = open_db(tmp_path)
    summary = ingest(read_source(clips), db, lm, config(tmp_path, workers=2), decode=decode_or_crash)
    assert (summary.stored, summary.failed_by_code) == (3, {"worker_crash": 1})
    [failure] = [r for r in read_report(tmp_path / "report.jsonl") if r["kind"] == "failure"]
    assert failure["name"] == "crash_here.mp4" and "died" in failure["message"]
    assert sorted(v["name"] for v in store.list_videos(db)) == ["clip_00.mp4", "clip_02.mp4", "clip_03.mp4"]


def test_scoring_overlapped_with_storing_fills_the_same_store_and_fails_the_same_video(lm, tmp_path):
    # Five clips of 4 frames in batches of 6: batches straddle videos, and the third clip's frames break the
    # batches they are in. Overlapped (the default on a GPU), a batch scores in a thread while the one
    # before it is stored: the same videos, frames, predictions and failure as one batch after the other.
    clips = tmp_path / "clips"
    write_clips(clips, 5, seed=400)
    (clips / "clip_02.mp4").rename(clips / "broken_02.mp4")
    contents, failures = [], []
    for overlap in (False, True):
        root = tmp_path / f"overlap-{overlap}"
        db = open_db(root)
        summary = ingest(read_source(clips), db, lm, config(root, workers=2, overlap_scoring=overlap),
                         decode=decode_with_unreadable_frames)
        assert (summary.stored, summary.failed_by_code) == (4, {"score_error": 1}), summary.describe()
        failures.append([(r["name"], r["code"]) for r in read_report(root / "report.jsonl") if r["kind"] == "failure"])
        contents.append(store_contents(db))
        assert "broken_02.mp4" not in {v["name"] for v in store.list_videos(db)}
    assert failures[0] == failures[1] == [("broken_02.mp4", "score_error")]
    compare_stores(contents[1], contents[0])


def test_decode_workers_run_at_a_lower_priority_than_the_model_process(lm, tmp_path):
    clips = tmp_path / "clips"
    write_clips(clips, 2, seed=300)
    db = open_db(tmp_path)
    summary = ingest(read_source(clips), db, lm, config(tmp_path, workers=2, worker_niceness=7),
                     decode=decode_and_tell_niceness)
    assert summary.failed_by_code == {"niceness": 2}
    here = os.nice(0)
    assert {r["message"] for r in read_report(tmp_path / "report.jsonl") if r["kind"] == "failure"} == {
        str(min(19, here + 7))}
    assert os.nice(0) == here and db["videos"].count == 0
    with pytest.raises(IngestError, match="worker_niceness must be a whole number from 0 to 19, not 20"):
        ingest(read_source(clips), db, lm, config(tmp_path, worker_niceness=20))


def test_sources_and_arguments_that_cannot_be_ingested_are_refused_before_anything_is_written(tmp_path, capsys):
    (tmp_path / "nothing").mkdir()
    (tmp_path / "no-path.jsonl").write_text(json.dumps({"file": "a.mp4"}) + "\n")
    (tmp_path / "bad-layout.jsonl").write_text(json.dumps({"path": "a.mp4", "layout": "diagonal"}) + "\n")
    base = ["--db", str(tmp_path / "s.db"), "--media", str(tmp_path / "media"), "ingest"]
    cases = {
        str(tmp_path / "missing"): "no folder, manifest or dataset",
        str(tmp_path / "nothing"): "holds no videos",
        str(tmp_path / "*.webm"): "holds no videos",
        str(tmp_path / "no-path.jsonl"): "row 1 has no path",
        str(tmp_path / "bad-layout.jsonl"): "row 1: layout must be one of",
    }
    for source, words in cases.items():
        assert main(base + [source]) == 1
        assert words in capsys.readouterr().err
    assert main(base + [str(tmp_path / "nothing"), "--frames", "0"]) == 1
    assert "number of frames" in capsys.readouterr().err
    assert main(base + [str(tmp_path / "nothing"), "--batch-size", "0"]) == 1
    assert "batch_size must be" in capsys.readouterr().err
    db = open_db(tmp_path)
    assert db["videos"].count == 0 and not list(tmp_path.glob("ingest-*.jsonl"))
