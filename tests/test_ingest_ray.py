"""`ingest --engine ray` on a local Ray (2 CPUs, no dashboard, no network): the store ends as the local engine
leaves it, a rerun skips everything, and shards an interrupted run left behind are merged first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ingest_helpers import compare_stores, store_contents, write_bad_files, write_clips

import annotations as store
from annotations.__main__ import main
from annotations.ingest import IngestConfig, ingest, read_source
from annotations.ingest_ray import RayConfig, default_shards_dir, ingest_with_ray, run_pipeline
from core.config import load_settings
from core.identity import identify_model

ray = pytest.importorskip("ray")
FRAMES = 4


@pytest.fixture(scope="module")
def ray_session():
    # One scoring actor with one CPU leaves the other CPU to Ray Data's reads and the decode tasks.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray") / "crawl"
    write_clips(folder, 12, seed=300)
    write_bad_files(folder)
    return folder


def config(root: Path) -> IngestConfig:
    return IngestConfig(num_frames=FRAMES, batch_size=8, progress=False, report_path=root / "report.jsonl")


def test_the_ray_engine_leaves_the_store_the_local_engine_does(ray_session, clips, tmp_path, capsys):
    spec = load_settings().model
    local = store.open_store(tmp_path / "local" / "s.db", tmp_path / "local" / "media")
    ingest(read_source(clips), local, spec, config(tmp_path / "local"))

    db = store.open_store(tmp_path / "ray" / "s.db", tmp_path / "ray" / "media")
    ray_config = RayConfig(actors=1, cpus_per_actor=1)
    summary = ingest_with_ray(read_source(clips), db, spec, config(tmp_path / "ray"), ray_config)
    assert (summary.engine, summary.stored, summary.skipped, summary.resumed) == ("ray", 12, 0, 0)
    assert summary.failed_by_code == {"not_media": 1, "empty_file": 1, "image_not_video": 1}
    failures = [json.loads(line) for line in (tmp_path / "ray" / "report.jsonl").read_text().splitlines()]
    assert {f["name"] for f in failures if f["kind"] == "failure"} == {"notes.mp4", "empty.mov", "still.mp4"}
    compare_stores(store_contents(db), store_contents(local))
    shards = default_shards_dir(db, "crawl", identify_model(spec).id, FRAMES)
    assert not list(shards.rglob("*.parquet"))  # merged, then removed

    # A rerun, from the command line, finds every video in the store before any pipeline starts.
    counts = {t: db[t].count for t in ("videos", "frames", "predictions")}
    capsys.readouterr()
    assert main(["--db", str(tmp_path / "ray" / "s.db"), "--media", str(tmp_path / "ray" / "media"), "ingest",
                 str(clips), "--engine", "ray", "--frames", str(FRAMES), "--actors", "1", "--no-progress",
                 "--report", str(tmp_path / "again.jsonl")]) == 0
    again = json.loads(capsys.readouterr().out.split("\n", 2)[2])
    assert (again["engine"], again["stored"], again["skipped"], again["failed"]) == ("ray", 0, 12, 3)
    assert {t: db[t].count for t in counts} == counts


def test_shards_an_interrupted_run_left_are_merged_first(ray_session, clips, tmp_path):
    spec = load_settings().model
    identity = identify_model(spec)
    db = store.open_store(tmp_path / "s.db", tmp_path / "media")
    collection = read_source(clips)
    shards = default_shards_dir(db, collection.name, identity.id, FRAMES)
    # What a run killed after its pipeline wrote shards, and before the driver merged them, leaves behind.
    first = [{"key": v.key, "name": v.name, "path": v.path, "data": None, "video_id": ""}
             for v in collection.videos[:3]]
    run_pipeline(first, shards, identity, spec, config(tmp_path), RayConfig(actors=1))
    assert list(shards.rglob("*.parquet")) and db["videos"].count == 0

    summary = ingest_with_ray(collection, db, spec, config(tmp_path), RayConfig(actors=1))
    assert (summary.resumed, summary.stored, summary.skipped) == (3, 12, 0)
    assert len(store.list_videos(db, "crawl")) == 12 and not list(shards.rglob("*.parquet"))
