"""Ingest a whole collection of videos into the store in one run: sample, score and store every video.

A source is a folder (searched recursively for video files), a glob, a CSV/JSONL manifest with a ``path``
column (and optional raw ground truth), or a ``datasets`` dataset saved with ``save_to_disk``. Every video
goes through the same steps as an upload: it is validated with the same typed errors
(:class:`core.video.VideoError`), sampled, scored, and stored with its frames and one model version's
predictions in one transaction (``add_analyzed_video``), under the collection's name.

The local engine (:func:`ingest`) decodes in a pool of worker processes that never import the model; the
model lives in this process and fills each batch of ``batch_size`` frames from whatever videos are decoded,
so it never waits on one video's decode, and this process is the store's one writer. The Ray engine
(:mod:`annotations.ingest_ray`) runs the same per-video steps (:func:`decode_video`, :func:`store_video`)
as a Ray Data pipeline.

A run is resumable and idempotent: a video counts as done when it is stored with frames and this model
version's predictions for all of them; each file is hashed before it is decoded and a done one is skipped.
A killed run loses at most the videos in flight. Failures are recorded per file, with their error code and
message, in a JSONL report, and never stop the run.

    collection = read_source("data/raw/crawl-2024")
    summary = ingest(collection, db, "models/tiny-vqwen-qformer")
    summary.stored, summary.failed_by_code            (196, {'corrupt_video': 3, 'not_media': 1})
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sqlite_utils

from annotations.imports import import_ground_truth, read_ground_truth_rows
from annotations.schema import InvalidLabelError, StoreError, utc_now
from annotations.writes import SavedImage, add_analyzed_video, encode_value, find_media_dir, save_frame_image
from core.config import ModelSpec, VideoLimits, check_frame_count
from core.identity import ModelIdentity, identify_model
from core.resize import ResizePlan, plan_resize, resize_frames
from core.video import VIDEO_EXTENSIONS

logger = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".csv", ".jsonl", ".ndjson")
# Raw ground-truth columns a manifest (or a dataset) row may carry besides its path.
TRUTH_FIELDS = ("sludge", "layout", "description")
# Error codes of failures that are not a VideoError of core.video.
WORKER_CRASH = "worker_crash"
DECODE_ERROR = "decode_error"
SCORE_ERROR = "score_error"


class IngestError(StoreError):
    """A source or an argument that cannot be ingested; nothing was written."""


@dataclass(frozen=True)
class IngestConfig:
    """How a collection is ingested."""

    # Frames sampled per video: 16 is what the vqwen card evaluates per clip, and what the app samples.
    num_frames: int = 16
    # Frames per model forward, filled across videos. Larger batches amortise the per-forward overhead that
    # dominates a small model on CPU; 32 is two default videos, small enough for a 16 GB machine.
    batch_size: int = 32
    # Decode processes. None: one per CPU, so no core sits idle while this process waits for frames. With
    # the embedded model on 2 cores, scoring and storing a video costs this process about 210 ms of CPU, and
    # the workers more (decoding and PNG-encoding took 225 ms before they also resized): two keep it busy.
    workers: int | None = None
    # Videos handed to each worker ahead of the model (on top of one batch's worth): enough that results
    # collected between two batches never leave a worker idle, few enough that memory holds a handful of
    # decoded videos per worker.
    in_flight_per_worker: int = 3
    # torch threads of the model while it ingests on CPU. None: the CPUs the decode workers leave (at least
    # one); more threads than free cores make torch's threads wait on each other. A large model scored on
    # CPU wants the opposite split: fewer workers, more threads.
    model_threads: int | None = None
    # How much less eagerly the OS runs the decode workers than this process (os.nice). The model's process
    # is the pipeline's narrowest step: when the workers ran at its priority, three busy processes shared two
    # cores and the model got two thirds of one; deprioritised, they fill the time the model leaves on the
    # cores (3.7 -> 4.8 videos/s in bench_ingest). 0 runs them as this process.
    worker_niceness: int = 10
    # Score the next batch in a background thread while this process stores the last one's videos and takes
    # in decoded ones. None: when the model runs on a GPU. There scoring is quick, and the stores and the
    # decoded frames arriving (CPU work of this process) would leave the GPU idle between batches; on a CPU
    # the two would only share the same cores. Overlapped, a SIGKILL loses at most two batches: the one
    # being scored and the one being stored.
    overlap_scoring: bool | None = None
    # Run the image processor's resize (and crop) in the decode workers (core.resize), so this process only
    # rescales and normalises: the resize is a fifth of the model's CPU work per frame, and this process is
    # the narrow step on a CPU. The resized frames cross as uint8, a fifth of the decoded frames' bytes (float
    # pixels, tried first, cost the workers more in copying than they saved here); the pixels are identical
    # to the whole processor's. None: when the model runs on the CPU; a GPU's processor resizes on the GPU.
    resize_in_workers: bool | None = None
    limits: VideoLimits = field(default_factory=VideoLimits)
    # The JSONL failure report; None: next to the store, named after the collection and the start time.
    report_path: Path | None = None
    # A tqdm progress bar (videos/s, ETA, failures) on stderr.
    progress: bool = True


@dataclass(frozen=True)
class SourceVideo:
    """One video of a source: a file (``path``), or a row of a saved dataset that holds its bytes (``row``)."""

    key: str  # unique within the source: the resolved path, or "row 12" of a dataset
    name: str  # the name it is stored under: the path as the source gives it
    path: str | None = None
    row: int | None = None


@dataclass
class Collection:
    """A source read into its videos, its raw ground truth rows, and the collection name they go under."""

    name: str
    source: str
    videos: list[SourceVideo]
    # Validated raw ground truth: {"key": SourceVideo.key, "frame_index": int | None, field: stored text}.
    truth: list[dict] = field(default_factory=list)
    # The truth file's name in the events' notes ("import <truth_name>:<row>").
    truth_name: str = ""
    dataset: object = None  # a datasets.Dataset whose ``video_column`` holds bytes
    video_column: str | None = None
    # Files under a folder source that are not videos by name: suffix ("" for none) -> count.
    left_out: dict[str, int] = field(default_factory=dict)

    def read_bytes(self, video: SourceVideo) -> bytes:
        """The bytes of a dataset row's video.

        >>> collection.read_bytes(collection.videos[0])[:8]  # doctest: +SKIP
        b'\\x00\\x00\\x00\\x20ftyp'
        """
        if video.row is None:
            return Path(video.path).read_bytes()
        return self.dataset[video.row][self.video_column]["bytes"]

    def store_source(self, video: SourceVideo) -> str | bytes:
        """What ``add_analyzed_video`` hashes and records: the file's path, or a dataset row's bytes."""
        return video.path if video.row is None else self.read_bytes(video)


@dataclass
class VideoOutcome:
    """What decoding one video gave: its frames, or a skip (already done), or a failure with its error code."""

    key: str
    status: str  # "decoded", "skipped" or "failed"
    video_id: str | None = None
    frames: np.ndarray | None = None
    timestamps: list[float] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    code: str | None = None
    message: str | None = None
    # The frames as PNG (encode_image's bytes), when the decode step encoded them already.
    images: list[bytes] | None = None
    # The frames' images written under the store's media folder already, when a decode worker did it.
    saved: list[SavedImage] | None = None
    # The frames at the model's input size (core.resize), when the decode step resized them. A worker that
    # saved the images and resized the frames sends no decoded frames back: nothing here needs them.
    resized: np.ndarray | None = None


@dataclass
class IngestSummary:
    """What a run did: counts, failures by error code, and where the report is."""

    collection: str
    model_id: str
    engine: str
    total: int = 0
    stored: int = 0
    skipped: int = 0
    failed_by_code: dict[str, int] = field(default_factory=dict)
    frames: int = 0
    # Videos stored from shards an earlier run of the Ray engine wrote and did not merge.
    resumed: int = 0
    seconds: float = 0.0
    report_path: str | None = None
    truth: dict | None = None
    # Files of a folder source left out as not videos by name (Collection.left_out).
    left_out: dict[str, int] = field(default_factory=dict)
    # Where the local engine's main thread spent the run, in seconds: waiting on the decode workers, on the
    # model (scoring in this thread, or waiting for the scoring thread), and storing. The one that dominates
    # says which knob helps: --workers, the batch size or the device, or the disk.
    waits: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(self.failed_by_code.values())

    def to_dict(self) -> dict:
        return {"collection": self.collection, "model_id": self.model_id, "engine": self.engine,
                "total": self.total, "stored": self.stored, "skipped": self.skipped, "failed": self.failed,
                "failed_by_code": dict(sorted(self.failed_by_code.items())), "frames": self.frames,
                "resumed": self.resumed, "seconds": round(self.seconds, 3), "report": self.report_path,
                "truth": self.truth, "left_out": dict(sorted(self.left_out.items())),
                "waits": {k: round(v, 3) for k, v in self.waits.items()}}

    def describe(self) -> str:
        """One line for a person.

        >>> IngestSummary("crawl", "tiny@1", "local", total=5, stored=3, skipped=1, failed_by_code={"not_media": 1},
        ...               seconds=2.0).describe()
        'crawl: 5 videos: 3 stored, 1 already done, 1 failed (not_media: 1) in 2.0 s (2.00 videos/s)'
        >>> IngestSummary("crawl", "tiny@1", "local", total=1, stored=1, seconds=1.0,
        ...               left_out={".gz": 2, "": 1}).describe().split("; ")[1]
        '3 other files left out (no suffix: 1, .gz: 2)'
        >>> IngestSummary("crawl", "tiny@1", "local", total=1, stored=1, seconds=9.0,
        ...               waits={"decoding": 1.0, "model": 6.5, "storing": 1.25}).describe().split("; ")[1]
        'of the 9.0 s, 1.0 s waiting on decoding, 6.5 s on the model, 1.2 s storing'
        """
        rate = (self.stored + self.skipped) / self.seconds if self.seconds > 0 else 0.0
        failures = ", ".join(f"{code}: {n}" for code, n in sorted(self.failed_by_code.items()))
        line = (f"{self.collection}: {self.total} videos: {self.stored} stored, {self.skipped} already done, "
                f"{self.failed} failed{f' ({failures})' if failures else ''} in {self.seconds:.1f} s "
                f"({rate:.2f} videos/s)")
        if self.left_out:
            kinds = ", ".join(f"{suffix or 'no suffix'}: {n}" for suffix, n in sorted(self.left_out.items()))
            line += f"; {sum(self.left_out.values())} other files left out ({kinds})"
        if self.waits:
            line += f"; of the {self.seconds:.1f} s, {self.describe_waits()}"
        return line

    def describe_waits(self) -> str:
        """Where the local engine's main thread spent the run (``waits``), for a person.

        >>> IngestSummary("crawl", "tiny@1", "local", waits={"decoding": 1.0, "model": 6.5}).describe_waits()
        '1.0 s waiting on decoding, 6.5 s on the model, 0.0 s storing'
        """
        return (f"{self.waits.get('decoding', 0):.1f} s waiting on decoding, {self.waits.get('model', 0):.1f} s on "
                f"the model, {self.waits.get('storing', 0):.1f} s storing")


# ---------------------------------------------------------------- sources


def read_source(source: str | os.PathLike, collection: str | None = None) -> Collection:
    """Read a folder, a glob, a CSV/JSONL manifest or a saved ``datasets`` dataset into a :class:`Collection`.

    The collection's name is ``collection``, else the folder's (or the glob's folder's, the manifest's,
    the dataset's) name. Raises IngestError for a source that does not exist, holds no videos, or has a
    manifest row it cannot use.

    >>> read_source("no/such/folder")
    Traceback (most recent call last):
    ...
    annotations.ingest.IngestError: no folder, manifest or dataset at 'no/such/folder', and it is not a glob
    """
    text = os.fspath(source)
    path = Path(text)
    if path.is_dir():
        if any((path / name).is_file() for name in ("state.json", "dataset_dict.json")):
            found = read_saved_dataset(path)
        else:
            found = read_folder(path)
    elif path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        found = read_manifest(path)
    elif path.is_file():
        raise IngestError(f"{text!r} is a file but not a manifest: a source is a folder, a glob, a "
                          f"{'/'.join(MANIFEST_SUFFIXES)} manifest or a saved datasets folder")
    elif glob.has_magic(text):
        found = read_glob(text)
    else:
        raise IngestError(f"no folder, manifest or dataset at {text!r}, and it is not a glob")
    if collection is not None:
        if not str(collection).strip():
            raise IngestError("the collection name cannot be empty")
        found.name = str(collection)
    if not found.videos:
        raise IngestError(f"{text!r} holds no videos ({', '.join(VIDEO_EXTENSIONS)})")
    return found


def read_folder(folder: str | os.PathLike) -> Collection:
    """Every video file under a folder, recursively, in path order; stored under its path in the folder. The
    other files are counted by suffix in ``left_out`` (hidden files, such as .DS_Store, are not counted).

    >>> [v.name for v in read_folder("data/raw/crawl").videos][:2]  # doctest: +SKIP
    ['a/clip1.mp4', 'clip2.mov']
    """
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    videos, left_out = [], Counter()
    for p in files:
        if p.suffix.lower() in VIDEO_EXTENSIONS:
            videos.append(SourceVideo(key=str(p.resolve()), name=p.relative_to(folder).as_posix(),
                                      path=str(p.resolve())))
        elif not p.name.startswith("."):
            left_out[p.suffix.lower()] += 1
    return Collection(name=folder.resolve().name, source=str(folder), videos=videos, left_out=dict(left_out))


def read_glob(pattern: str) -> Collection:
    """The files a glob matches (``**`` included), whatever their suffix: a file that is no video is refused
    per file, like an upload. The collection is named after the folder before the first wildcard.

    >>> read_glob("data/raw/crawl/*.mp4").name  # doctest: +SKIP
    'crawl'
    """
    base = Path(pattern)
    while glob.has_magic(str(base)):
        base = base.parent
    files = sorted({Path(p).resolve() for p in glob.glob(pattern, recursive=True) if Path(p).is_file()})
    root = base.resolve()
    videos = []
    for p in files:
        name = p.relative_to(root).as_posix() if p.is_relative_to(root) else p.name
        videos.append(SourceVideo(key=str(p), name=name, path=str(p)))
    return Collection(name=root.name or "glob", source=pattern, videos=videos)


def check_truth_row(row: dict, where: str) -> dict:
    """The raw ground truth of one manifest row, checked and in stored form ({} when it carries none).

    >>> check_truth_row({"path": "a.mp4", "sludge": "yes", "layout": "pip", "frame_index": "3"}, "row 1")
    {'frame_index': 3, 'sludge': '1', 'layout': 'pip'}
    >>> check_truth_row({"path": "a.mp4", "layout": "diagonal"}, "row 2")
    Traceback (most recent call last):
    ...
    annotations.ingest.IngestError: row 2: layout must be one of vertical, horizontal, pip, other, none, not 'diagonal'
    """
    values = {}
    for name in TRUTH_FIELDS:
        raw = row.get(name)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue
        try:
            values[name] = encode_value(name, raw.strip() if name != "description" and isinstance(raw, str) else raw)
        except InvalidLabelError as error:
            raise IngestError(f"{where}: {error}") from None
    if not values:
        return {}
    index = row.get("frame_index")
    if index is not None and not (isinstance(index, str) and not index.strip()):
        try:
            number = float(str(index).strip())
        except ValueError:
            number = -1.0
        if not number.is_integer() or number < 0:
            raise IngestError(f"{where}: frame_index must be a whole number of at least 0, not {index!r}")
        return {"frame_index": int(number), **values}
    return {"frame_index": None, **values}


def read_manifest(manifest: str | os.PathLike) -> Collection:
    """A CSV or JSONL manifest: a ``path`` per row (relative paths resolved against the manifest's folder),
    optionally with raw ground truth (``sludge``, ``layout``, ``description``, ``frame_index``). Several rows
    may name one path (one per labelled frame). Every row is checked before anything is ingested.

    >>> read_manifest("data/raw/truth.csv").truth[0]  # doctest: +SKIP
    {'key': '/data/raw/clips/a.mp4', 'frame_index': None, 'sludge': '1', 'layout': 'vertical'}
    """
    manifest = Path(manifest)
    try:
        rows = read_ground_truth_rows(manifest, "csv" if manifest.suffix.lower() == ".csv" else "jsonl")
    except InvalidLabelError as error:
        raise IngestError(str(error)) from None
    folder = manifest.resolve().parent
    videos: dict[str, SourceVideo] = {}
    truth = []
    for number, row in enumerate(rows, 1):
        where = f"{manifest.name} row {number}"
        raw = row.get("path")
        if raw is None or not str(raw).strip():
            raise IngestError(f"{where} has no path (a manifest needs a 'path' column)")
        given = str(raw).strip()
        path = (folder / given).resolve()
        key = str(path)
        videos.setdefault(key, SourceVideo(key=key, name=given, path=key))
        values = check_truth_row(row, where)
        if values:
            truth.append({"key": key, **values})
    return Collection(name=manifest.stem, source=str(manifest), videos=list(videos.values()), truth=truth,
                      truth_name=manifest.name)


def find_video_column(features) -> str:
    """The column of a dataset that holds its videos: a ``datasets.Video`` feature, else ``video`` or ``path``.

    >>> import datasets
    >>> find_video_column(datasets.Features({"clip": datasets.Video(), "label": datasets.Value("bool")}))
    'clip'
    """
    import datasets

    typed = [name for name, feature in features.items() if isinstance(feature, datasets.Video)]
    if len(typed) == 1:
        return typed[0]
    if len(typed) > 1:
        raise IngestError(f"the dataset has several video columns ({', '.join(typed)}); keep one")
    for name in ("video", "path", "file"):
        if name in features:
            return name
    raise IngestError(f"the dataset has no video column (a datasets.Video feature, or 'video' or 'path'); "
                      f"its columns are {', '.join(features)}")


def read_saved_dataset(folder: str | os.PathLike) -> Collection:
    """A ``datasets`` dataset saved with ``save_to_disk`` (every split of a DatasetDict): its video column
    holds paths (relative ones resolved against the dataset's folder) or ``{"path", "bytes"}``. Raw ground
    truth columns (``sludge``, ``layout``, ``description``, ``frame_index``) are read as a manifest's are.

    >>> len(read_saved_dataset("data/raw/crawl-ds").videos)  # doctest: +SKIP
    200
    """
    try:
        import datasets
    except ImportError:
        raise IngestError("reading a saved dataset needs the datasets package: pip install datasets==5.2.0") from None
    folder = Path(folder)
    loaded = datasets.load_from_disk(str(folder))
    splits = list(loaded.items()) if isinstance(loaded, datasets.DatasetDict) else [("", loaded)]
    parts = []
    for split, part in splits:
        column = find_video_column(part.features)
        if isinstance(part.features[column], datasets.Video):
            part = part.cast_column(column, datasets.Video(decode=False))
        parts.append((split, part, column))
    columns = {column for _, _, column in parts}
    if len(columns) > 1:
        raise IngestError(f"the splits keep their videos in different columns ({', '.join(sorted(columns))})")
    column = columns.pop()
    dataset = datasets.concatenate_datasets([p for _, p, _ in parts]) if len(parts) > 1 else parts[0][1]
    other = [name for name in ("frame_index", *TRUTH_FIELDS) if name in dataset.column_names]
    table = dataset.select_columns([column, *other]).with_format("arrow")[:]
    cells = table.column(column).to_pylist() if not table.schema.field(column).type.num_fields else None
    if cells is None:
        struct = table.column(column).combine_chunks()
        paths = struct.field("path").to_pylist()
        has_bytes = struct.field("bytes").is_valid().to_pylist()
    else:
        paths, has_bytes = cells, [False] * len(cells)
    truth_columns = {name: table.column(name).to_pylist() for name in other}
    base = folder.resolve()
    videos, truth, names = [], [], []
    for row, (given, inline) in enumerate(zip(paths, has_bytes)):
        where = f"{folder.name} row {row}"
        if inline:
            name = str(given) if given else f"row-{row:06d}.mp4"
            video = SourceVideo(key=f"row {row}", name=name, row=row)
        else:
            if not given:
                raise IngestError(f"{where} has neither a path nor the bytes of a video")
            path = (base / str(given)).resolve()
            video = SourceVideo(key=f"row {row}", name=str(given), path=str(path))
        videos.append(video)
        names.append(video.name)
        values = check_truth_row({name: truth_columns[name][row] for name in other}, where)
        if values:
            truth.append({"key": video.key, **values})
    return Collection(name=base.name, source=str(folder), videos=videos, truth=truth, truth_name=base.name,
                      dataset=dataset if any(has_bytes) else None, video_column=column)


# ---------------------------------------------------------------- the per-video steps


def hash_file(path: str | os.PathLike) -> str:
    """The sha256 of a file: the id the store keeps a video under.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as fh:
    ...     hash_file(fh.name)[:12]
    'e3b0c44298fc'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_video(path: str, limits: VideoLimits = VideoLimits()) -> str:
    """A video file's sha256, after refusing a missing, empty or too large file with the typed error an
    upload gets (before a byte of it is read).

    >>> hash_video("no/such.mp4")
    Traceback (most recent call last):
    ...
    core.video.MissingFileError: There is no file at 'no/such.mp4'.
    """
    size = os.path.getsize(path) if os.path.isfile(path) else None
    if size is None or size == 0 or size > limits.max_bytes:
        from core.video import probe_video

        probe_video(path, limits)  # raises the upload's refusal for exactly these cases
    return hash_file(path)


def decode_video(key: str, path: str, num_frames: int, limits: VideoLimits = VideoLimits(),
                 done: frozenset[str] | set[str] = frozenset()) -> VideoOutcome:
    """Hash a file, skip it when its video is in ``done``, else validate and sample it as an upload is.

    Never raises for a bad file: a refusal comes back as a failed outcome with the VideoError's code.

    >>> decode_video("k", "no/such.mp4", 16).code
    'missing_file'
    """
    from core.video import VideoError, sample_frames

    try:
        video_id = hash_video(path, limits)
        if video_id in done:
            return VideoOutcome(key=key, status="skipped", video_id=video_id)
        sampled = sample_frames(path, num_frames=num_frames, limits=limits)
    except VideoError as error:
        return VideoOutcome(key=key, status="failed", code=error.code, message=" ".join(str(error).split()))
    except Exception as error:  # noqa: BLE001 - one bad file never stops the run: it is reported instead
        return VideoOutcome(key=key, status="failed", code=DECODE_ERROR, message=f"{type(error).__name__}: {error}")
    meta = sampled.meta
    return VideoOutcome(
        key=key, status="decoded", video_id=video_id, frames=sampled.frames,
        timestamps=[float(t) for t in sampled.timestamps], indices=[int(i) for i in sampled.indices],
        meta={"duration_s": meta.duration_s, "fps": meta.fps, "width": meta.width, "height": meta.height,
              "codec": meta.codec, "rotation": meta.rotation})


def store_video(db: sqlite_utils.Database, source: str | bytes, name: str, outcome: VideoOutcome,
                identity: ModelIdentity, p_sludge: Sequence[float], layout_scores: Sequence[dict],
                collection: str, frames: np.ndarray | None = None) -> list[int]:
    """Store a decoded video, its frames and one model version's predictions in one transaction.

    ``frames`` replaces ``outcome.frames``; ``outcome.images``, when set, are the frames already encoded, and
    ``outcome.saved`` the images already written under the media folder.
    Returns the frame ids.

    >>> store_video(db, "clip.mp4", "clip.mp4", outcome, lm.identity, [0.9] * 16, scores, "crawl")  # doctest: +SKIP
    [1, 2, 3, ...]
    """
    frames = outcome.frames if frames is None else frames
    video_id, frame_ids = add_analyzed_video(
        db, source, name, outcome.meta, frames, outcome.timestamps, outcome.indices,
        (identity.id, identity.source, identity.revision), p_sludge, layout_scores, collection=collection,
        images=outcome.images, saved=outcome.saved)
    if outcome.video_id is not None and video_id != outcome.video_id:
        raise IngestError(f"{name} changed while it was ingested (sha256 {outcome.video_id[:12]}… when decoded, "
                          f"{video_id[:12]}… when stored); run the ingest again")
    return frame_ids


def find_done_videos(db: sqlite_utils.Database, model_id: str) -> set[str]:
    """Ids of the videos stored with frames and this model version's predictions for every one of them.

    >>> len(find_done_videos(db, "models/tiny-vqwen-qformer@3fa9c2d1e0b4"))  # doctest: +SKIP
    196
    """
    rows = db.execute(
        "SELECT v.id FROM videos v WHERE EXISTS (SELECT 1 FROM frames f WHERE f.video_id = v.id)"
        " AND NOT EXISTS (SELECT 1 FROM frames f WHERE f.video_id = v.id AND NOT EXISTS"
        " (SELECT 1 FROM predictions p WHERE p.frame_id = f.id AND p.model_id = ?))", [model_id])
    return {r[0] for r in rows}


def import_collection_truth(db: sqlite_utils.Database, collection: Collection,
                            video_ids: dict[str, str]) -> dict | None:
    """Import a collection's raw ground truth as labeler raw-gt, each row naming its video by sha256 id.

    ``video_ids`` maps a source video's key to its id; rows of videos that are not in the store (failed)
    are left out. Importing again writes nothing new. None when the collection carries no ground truth.

    >>> import_collection_truth(db, collection, {"/data/a.mp4": "9f86…"})["events"]  # doctest: +SKIP
    32
    """
    if not collection.truth:
        return None
    rows = []
    for row in collection.truth:
        video_id = video_ids.get(row["key"])
        if video_id is None:
            continue
        out = {"video": video_id}
        if row.get("frame_index") is not None:
            out["frame_index"] = row["frame_index"]
        out.update({k: row[k] for k in TRUTH_FIELDS if k in row})
        rows.append(out)
    left_out = len(collection.truth) - len(rows)
    if not rows:
        return {"rows": 0, "events": 0, "left_out_rows": left_out}
    with tempfile.TemporaryDirectory(prefix="sludgelens-truth-") as folder:
        # Named after the manifest, so each event's note says which file it came from.
        path = Path(folder) / (collection.truth_name or "truth")
        with open(path, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
        report = import_ground_truth(db, path, "jsonl")
    report["left_out_rows"] = left_out
    return report


# ---------------------------------------------------------------- the report


class FailureReport:
    """The JSONL report of a run: one line per failed file (appended and flushed as it happens, so a killed
    run keeps them), then one summary line.

    >>> report = FailureReport("/tmp/report.jsonl")  # doctest: +SKIP
    >>> report.add_failure("clip.mp4", "/data/clip.mp4", "not_media", "This is a text file.")  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")
        self.by_code: Counter[str] = Counter()

    def _write(self, record: dict) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()

    def add_failure(self, name: str, path: str | None, code: str, message: str, collection: str = "") -> None:
        self.by_code[code] += 1
        self._write({"kind": "failure", "name": name, "path": path, "code": code, "message": message,
                     "collection": collection, "at": utc_now()})

    def close(self, summary: IngestSummary | None = None) -> None:
        if summary is not None:
            self._write({"kind": "summary", "at": utc_now(), **summary.to_dict()})
        self._fh.close()


def default_report_path(db: sqlite_utils.Database, collection: str) -> Path:
    """Where a run's report goes by default: next to the store, named by the collection and the start time.

    >>> default_report_path(db, "crawl-2024").name  # doctest: +SKIP
    'ingest-crawl-2024-20240301T101500Z.jsonl'
    """
    folder = Path(db.conn.execute("PRAGMA database_list").fetchone()[2] or ".").parent
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in collection)[:80]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return folder / f"ingest-{safe}-{stamp}.jsonl"


def open_progress_bar(total: int, collection: str, enabled: bool):
    """A tqdm bar on stderr counting videos: it shows videos/s and the time left.

    >>> open_progress_bar(200, "crawl", enabled=False).total
    200
    """
    from tqdm import tqdm

    return tqdm(total=total, desc=f"ingest {collection}", unit="video", disable=not enabled, file=sys.stderr,
                dynamic_ncols=True)


# ---------------------------------------------------------------- the local engine


def count_available_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS tells, else the machine's count).

    >>> count_available_cpus() >= 1
    True
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _entries(take: list[tuple[dict, int]]) -> list[dict]:
    """The distinct videos of a batch of (video entry, frame position), in order."""
    seen: dict[int, dict] = {}
    for entry, _ in take:
        seen.setdefault(id(entry), entry)
    return list(seen.values())


_WORKER: dict = {"done": frozenset(), "decode": decode_video, "media_dir": None, "resize": None}


def _start_worker(done: frozenset[str], decode, media_dir: str | None, niceness: int = 0,
                  resize: ResizePlan | None = None) -> None:
    """Worker process start: the videos already done (skipped before decoding), the decode step, the media
    folder the frame images are written to, how much lower than this process the OS is to run it, and the
    plan of the model's image processor to resize frames with (None: they are not resized here)."""
    _WORKER.update(done=done, decode=decode, media_dir=media_dir, resize=resize)
    if niceness and hasattr(os, "nice"):
        os.nice(niceness)


def _decode_in_worker(key: str, path: str, num_frames: int, limits: VideoLimits) -> VideoOutcome:
    """One file in a worker: decode it, write its frame images and resize its frames for the model, so the
    model's process only scores and commits."""
    outcome = _WORKER["decode"](key, path, num_frames, limits, _WORKER["done"])
    if outcome.status != "decoded":
        return outcome
    if _WORKER["media_dir"] is not None:
        try:
            outcome.saved = [save_frame_image(_WORKER["media_dir"], frame) for frame in outcome.frames]
        except OSError as error:  # the media folder refused a write: the store's own write will say why
            logger.warning("frame images of %s not written ahead: %s", path, error)
    if _WORKER["resize"] is not None:
        try:
            outcome.resized = resize_frames(_WORKER["resize"], outcome.frames)
        except ValueError as error:  # frames the model's process prepares whole (and reports, if bad)
            logger.warning("frames of %s not resized ahead: %s", path, error)
    if outcome.saved is not None and outcome.resized is not None:
        outcome.frames = None  # 11 MB a video of 16 phone frames, not copied across for nothing
    return outcome


def _pool_context():
    # forkserver starts workers from a clean server process (no model, no threads of this one); spawn
    # where there is no forkserver.
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(["annotations.ingest"])
    return context


def resolve_model(model) -> tuple[ModelIdentity, object | None, ModelSpec | None]:
    """(identity, loaded model or None, spec to load lazily or None) for a LoadedModel, a ModelSpec or a path."""
    if isinstance(model, (str, os.PathLike)):
        model = ModelSpec(os.fspath(model))
    if isinstance(model, ModelSpec):
        return identify_model(model), None, model
    identity = getattr(model, "identity", None)
    if identity is None:
        raise IngestError("the model has no identity (load it with core.engine.load_model), so its predictions "
                          "cannot be stored")
    return identity, model, None


def ingest(collection: Collection | str | os.PathLike, db: sqlite_utils.Database, model,
           config: IngestConfig = IngestConfig(), engine_config=None, decode=decode_video) -> IngestSummary:
    """Ingest a collection with the local engine: decode in worker processes, score here, store here.

    ``model`` is a loaded model (``core.engine.load_model``), a ``ModelSpec`` or a folder; a spec is loaded
    only when a video needs scoring, so a run with nothing left to do never loads it. ``engine_config``
    (a ``core.config.EngineConfig``) is what a spec is loaded with. ``decode`` is the step the workers run
    per file, with :func:`decode_video`'s signature (a module-level function, so workers can import it).

    >>> ingest(read_source("data/raw/crawl"), db, lm, IngestConfig(num_frames=8)).describe()  # doctest: +SKIP
    'crawl: 200 videos: 200 stored, 0 already done, 0 failed in 81.0 s (2.47 videos/s)'
    """
    if not isinstance(collection, Collection):
        collection = read_source(collection)
    config = check_config(config)
    identity, lm, spec = resolve_model(model)
    started = time.perf_counter()
    summary = IngestSummary(collection=collection.name, model_id=identity.id, engine="local",
                            total=len(collection.videos), left_out=dict(collection.left_out))
    report = FailureReport(config.report_path or default_report_path(db, collection.name))
    summary.report_path = str(report.path)
    bar = open_progress_bar(summary.total, collection.name, config.progress)
    done = frozenset(find_done_videos(db, identity.id))
    resize_plan = choose_resize(config, lm, spec, engine_config)  # what the workers resize frames with
    workers = config.workers or count_available_cpus()
    video_ids: dict[str, str] = {}
    stored_now: set[str] = set()
    staging = tempfile.mkdtemp(prefix="sludgelens-ingest-") if collection.dataset is not None else None

    threads: list[int] = []  # torch's thread count before this run, to put back
    summary.waits = {"decoding": 0.0, "model": 0.0, "storing": 0.0}

    @contextmanager
    def time_stage(stage: str):
        started_stage = time.perf_counter()
        try:
            yield
        finally:
            summary.waits[stage] += time.perf_counter() - started_stage

    def load():
        nonlocal lm
        if lm is None:
            from core.config import EngineConfig
            from core.engine import load_model

            lm = load_model(spec, engine_config or EngineConfig(), progress=not config.progress)
        if not threads and lm.device.type == "cpu":
            import torch

            threads.append(torch.get_num_threads())
            torch.set_num_threads(config.model_threads or max(1, count_available_cpus() - workers))
        return lm

    def finish(video: SourceVideo, outcome: VideoOutcome) -> None:
        if outcome.status == "failed":
            report.add_failure(video.name, video.path, outcome.code, outcome.message, collection.name)
        elif outcome.status == "skipped" or outcome.video_id in stored_now:
            summary.skipped += 1
            video_ids[video.key] = outcome.video_id
        else:
            summary.stored += 1
            video_ids[video.key] = outcome.video_id
            stored_now.add(outcome.video_id)
        _drop_staged(video)
        bar.update(1)
        bar.set_postfix(failed=sum(report.by_code.values()), done_before=summary.skipped, refresh=False)

    def _drop_staged(video: SourceVideo) -> None:
        if staging is not None and video.row is not None:
            Path(staging, f"{video.row}").unlink(missing_ok=True)

    def path_for(video: SourceVideo) -> str:
        if video.row is None:
            return video.path
        staged = Path(staging, f"{video.row}")
        staged.write_bytes(collection.read_bytes(video))
        return str(staged)

    pending: deque = deque()  # (video entry, frame position): frames decoded and not yet scored

    def store(entry: dict) -> None:
        video, outcome = entry["video"], entry["outcome"]
        try:
            ids = store_video(db, collection.store_source(video), video.name, outcome, identity, entry["p"],
                              entry["layouts"], collection.name)
        except (StoreError, OSError) as error:
            code = "store_error" if isinstance(error, StoreError) else "read_error"
            finish(video, VideoOutcome(key=video.key, status="failed", code=code, message=str(error)))
            return
        summary.frames += len(ids)
        finish(video, outcome)

    scoring: deque = deque()  # (frames taken, future of their scores): launched, not yet applied
    scorer: list[ThreadPoolExecutor] = []  # the background thread, when scoring overlaps

    def score_take(model, take: list[tuple[dict, int]]) -> tuple[list, dict[int, str]]:
        """Scores of the frames taken, and per video entry (by id) what broke its frames: in the scoring
        thread, where it must not touch the entries, which this thread keeps writing to."""
        from core.engine import score_frames

        size = config.batch_size
        resized = resize_plan is not None

        def pixels(entry: dict, positions: list[int]) -> list:
            outcome = entry["outcome"]
            if not resized:
                return [outcome.frames[i] for i in positions]
            if outcome.resized is not None:
                return [outcome.resized[i] for i in positions]
            return list(resize_frames(resize_plan, outcome.frames[positions]))  # a worker could not

        try:
            frames = [image for entry, i in take for image in pixels(entry, [i])]
            return score_frames(model, frames, batch_size=size, resized=resized), {}
        except Exception:  # noqa: BLE001 - one video's frames broke the batch: find it, fail it, keep the rest
            scores, errors = [], {}
            for entry in _entries(take):
                mine = [i for e, i in take if e is entry]
                try:
                    scores += score_frames(model, pixels(entry, mine), batch_size=size, resized=resized)
                except Exception as error:  # noqa: BLE001
                    errors[id(entry)] = f"{type(error).__name__}: {error}"
                    scores += [None] * len(mine)
            return scores, errors

    def apply_scores(take: list[tuple[dict, int]], scores: list, errors: dict[int, str]) -> None:
        """Write a scored batch into its entries; store each video whose every frame is scored."""
        for entry in _entries(take):
            if entry["error"] is None and id(entry) in errors:
                entry["error"] = errors[id(entry)]
        for (entry, i), score in zip(take, scores):
            if entry["error"] is not None:
                continue
            entry["p"][i] = score.p_sludge
            entry["layouts"][i] = score.layout_scores
            entry["left"] -= 1
            if entry["left"] == 0:
                store(entry)
        for entry in _entries(take):
            if entry["error"] is not None and not entry.get("reported"):
                entry["reported"] = True
                finish(entry["video"], VideoOutcome(key=entry["video"].key, status="failed", code=SCORE_ERROR,
                                                    message=entry["error"]))

    def score_batch(final: bool = False) -> bool:
        """Launch one batch of frames from the head of the queue (False when there is not enough to fill one)
        and apply the batches already scored; `final` launches what is left and applies everything."""
        size = config.batch_size
        launched = bool(pending) and (len(pending) >= size or final)
        if launched:
            take = [pending.popleft() for _ in range(min(size, len(pending)))]
            take = [(entry, i) for entry, i in take if entry["error"] is None]
            model = load()
            overlap = model.device.type == "cuda" if config.overlap_scoring is None else config.overlap_scoring
            if overlap and not scorer:
                scorer.append(ThreadPoolExecutor(1, thread_name_prefix="sludgelens-score"))
            if overlap:
                scoring.append((take, scorer[0].submit(score_take, model, take)))
            else:
                done_now: Future = Future()
                with time_stage("model"):
                    done_now.set_result(score_take(model, take))
                scoring.append((take, done_now))
        # Apply what is scored; overlapped, the newest batch scores on (unless it is done) while the ones
        # before it are stored, so this waits on the scorer only when two batches are out.
        keep = 1 if scorer and not final else 0
        while scoring and (len(scoring) > keep or scoring[0][1].done()):
            take, future = scoring.popleft()
            with time_stage("model"):
                result = future.result()
            with time_stage("storing"):
                apply_scores(take, *result)
        return launched

    def accept(video: SourceVideo, outcome: VideoOutcome) -> None:
        if outcome.status != "decoded":
            finish(video, outcome)
            return
        n = len(outcome.indices)
        entry = {"video": video, "outcome": outcome, "p": [None] * n, "layouts": [None] * n, "left": n, "error": None}
        pending.extend((entry, i) for i in range(n))

    queue = deque(collection.videos)
    suspects: deque = deque()  # videos in flight when a worker died: retried one at a time, alone
    context = _pool_context()
    pool = None
    in_flight: dict = {}  # future -> (video, whether it ran alone)
    limit = workers * config.in_flight_per_worker + -(-config.batch_size // config.num_frames)

    def restart_pool() -> None:
        """After a worker died: a video that ran alone is what killed it; the others are retried alone."""
        nonlocal pool
        for video, alone in in_flight.values():
            if alone:
                finish(video, VideoOutcome(key=video.key, status="failed", code=WORKER_CRASH,
                                           message="the decode worker process died while reading this file"))
            else:
                suspects.append(video)
        in_flight.clear()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                                   initargs=(done, decode, str(find_media_dir(db)), config.worker_niceness,
                                             resize_plan))

    def submit(video: SourceVideo, alone: bool) -> bool:
        try:
            future = pool.submit(_decode_in_worker, video.key, path_for(video), config.num_frames, config.limits)
        except BrokenProcessPool:
            (suspects if alone else queue).appendleft(video)
            restart_pool()
            return False
        in_flight[future] = (video, alone)
        return True

    try:
        restart_pool()
        while queue or suspects or in_flight or pending or scoring:
            # Hand out work: a suspect on its own, else videos up to the in-flight limit.
            if suspects:
                if not in_flight and not submit(suspects.popleft(), True):
                    continue
            else:
                while queue and len(in_flight) < limit:
                    if not submit(queue.popleft(), False):
                        break
            if score_batch():
                ready = [f for f in in_flight if f.done()]
            elif in_flight:
                with time_stage("decoding"):
                    ready, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
            else:
                score_batch(final=True)
                continue
            broken = False
            for future in ready:
                try:
                    outcome = future.result()
                except BrokenProcessPool:
                    broken = True
                    continue
                video, _ = in_flight.pop(future)
                accept(video, outcome)
            if broken:
                restart_pool()
        summary.truth = import_collection_truth(db, collection, video_ids)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if scorer:
            scorer[0].shutdown(wait=True, cancel_futures=True)
        if threads:
            import torch

            torch.set_num_threads(threads[0])
        bar.close()
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        summary.failed_by_code = dict(report.by_code)
        summary.seconds = time.perf_counter() - started
        report.close(summary)
    return summary


def choose_resize(config: IngestConfig, lm, spec: ModelSpec | None, engine_config=None) -> ResizePlan | None:
    """The plan of the model's image processor the decode workers resize frames with, or None where they do
    not (``resize_in_workers`` off, or None and the model runs on a GPU; a processor without a plan).
    A model not loaded yet stays so: only its image processor is read.

    >>> choose_resize(IngestConfig(resize_in_workers=False), None, ModelSpec("models/tiny-vqwen-qformer")) is None
    True
    """
    if config.resize_in_workers is False:
        return None
    if config.resize_in_workers is None:
        from core.config import EngineConfig
        from core.engine import pick_device

        device = lm.device if lm is not None else pick_device((engine_config or EngineConfig()).device)
        if device.type != "cpu":
            return None
    if lm is not None:
        return plan_resize(lm.processor.image_processor)
    from transformers import AutoImageProcessor

    try:
        return plan_resize(AutoImageProcessor.from_pretrained(spec.source, revision=spec.revision))
    except (OSError, ValueError) as error:  # the model's own load, if a video needs it, says what is wrong
        logger.info("frames are not resized in the decode workers: %s", error)
        return None


def check_config(config: IngestConfig) -> IngestConfig:
    """Refuse a configuration that cannot work, before anything runs.

    >>> check_config(IngestConfig(batch_size=0))
    Traceback (most recent call last):
    ...
    annotations.ingest.IngestError: batch_size must be a whole number of at least 1, not 0
    """
    try:
        check_frame_count(config.num_frames, config.limits)
    except ValueError as error:
        raise IngestError(str(error)) from None
    for name in ("batch_size", "in_flight_per_worker", "workers", "model_threads"):
        value = getattr(config, name)
        if value is None and name in ("workers", "model_threads"):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise IngestError(f"{name} must be a whole number of at least 1, not {value!r}")
    niceness = config.worker_niceness
    if isinstance(niceness, bool) or not isinstance(niceness, int) or not 0 <= niceness <= 19:
        raise IngestError(f"worker_niceness must be a whole number from 0 to 19, not {niceness!r}")
    return config


def summarise_failures(records: Iterable[dict]) -> dict[str, int]:
    """Failures by error code, from a report's records.

    >>> summarise_failures([{"kind": "failure", "code": "not_media"}, {"kind": "failure", "code": "not_media"},
    ...                     {"kind": "summary"}])
    {'not_media': 2}
    """
    return dict(Counter(r["code"] for r in records if r.get("kind") == "failure"))
