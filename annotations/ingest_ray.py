"""Ingest a collection on Ray Data: the per-video steps of :mod:`annotations.ingest` as one pipeline.

    paths ─► decode (CPU tasks: validate, sample, PNG-encode the frames)
          ─► score (an actor pool, one model per actor, batches of frames across videos)
          ─► Parquet shards (predictions, frame PNGs, video meta) in a folder
          ─► merged into the SQLite store by the driver alone, one transaction per video

The store keeps one writer: the driver. The merge is idempotent (a video already stored with this model
version's predictions is skipped), and a run resumes: shards written by an earlier run and not merged yet
are merged first, and videos already in the store are left out of the pipeline before it starts.

Ray is imported only here and only when a run starts (``pip install "ray[data]==2.60.0"``); the app never
needs it.

    summary = ingest_with_ray(read_source("data/raw/crawl"), db, ModelSpec("models/tiny-vqwen-qformer"),
                              IngestConfig(), RayConfig(address="auto", gpus_per_actor=1))
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sqlite_utils

from annotations.ingest import (
    DECODE_ERROR,
    Collection,
    FailureReport,
    IngestConfig,
    IngestError,
    IngestSummary,
    VideoOutcome,
    open_progress_bar,
    check_config,
    decode_video,
    default_report_path,
    find_done_videos,
    hash_video,
    import_collection_truth,
    read_source,
    store_video,
)
from annotations.schema import StoreError
from core.config import REPO_ROOT, EngineConfig, ModelSpec, VideoLimits
from core.identity import identify_model

# Columns of a shard row: one row per frame, or one row per video that failed to decode (``code`` set).
SHARD_COLUMNS = ("key", "name", "video_id", "position", "count", "png", "time_s", "frame_index", "meta", "code",
                 "message", "p_sludge", "layout_scores")


@dataclass(frozen=True)
class RayConfig:
    """Where and how the Ray pipeline runs."""

    # None starts a local Ray on this machine; "auto" joins the cluster this machine belongs to;
    # "ray://host:10001" connects to a remote cluster's client server.
    address: str | None = None
    # Scoring actors, one model each. None: one per GPU share when gpus_per_actor > 0, else about half the
    # cluster's CPUs less one, at least one (decoding needs the rest).
    actors: int | None = None
    # GPUs per actor (1, or 0.5 to pack two small models on one GPU); 0 scores on CPU. None: 1 where the
    # cluster has GPUs, else 0.
    gpus_per_actor: float | None = None
    # CPUs per actor, also its torch thread count on CPU. Never every CPU of a node: Ray Data needs one
    # for reading blocks, or the pipeline can hang waiting for it.
    cpus_per_actor: float = 1.0
    # The Parquet shards' folder. None: next to the store, ingest-shards/<collection>/<model>-<frames>f.
    shards_dir: Path | None = None
    # CPUs of a local Ray started here (None: all of this machine's).
    local_cpus: int | None = None
    # Connecting to a cluster ships this repository (code and models/, not data/) as the job's working
    # directory, so the workers import the same code and find the embedded models.
    ship_code: bool = True


# ---------------------------------------------------------------- pipeline steps (run on Ray workers)


def decode_rows(row: dict, num_frames: int, limits: VideoLimits) -> list[dict]:
    """The decode task of one video: its frames as rows (pixels for the scorer, PNG bytes for the store),
    or one failure row carrying the error code and message.

    >>> rows = decode_rows({"key": "k", "name": "a.mp4", "path": "no/such.mp4", "data": None, "video_id": ""},
    ...                    16, VideoLimits())
    >>> rows[0]["code"], rows[0]["count"]
    ('missing_file', 0)
    """
    import tempfile

    from annotations.writes import encode_image

    base = {"key": row["key"], "name": row["name"]}
    data = row.get("data")
    if data is not None and len(data):
        with tempfile.NamedTemporaryFile(prefix="sludgelens-ray-", suffix=Path(row["name"]).suffix) as fh:
            fh.write(data)
            fh.flush()
            outcome = decode_video(row["key"], fh.name, num_frames, limits)
    else:
        outcome = decode_video(row["key"], row["path"], num_frames, limits)
    if outcome.status != "decoded":
        return [{**base, "video_id": outcome.video_id or row.get("video_id") or "", "position": -1, "count": 0,
                 "frame": np.zeros((1, 1, 3), np.uint8), "png": b"", "time_s": 0.0, "frame_index": -1, "meta": "{}",
                 "code": outcome.code or DECODE_ERROR, "message": outcome.message or ""}]
    meta = json.dumps(outcome.meta, sort_keys=True)
    return [{**base, "video_id": outcome.video_id, "position": i, "count": len(outcome.frames), "frame": frame,
             "png": encode_image(frame), "time_s": float(t), "frame_index": int(index), "meta": meta, "code": "",
             "message": ""}
            for i, (frame, t, index) in enumerate(zip(outcome.frames, outcome.timestamps, outcome.indices))]


class FrameScorer:
    """The scoring actor: one model, loaded once, scoring each batch of frames (from any videos) in one call.

    >>> scorer = FrameScorer("models/tiny-vqwen-qformer", None, "cpu", 1, "models/tiny…@3fa9…")  # doctest: +SKIP
    """

    def __init__(self, source: str, revision: str | None, device: str, threads: int, model_id: str):
        import torch

        from core.engine import load_model

        if device == "cpu":
            torch.set_num_threads(max(1, threads))
        self.lm = load_model(ModelSpec(source, revision), EngineConfig(device=device), progress=False)
        if self.lm.identity is None or self.lm.identity.id != model_id:
            got = self.lm.identity.id if self.lm.identity else None
            raise IngestError(f"the scoring actor loaded {got!r}, not {model_id!r}: the model differs on this node")

    def __call__(self, batch: dict) -> dict:
        from core.engine import score_frames

        n = len(batch["key"])
        ok = [i for i in range(n) if not batch["code"][i]]
        scores = score_frames(self.lm, [batch["frame"][i] for i in ok], batch_size=max(1, len(ok))) if ok else []
        p = np.full(n, -1.0)
        layouts = np.array(["{}"] * n, dtype=object)
        for i, score in zip(ok, scores):
            p[i] = score.p_sludge
            layouts[i] = json.dumps(score.layout_scores, sort_keys=True)
        out = {name: batch[name] for name in SHARD_COLUMNS if name in batch}
        out["p_sludge"] = p
        out["layout_scores"] = layouts
        return out


# ---------------------------------------------------------------- the driver


def default_shards_dir(db: sqlite_utils.Database, collection: str, model_id: str, num_frames: int) -> Path:
    """Where a run's shards go by default: next to the store, per collection, model version and frame count.

    >>> default_shards_dir(db, "crawl", "models/tiny-vqwen-qformer@3fa9c2d1e0b4", 16).name  # doctest: +SKIP
    'models_tiny-vqwen-qformer_3fa9c2d1e0b4-16f'
    """
    folder = Path(db.conn.execute("PRAGMA database_list").fetchone()[2] or ".").parent

    def safe(text: str) -> str:
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:120]

    return folder / "ingest-shards" / safe(collection) / f"{safe(model_id)}-{num_frames}f"


INDEX_COLUMNS = ("key", "video_id", "position", "count", "code", "message")


def index_shards(folder: Path) -> tuple[dict[str, dict], list[Path]]:
    """What the shards under a folder hold, without their images: per video key, the frame positions found,
    the frame count, the video id, a failure row if any, and the files; plus the readable files in order.

    A file that cannot be read (a write cut short) is deleted: its videos are not done and run again.

    >>> index, files = index_shards(Path("data/ingest-shards/crawl/m-16f"))  # doctest: +SKIP
    """
    import pyarrow.parquet as pq

    index: dict[str, dict] = {}
    readable = []
    for path in sorted(folder.rglob("*.parquet")) if folder.is_dir() else []:
        try:
            rows = pq.read_table(path, columns=list(INDEX_COLUMNS)).to_pylist()
        except Exception:  # noqa: BLE001 - a half-written shard: its videos are done again
            path.unlink(missing_ok=True)
            continue
        readable.append(path)
        for row in rows:
            entry = index.setdefault(row["key"], {"positions": set(), "count": 0, "video_id": "", "failure": None,
                                                  "files": set()})
            entry["files"].add(path)
            if row["code"]:
                entry["failure"] = row
            else:
                entry["positions"].add(row["position"])
                entry["count"], entry["video_id"] = row["count"], row["video_id"]
    return index, readable


def merge_shards(db: sqlite_utils.Database, folder: Path, collection: Collection, identity, report: FailureReport,
                 summary: IngestSummary, video_ids: dict[str, str], stored_now: set[str], done: set[str],
                 progress: bool = True) -> set[str]:
    """Merge every complete video in the shards into the store, one transaction each, as the one writer.

    Videos already done are skipped; a failure row goes to the report. Shards are read one file at a time
    (a video's frames may span files), so memory holds one file and the videos it leaves half-read. Shard
    files whose videos are all resolved are deleted. Returns the keys resolved (stored, skipped or failed).

    >>> merge_shards(db, shards, collection, identity, report, summary, {}, set(), set())  # doctest: +SKIP
    """
    import pyarrow.parquet as pq

    index, files = index_shards(folder)
    videos = {v.key: v for v in collection.videos}
    resolved: set[str] = set()
    to_store: set[str] = set()
    for key, entry in index.items():
        video = videos.get(key)
        complete = entry["count"] and len(entry["positions"]) == entry["count"]
        if video is None or not (complete or entry["failure"]):
            continue  # another source's video, or frames still missing: the pipeline runs it again
        if not complete:
            failure = entry["failure"]
            report.add_failure(video.name, video.path, failure["code"], failure["message"], collection.name)
            resolved.add(key)
        elif entry["video_id"] in done or entry["video_id"] in stored_now:
            summary.skipped += 1
            video_ids[key] = entry["video_id"]
            resolved.add(key)
        else:
            to_store.add(key)
    bar = open_progress_bar(len(to_store), f"merge {collection.name}", progress and bool(to_store))
    buffers: dict[str, dict[int, dict]] = {}
    for path in files:
        for row in pq.read_table(path, columns=list(SHARD_COLUMNS)).to_pylist():
            key = row["key"]
            if key not in to_store or row["code"]:
                continue
            buffer = buffers.setdefault(key, {})
            buffer[row["position"]] = row
            if len(buffer) < index[key]["count"]:
                continue
            del buffers[key]
            to_store.discard(key)
            resolved.add(key)
            bar.update(1)
            video = videos[key]
            ordered = [buffer[i] for i in range(index[key]["count"])]
            video_id = ordered[0]["video_id"]
            if video_id in stored_now:  # the same bytes under two names
                summary.skipped += 1
                video_ids[key] = video_id
                continue
            outcome = VideoOutcome(key=key, status="decoded", video_id=video_id,
                                   timestamps=[r["time_s"] for r in ordered],
                                   indices=[r["frame_index"] for r in ordered], meta=json.loads(ordered[0]["meta"]),
                                   images=[r["png"] for r in ordered])
            try:
                ids = store_video(db, collection.store_source(video), video.name, outcome, identity,
                                  [r["p_sludge"] for r in ordered], [json.loads(r["layout_scores"]) for r in ordered],
                                  collection.name)
            except (StoreError, OSError) as error:
                code = "store_error" if isinstance(error, StoreError) else "read_error"
                report.add_failure(video.name, video.path, code, str(error), collection.name)
                continue
            summary.stored += 1
            summary.frames += len(ids)
            stored_now.add(video_id)
            video_ids[key] = video_id
    bar.close()
    for path in files:
        if all(key in resolved for key, entry in index.items() if path in entry["files"]):
            path.unlink(missing_ok=True)
    return resolved


def resolve_gpus_per_actor(ray_config: RayConfig, resources: dict) -> float:
    """GPUs per scoring actor: as configured, else 1 where the cluster has GPUs and 0 where it has none.

    >>> resolve_gpus_per_actor(RayConfig(), {"GPU": 8.0, "CPU": 64.0})
    1.0
    >>> resolve_gpus_per_actor(RayConfig(), {"CPU": 2.0})
    0.0
    """
    if ray_config.gpus_per_actor is not None:
        return float(ray_config.gpus_per_actor)
    return 1.0 if resources.get("GPU", 0) > 0 else 0.0


def default_actor_count(ray_config: RayConfig, resources: dict) -> int:
    """Scoring actors when none is asked for: one per GPU share, else about half the CPUs less one.

    >>> default_actor_count(RayConfig(gpus_per_actor=1), {"GPU": 4.0, "CPU": 32.0})
    4
    >>> default_actor_count(RayConfig(), {"CPU": 2.0})
    1
    """
    gpus = resolve_gpus_per_actor(ray_config, resources)
    if gpus > 0:
        return max(1, int(resources.get("GPU", 0) // gpus))
    cpus = resources.get("CPU", 1.0)
    return max(1, int((cpus - 1) // (2 * ray_config.cpus_per_actor)))


def start_ray(ray_config: RayConfig) -> bool:
    """Join the configured cluster, or start a local Ray; False when a Ray session was already running.

    >>> start_ray(RayConfig(local_cpus=2))  # doctest: +SKIP
    True
    """
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict = {"include_dashboard": False, "log_to_driver": False}
    if ray_config.address:
        kwargs["address"] = ray_config.address
        if ray_config.ship_code:
            kwargs["runtime_env"] = {"working_dir": str(REPO_ROOT),
                                     "excludes": ["data/", "test-artifacts/", ".git/", "**/__pycache__/"]}
    elif ray_config.local_cpus:
        kwargs["num_cpus"] = ray_config.local_cpus
    ray.init(**kwargs)
    return True


def ingest_with_ray(collection: Collection | str | os.PathLike, db: sqlite_utils.Database, model,
                    config: IngestConfig = IngestConfig(), ray_config: RayConfig = RayConfig()) -> IngestSummary:
    """Ingest a collection with the Ray engine: decode tasks, scoring actors, Parquet shards, one merge here.

    ``model`` is a ModelSpec or a folder (each actor loads its own copy; a LoadedModel stands for its spec).

    >>> ingest_with_ray(read_source("data/raw/crawl"), db, ModelSpec("models/tiny-vqwen-qformer"),
    ...                 IngestConfig(), RayConfig(local_cpus=2)).describe()  # doctest: +SKIP
    'crawl: 200 videos: 200 stored, 0 already done, 0 failed in 95.0 s (2.11 videos/s)'
    """
    if not isinstance(collection, Collection):
        collection = read_source(collection)
    config = check_config(config)
    if not isinstance(model, ModelSpec):
        model = getattr(model, "spec", None) or ModelSpec(os.fspath(model))
    if (ray_config.gpus_per_actor or 0) < 0 or ray_config.cpus_per_actor <= 0:
        raise IngestError("gpus_per_actor must be at least 0 and cpus_per_actor more than 0")
    if ray_config.actors is not None and ray_config.actors < 1:
        raise IngestError(f"actors must be a whole number of at least 1, not {ray_config.actors!r}")
    try:
        import ray
    except ImportError:
        raise IngestError('the ray engine needs Ray Data: pip install "ray[data]==2.60.0"') from None
    identity = identify_model(model)
    started = time.perf_counter()
    summary = IngestSummary(collection=collection.name, model_id=identity.id, engine="ray",
                            total=len(collection.videos), left_out=dict(collection.left_out))
    report = FailureReport(config.report_path or default_report_path(db, collection.name))
    summary.report_path = str(report.path)
    shards = Path(ray_config.shards_dir or default_shards_dir(db, collection.name, identity.id, config.num_frames))
    video_ids: dict[str, str] = {}
    stored_now: set[str] = set()
    done = find_done_videos(db, identity.id)
    # Shards an earlier run wrote and did not merge go in first.
    resolved = merge_shards(db, shards, collection, identity, report, summary, video_ids, stored_now, done,
                            config.progress)
    summary.resumed = len(stored_now)
    done |= stored_now
    rows = []
    for video in collection.videos:
        if video.key in resolved:
            continue
        try:
            if video.row is None:
                video_id = hash_video(video.path, config.limits)
                data = None
            else:
                data = collection.read_bytes(video)
                video_id = hash_bytes(data)
        except Exception as error:  # noqa: BLE001 - reported per file, like a decode failure
            code = getattr(error, "code", "read_error")
            report.add_failure(video.name, video.path, code, " ".join(str(error).split()), collection.name)
            continue
        if video_id in done:
            summary.skipped += 1
            video_ids[video.key] = video_id
            continue
        rows.append({"key": video.key, "name": video.name, "path": video.path or "", "data": data,
                     "video_id": video_id})
    if rows:
        started_here = start_ray(ray_config)
        try:
            run_pipeline(rows, shards, identity, model, config, ray_config)
        finally:
            if started_here:
                ray.shutdown()
        merge_shards(db, shards, collection, identity, report, summary, video_ids, stored_now, done, config.progress)
    summary.truth = import_collection_truth(db, collection, video_ids)
    summary.failed_by_code = dict(report.by_code)
    summary.seconds = time.perf_counter() - started
    report.close(summary)
    return summary


def hash_bytes(data: bytes) -> str:
    """The sha256 of a video's bytes (the store's id for it).

    >>> hash_bytes(b"")[:12]
    'e3b0c44298fc'
    """
    import hashlib

    return hashlib.sha256(data).hexdigest()


def run_pipeline(rows: list[dict], shards: Path, identity, model: ModelSpec, config: IngestConfig,
                 ray_config: RayConfig) -> None:
    """Decode, score and write the shards of ``rows`` (one per video) on the running Ray session.

    >>> run_pipeline([{"key": "k", "name": "a.mp4", "path": "/data/a.mp4", "data": None, "video_id": "9f86…"}],
    ...              Path("shards"), identity, spec, IngestConfig(), RayConfig())  # doctest: +SKIP
    """
    import ray

    resources = ray.cluster_resources()
    actors = ray_config.actors or default_actor_count(ray_config, resources)
    gpus = resolve_gpus_per_actor(ray_config, resources)
    gpu = gpus > 0
    source = model.source
    if ray_config.address and ray_config.ship_code:
        # The workers run in a copy of this repository: a folder inside it goes by its relative path.
        folder = Path(source).resolve()
        if folder.is_dir() and folder.is_relative_to(REPO_ROOT):
            source = folder.relative_to(REPO_ROOT).as_posix()
    elif Path(source).is_dir():
        source = str(Path(source).resolve())
    # One decoded video's pixels at the sizes the limits allow, twice over: what a decode task may hold.
    # Its own memory request also keeps decoding in tasks of its own rather than fused into the actors.
    side = config.limits.max_side
    decode_memory = int(min(2 * config.num_frames * side * side * 3 // 4, 4 * 2**30))
    shards.mkdir(parents=True, exist_ok=True)
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
    dataset = dataset.flat_map(decode_rows, fn_kwargs={"num_frames": config.num_frames, "limits": config.limits},
                               num_cpus=1, memory=decode_memory)
    dataset = dataset.map_batches(
        FrameScorer, fn_constructor_kwargs={"source": source, "revision": model.revision,
                                            "device": "cuda" if gpu else "cpu",
                                            "threads": max(1, int(ray_config.cpus_per_actor)),
                                            "model_id": identity.id},
        batch_size=config.batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=ray_config.cpus_per_actor, num_gpus=gpus if gpu else None)
    dataset.write_parquet(str(shards))

