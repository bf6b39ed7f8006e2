"""Everything that writes to the store: videos, frames, models, predictions, labelers and label events.

Label events are append-only. Each frame carries a ``revision`` that grows by one with every event the
store accepts for it; a write names the revision its author saw, and a stale one is refused with
:class:`StaleRevisionError` before anything changes. Corrections, ranges, undos and review rejections
are all new events, so the whole history of a label stays readable.

    db = open_store("data/sludgelens.db", "data/media")
    add_labeler(db, "ana", "labeler")
    video_id = add_video(db, "clip.mp4", "clip.mp4", {"fps": 30.0})
    frame_ids = add_frames(db, video_id, frames, timestamps=[0.0, 0.5], indices=[0, 15])
    ev = correct_label(db, frame_ids[0], "sludge", True, "ana", seen_revision=0, note="top/bottom split")
    undo(db, frame_ids[0], "sludge", "ana", seen_revision=ev.revision)
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import sqlite_utils

from annotations.schema import (
    RAW_GT,
    UPLOADS,
    InvalidLabelError,
    NotFoundError,
    PermissionDeniedError,
    StaleRevisionError,
    resolve_media_path,
    utc_now,
    write_transaction,
)
from core.vocabulary import FIELDS, LABEL_LAYOUTS, ROLES, WRITE_ROLES

# Long enough for a paragraph-length description or note, short enough that a paste accident is refused.
MAX_TEXT_CHARS = 20_000
MAX_NAME_CHARS = 500
# SQLite's INTEGER is a signed 64-bit number: a larger id cannot name a row, and Python's sqlite3 refuses it
# with an OverflowError.
MAX_ROW_ID = 2**63 - 1
# C0 control characters but tab, line feed and carriage return (a line break typed on Windows).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
_TRUE = {"1", "true", "yes", "sludge"}
_FALSE = {"0", "false", "no", "not_sludge", "not sludge"}


@dataclass(frozen=True)
class LabelEvent:
    """One accepted change of one field of one frame, as stored (values decoded: sludge is a bool)."""

    id: int
    frame_id: int
    field: str
    old_value: bool | str | None
    new_value: bool | str | None
    labeler: str
    source: str  # "human" or "import" (raw ground truth)
    created_at: str
    model_seen: str | None
    note: str
    revision: int
    kind: str
    ref_event: int | None
    batch: str | None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Review:
    """A reviewer's accept or reject of one event; ``revert`` is the event a rejection appended, if any."""

    id: int
    event_id: int
    reviewer: str
    accepted: bool
    note: str
    revert: LabelEvent | None
    created_at: str


# ---------------------------------------------------------------- values


def encode_value(field: str, value) -> str:
    """Check a label value and turn it into its stored text: sludge -> "1"/"0", layout -> its name.

    >>> encode_value("sludge", True), encode_value("layout", "pip")
    ('1', 'pip')
    """
    if field not in FIELDS:
        raise InvalidLabelError(f"unknown field {field!r}; expected one of {', '.join(FIELDS)}")
    if value is None:
        raise InvalidLabelError(f"{field} cannot be set to nothing; use undo to take a change back")
    if field == "sludge":
        if isinstance(value, (bool, np.bool_)):
            return "1" if value else "0"
        if isinstance(value, (int, np.integer)) and value in (0, 1):
            return str(int(value))
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return "1" if value.strip().lower() in _TRUE else "0"
        raise InvalidLabelError(f"sludge must be true or false, not {value!r}")
    if field == "layout":
        if isinstance(value, str) and value in LABEL_LAYOUTS:
            return value
        raise InvalidLabelError(f"layout must be one of {', '.join(LABEL_LAYOUTS)}, not {value!r}")
    if not isinstance(value, str):
        raise InvalidLabelError(f"description must be text, not {type(value).__name__}")
    check_text(value, "description")
    return value


def decode_value(field: str, stored: str | None) -> bool | str | None:
    """The stored text of a label back as its value.

    >>> decode_value("sludge", "1"), decode_value("layout", "pip"), decode_value("layout", None)
    (True, 'pip', None)
    """
    if stored is None:
        return None
    if field == "sludge":
        return str(stored) == "1"
    return str(stored)


def check_text(text, what: str, limit: int = MAX_TEXT_CHARS) -> str:
    """Text as the store keeps it: a str of at most `limit` characters with no control characters but tab
    and line breaks (a NUL cuts the text short in C readers and many exports; the others are invisible).

    >>> check_text("top/bottom\\tsplit\\r\\n", "note")
    'top/bottom\\tsplit\\r\\n'
    >>> check_text("a\\x00b", "note")
    Traceback (most recent call last):
    ...
    annotations.schema.InvalidLabelError: note contains the control character U+0000 at position 1; only tab and line breaks are allowed
    """
    if not isinstance(text, str):
        raise InvalidLabelError(f"{what} must be text, not {type(text).__name__}")
    if len(text) > limit:
        raise InvalidLabelError(f"{what} is {len(text)} characters; the limit is {limit}")
    bad = _CONTROL.search(text)
    if bad:
        raise InvalidLabelError(f"{what} contains the control character U+{ord(bad.group()):04X} at position "
                                f"{bad.start()}; only tab and line breaks are allowed")
    return text


def check_id(value, what: str = "frame_id") -> int:
    """A row id as a caller gives it: a whole number from 1 to SQLite's largest integer (2**63 - 1).

    >>> check_id(12), check_id(12.0)
    (12, 12)
    >>> check_id(2**70)
    Traceback (most recent call last):
    ...
    annotations.schema.InvalidLabelError: frame_id must be a whole number from 1 to 9223372036854775807, not 1180591620717411303424
    """
    number = value
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        number = int(value)
    if isinstance(number, bool) or not isinstance(number, (int, np.integer)) or not 1 <= number <= MAX_ROW_ID:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "…"
        raise InvalidLabelError(f"{what} must be a whole number from 1 to {MAX_ROW_ID}, not {shown}")
    return int(number)


def _check_name(name, what: str) -> str:
    check_text(name, what, MAX_NAME_CHARS)
    if not name.strip():
        raise InvalidLabelError(f"{what} cannot be empty")
    return name


def _check_revision(revision, what: str = "seen_revision") -> int:
    if isinstance(revision, (float, np.floating)) and math.isfinite(revision) and float(revision).is_integer():
        revision = int(revision)
    if (isinstance(revision, bool) or not isinstance(revision, (int, np.integer))
            or not 0 <= revision <= MAX_ROW_ID):
        shown = repr(revision) if len(repr(revision)) <= 40 else repr(revision)[:40] + "…"
        raise InvalidLabelError(f"{what} must be a non-negative integer (the frame revision you saw), not {shown}")
    return int(revision)


def _event_from_row(row: Mapping) -> LabelEvent:
    field = row["field"]
    return LabelEvent(
        id=row["id"],
        frame_id=row["frame_id"],
        field=field,
        old_value=decode_value(field, row["old_value"]),
        new_value=decode_value(field, row["new_value"]),
        labeler=row["labeler"],
        source=row["source"],
        created_at=row["created_at"],
        model_seen=row["model_seen"],
        note=row["note"],
        revision=row["revision"],
        kind=row["kind"],
        ref_event=row["ref_event"],
        batch=row["batch"],
    )


# ---------------------------------------------------------------- labelers


def add_labeler(db: sqlite_utils.Database, name: str, role: str = "labeler") -> dict:
    """Add a labeler, or change an existing one's role. Roles: viewer (read only), labeler, reviewer.

    >>> add_labeler(db, "ana", "reviewer")  # doctest: +SKIP
    {'name': 'ana', 'role': 'reviewer', 'kind': 'human', ...}
    """
    _check_name(name, "labeler name")
    if role not in ROLES:
        raise InvalidLabelError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if name == RAW_GT:
        raise InvalidLabelError(f"{RAW_GT!r} is reserved for imported ground truth")
    with write_transaction(db):
        existing = db.execute("SELECT name FROM labelers WHERE name = ?", [name]).fetchone()
        if existing:
            db.execute("UPDATE labelers SET role = ? WHERE name = ?", [role, name])
        else:
            db["labelers"].insert({"name": name, "role": role, "kind": "human", "created_at": utc_now()})
    return db["labelers"].get(name)


def _require_role(db: sqlite_utils.Database, labeler: str, roles: Sequence[str], action: str) -> dict:
    row = next(db.query("SELECT * FROM labelers WHERE name = ?", [labeler]), None)
    if row is None:
        raise PermissionDeniedError(f"unknown labeler {labeler!r}: add it with add_labeler before it can {action}")
    if row["kind"] == "import":
        raise PermissionDeniedError(f"{labeler!r} records imported ground truth only; it cannot {action}")
    if row["role"] not in roles:
        raise PermissionDeniedError(
            f"labeler {labeler!r} has role {row['role']!r}; to {action} it needs one of {', '.join(roles)}")
    return row


# ---------------------------------------------------------------- videos and frames


def add_video(db: sqlite_utils.Database, path_or_bytes: str | os.PathLike | bytes, name: str,
              meta: dict | None = None, collection: str = UPLOADS) -> str:
    """Add a video by its sha256 (the id); adding the same bytes again returns the same id.

    ``meta`` may carry duration_s, fps, width, height (stored as columns) and anything else (kept as JSON).
    A video belongs to the collection it was first added under; adding it again under another keeps it there.

    >>> add_video(db, "clip.mp4", "clip.mp4", {"fps": 30.0, "duration_s": 12.5})  # doctest: +SKIP
    '9f86d081884c7d65...'
    """
    row = build_video_row(path_or_bytes, name, meta, collection)
    with write_transaction(db):
        db["videos"].insert(row, ignore=True)
    return row["id"]


def build_video_row(path_or_bytes: str | os.PathLike | bytes, name: str, meta: dict | None = None,
                    collection: str = UPLOADS) -> dict:
    """The ``videos`` row of a file or its bytes (hashing it for the id), checked, not yet written."""
    _check_name(name, "video name")
    _check_name(collection, "collection name")
    meta = dict(meta or {})
    digest = hashlib.sha256()
    source_path = None
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        digest.update(path_or_bytes)
        size = len(path_or_bytes)
    else:
        source_path = str(path_or_bytes)
        with open(path_or_bytes, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        size = os.path.getsize(path_or_bytes)
    video_id = digest.hexdigest()
    row = {
        "id": video_id,
        "name": name,
        "source_path": source_path,
        "size_bytes": size,
        "duration_s": _float_or_none(meta.get("duration_s")),
        "fps": _float_or_none(meta.get("fps")),
        "width": _int_or_none(meta.get("width")),
        "height": _int_or_none(meta.get("height")),
        "meta": json.dumps(meta, sort_keys=True, default=str),
        "collection": collection,
        "created_at": utc_now(),
    }
    return row


def _float_or_none(value):
    return None if value is None else float(value)


def _int_or_none(value):
    return None if value is None else int(value)


def encode_image(frame: np.ndarray, image_format: str = "png") -> bytes:
    """One RGB frame as PNG (lossless, fast compression) or JPEG (quality 95) bytes; deterministic.

    >>> encode_image(np.zeros((4, 4, 3), np.uint8))[:4]
    b'\\x89PNG'
    """
    from PIL import Image

    buffer = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(frame))
    if image_format == "png":
        # Level 1: a 1080x1920 frame encodes in ~50 ms instead of ~300 ms, for ~20% larger files.
        image.save(buffer, format="PNG", compress_level=1)
    elif image_format == "jpeg":
        image.save(buffer, format="JPEG", quality=95)
    else:
        raise InvalidLabelError(f"image_format must be 'png' or 'jpeg', not {image_format!r}")
    return buffer.getvalue()


def save_media(media_dir: str | Path, data: bytes, suffix: str) -> tuple[str, str]:
    """Write bytes under the media folder named by their sha256; returns (relative path, sha256).

    The name comes from the content only, so no caller-supplied text can place a file anywhere;
    the write goes to a temporary file first and is renamed into place, so a crash leaves no half file.

    >>> save_media("data/media", b"...", ".png")  # doctest: +SKIP
    ('ab/ab12....png', 'ab12...')
    """
    sha = hashlib.sha256(data).hexdigest()
    relative = f"{sha[:2]}/{sha}{suffix}"
    target = resolve_media_path(media_dir, relative)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return relative, sha


def add_frames(db: sqlite_utils.Database, video_id: str, frames: np.ndarray, timestamps: Sequence[float],
               indices: Sequence[int], image_format: str = "png") -> list[int]:
    """Store sampled frames of a video (images under the media folder by content hash); returns frame ids.

    A (video, index) pair already stored keeps its row and id.

    >>> add_frames(db, video_id, np.zeros((2, 224, 224, 3), np.uint8), [0.0, 0.5], [0, 15])  # doctest: +SKIP
    [1, 2]
    """
    rows = save_frame_images(db, video_id, frames, timestamps, indices, image_format)
    with write_transaction(db):
        return insert_frame_rows(db, video_id, rows)


def save_frame_images(db: sqlite_utils.Database, video_id: str, frames: np.ndarray | None,
                      timestamps: Sequence[float], indices: Sequence[int], image_format: str = "png",
                      images: Sequence[bytes] | None = None,
                      saved: Sequence[SavedImage] | None = None) -> list[dict]:
    """Write frames' images under the media folder (named by content, so rewriting one is harmless) and
    return their ``frames`` rows, not yet inserted: encoding happens outside any write transaction.
    ``images`` are the frames already encoded (``encode_image``'s bytes, e.g. by a decode worker process or
    a Ray shard), and then ``frames`` may be None (the sizes come from the images' headers); ``saved``, the
    frames' images already written under this store's media folder (:func:`save_frame_image`, e.g. by a
    decode worker process), so ``frames`` may be None."""
    if saved is not None:
        return [build_frame_row(db, video_id, image, time_s, index)
                for image, time_s, index in zip(check_counts(saved, timestamps, indices, "saved images"),
                                                 timestamps, indices)]
    if frames is None:  # encoded elsewhere (e.g. a Ray shard): each image's size is read from its header
        if images is None:
            raise InvalidLabelError("a video's frames are needed, as pixels, encoded images or saved images")
        sizes = [read_image_size(data) for data in check_counts(images, timestamps, indices, "encoded images")]
    else:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise InvalidLabelError(f"frames must be an (N, H, W, 3) uint8 array, not {frames.dtype} {frames.shape}")
        check_counts(frames, timestamps, indices, "frames")
        if images is not None and len(images) != len(frames):
            raise InvalidLabelError(f"{len(frames)} frames but {len(images)} encoded images")
        sizes = [(int(frame.shape[1]), int(frame.shape[0])) for frame in frames]
    media_dir = find_media_dir(db)
    rows = []
    for k, ((width, height), time_s, index) in enumerate(zip(sizes, timestamps, indices)):
        data = encode_image(frames[k], image_format) if images is None else bytes(images[k])
        image = SavedImage(*save_media(media_dir, data, ".png" if image_format == "png" else ".jpg"),
                           width=width, height=height)
        rows.append(build_frame_row(db, video_id, image, time_s, index, check=False))
    return rows


def read_image_size(data: bytes) -> tuple[int, int]:
    """(width, height) of encoded RGB image bytes, from the header alone (nothing is decoded); bytes that are
    not a PNG or JPEG image are refused.

    >>> read_image_size(encode_image(np.zeros((4, 6, 3), np.uint8)))
    (6, 4)
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(bytes(data))) as image:
            if image.format not in ("PNG", "JPEG") or image.mode != "RGB":
                raise InvalidLabelError(f"a frame image must be an RGB PNG or JPEG, not {image.format} {image.mode}")
            return int(image.width), int(image.height)
    except (UnidentifiedImageError, OSError) as error:
        raise InvalidLabelError(f"a frame image could not be read: {error}") from error


class SavedImage(NamedTuple):
    """A frame's image written under a store's media folder: where (relative to it), its sha256, its size."""

    path: str
    sha256: str
    width: int
    height: int


def save_frame_image(media_dir: str | Path, frame: np.ndarray, image_format: str = "png") -> SavedImage:
    """Encode one frame and write it under the media folder (:func:`save_media`), from any process: what
    :func:`save_frame_images` takes as ``saved``.

    >>> save_frame_image("data/media", np.zeros((4, 6, 3), np.uint8))  # doctest: +SKIP
    SavedImage(path='3c/3c5a....png', sha256='3c5a...', width=6, height=4)
    """
    data = encode_image(frame, image_format)
    relative, sha = save_media(media_dir, data, ".png" if image_format == "png" else ".jpg")
    return SavedImage(relative, sha, width=int(frame.shape[1]), height=int(frame.shape[0]))


def check_counts(items: Sequence, timestamps: Sequence[float], indices: Sequence[int], what: str) -> Sequence:
    """Refuse a mismatch between a video's frames (or their images), timestamps and indices."""
    if not (len(items) == len(timestamps) == len(indices)):
        raise InvalidLabelError(f"{len(items)} {what} but {len(timestamps)} timestamps and {len(indices)} indices")
    return items


def build_frame_row(db: sqlite_utils.Database, video_id: str, image: SavedImage, time_s: float, index: int,
                    check: bool = True) -> dict:
    """A ``frames`` row for an image saved under the store's media folder; ``check``: refuse an image
    whose file is not there (a row must never point at nothing)."""
    if check and not resolve_media_path(find_media_dir(db), image.path).is_file():
        raise InvalidLabelError(f"the frame image {image.path} is not in this store's media folder")
    return {
        "video_id": video_id,
        "frame_index": int(index),
        "time_s": float(time_s),
        "image_path": image.path,
        "image_sha256": image.sha256,
        "width": int(image.width),
        "height": int(image.height),
        "created_at": utc_now(),
    }


def insert_frame_rows(db: sqlite_utils.Database, video_id: str, rows: Sequence[dict]) -> list[int]:
    """Insert frame rows of a stored video (inside the caller's write transaction); returns their ids."""
    if db.execute("SELECT 1 FROM videos WHERE id = ?", [video_id]).fetchone() is None:
        raise NotFoundError(f"video {video_id!r} is not in the store; add it with add_video first")
    ids = []
    for row in rows:
        db["frames"].insert(row, ignore=True)
        ids.append(db.execute("SELECT id FROM frames WHERE video_id = ? AND frame_index = ?",
                              [video_id, row["frame_index"]]).fetchone()[0])
    return ids


def add_analyzed_video(db: sqlite_utils.Database, path_or_bytes: str | os.PathLike | bytes, name: str, meta: dict,
                       frames: np.ndarray, timestamps: Sequence[float], indices: Sequence[int],
                       model: tuple[str, str, str | None], p_sludge: Sequence[float],
                       layout_scores: Sequence[Mapping[str, float]], collection: str = UPLOADS,
                       images: Sequence[bytes] | None = None,
                       saved: Sequence[SavedImage] | None = None) -> tuple[str, list[int]]:
    """Store a video, its sampled frames and one model version's predictions in one transaction.

    Either all of it is in the store or none of it: a process killed half-way leaves no video without its
    frames (the frame images may stay on disk; they are named by content and reused). ``model`` is the
    (id, source, revision) the predictions are stored under. ``images``, when given, are the frames
    already PNG-encoded by ``encode_image`` (a worker process did it); ``saved``, already written under the
    media folder too (``save_frame_image``), and then ``frames`` may be None. Returns (video id, frame ids).

    >>> add_analyzed_video(db, "clip.mp4", "clip.mp4", {"fps": 30.0}, frames, [0.0, 0.5], [0, 15],
    ...                    ("tiny@1", "models/tiny", "1"), [0.9, 0.2], [{"pip": 1.0}] * 2)  # doctest: +SKIP
    ('9f86d081884c7d65...', [1, 2])
    """
    video = build_video_row(path_or_bytes, name, meta, collection)
    rows = save_frame_images(db, video["id"], frames, timestamps, indices, images=images, saved=saved)
    model_id, source, revision = model
    with write_transaction(db):
        db["videos"].insert(video, ignore=True)
        frame_ids = insert_frame_rows(db, video["id"], rows)
        register_model(db, model_id, source, revision)
        record_predictions(db, model_id, frame_ids, p_sludge, layout_scores)
    return video["id"], frame_ids


def find_media_dir(db: sqlite_utils.Database) -> Path:
    """The folder a store keeps its frame images in (given to ``open_store``).

    >>> find_media_dir(open_store("data/sludgelens.db", "data/media"))  # doctest: +SKIP
    PosixPath('data/media')
    """
    media_dir = getattr(db, "media_dir", None)
    if media_dir is None:
        raise InvalidLabelError("this database has no media folder; open it with open_store(path, media_dir)")
    return Path(media_dir)


def frame_image_path(db: sqlite_utils.Database, frame_id: int) -> Path:
    """The absolute path of a frame's image, checked to lie inside the media folder.

    >>> frame_image_path(db, 1)  # doctest: +SKIP
    PosixPath('/…/data/media/ab/ab12….png')
    """
    row = db.execute("SELECT image_path FROM frames WHERE id = ?", [check_id(frame_id)]).fetchone()
    if row is None:
        raise NotFoundError(f"frame {frame_id} is not in the store")
    return resolve_media_path(find_media_dir(db), row[0])


# ---------------------------------------------------------------- models and predictions


def register_model(db: sqlite_utils.Database, model_id: str, source: str, revision: str | None = None,
                   lineage: dict | None = None) -> str:
    """Record a model version (idempotent); ``lineage`` says what it was trained from, e.g. an export id.

    >>> register_model(db, "tiny@1", "models/tiny-vqwen-qformer", "1", {"base": "tiny@0"})  # doctest: +SKIP
    'tiny@1'
    """
    _check_name(model_id, "model id")
    _check_name(source, "model source")
    with write_transaction(db):
        existing = next(db.query("SELECT * FROM models WHERE id = ?", [model_id]), None)
        if existing is None:
            db["models"].insert({
                "id": model_id,
                "source": source,
                "revision": revision,
                "lineage": json.dumps(lineage or {}, sort_keys=True, default=str),
                "created_at": utc_now(),
            })
        elif (existing["source"], existing["revision"]) != (source, revision):
            raise InvalidLabelError(
                f"model {model_id!r} is already registered from {existing['source']!r} revision "
                f"{existing['revision']!r}; give a new version its own id")
    return model_id


def record_predictions(db: sqlite_utils.Database, model_id: str, frame_ids: Sequence[int],
                       p_sludge: Sequence[float], layout_scores: Sequence[Mapping[str, float]],
                       descriptions: Sequence[str | None] | None = None,
                       explanations: Sequence[str | None] | None = None) -> None:
    """Store one model version's scores for frames; recording again for the same pair replaces it.

    >>> record_predictions(db, "tiny@1", [1, 2], [0.91, 0.12],
    ...                    [{"vertical": 0.8, "horizontal": 0.1, "pip": 0.05, "other": 0.05}] * 2)  # doctest: +SKIP
    """
    n = len(frame_ids)
    descriptions = list(descriptions) if descriptions is not None else [None] * n
    explanations = list(explanations) if explanations is not None else [None] * n
    if not (len(p_sludge) == len(layout_scores) == len(descriptions) == len(explanations) == n):
        raise InvalidLabelError("frame_ids, p_sludge, layout_scores (and descriptions) must have the same length")
    rows = []
    now = utc_now()
    for frame_id, p, scores, description, explanation in zip(
            frame_ids, p_sludge, layout_scores, descriptions, explanations):
        p = float(p)
        if not (math.isfinite(p) and 0.0 <= p <= 1.0):
            raise InvalidLabelError(f"p_sludge must be a probability in [0, 1], not {p!r} (frame {frame_id})")
        scores = {str(k): float(v) for k, v in dict(scores or {}).items()}
        unknown = set(scores) - set(LABEL_LAYOUTS)
        if unknown:
            raise InvalidLabelError(f"unknown layout classes {sorted(unknown)} in layout_scores (frame {frame_id})")
        for text, what in ((description, "description"), (explanation, "explanation")):
            if text is not None:
                check_text(text, what)
        best = max(sorted(scores), key=scores.get) if scores else "none"
        rows.append([int(frame_id), model_id, p, best, json.dumps(scores, sort_keys=True), description,
                     explanation, now])
    with write_transaction(db):
        if not has_model(db, model_id):
            raise NotFoundError(f"model {model_id!r} is not registered; call register_model first")
        wanted = {row[0] for row in rows}
        found = _existing_frames(db, wanted)
        if found != wanted:
            raise NotFoundError(f"frames {sorted(wanted - found)[:10]} are not in the store")
        db.conn.executemany(
            "INSERT INTO predictions (frame_id, model_id, p_sludge, layout, layout_scores, description, explanation,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (frame_id, model_id) DO UPDATE SET"
            " p_sludge = excluded.p_sludge, layout = excluded.layout, layout_scores = excluded.layout_scores,"
            " description = excluded.description, explanation = excluded.explanation, created_at = excluded.created_at",
            rows)


def _existing_frames(db: sqlite_utils.Database, frame_ids: set[int]) -> set[int]:
    found: set[int] = set()
    ids = sorted(frame_ids)
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        found |= {r[0] for r in db.execute(f"SELECT id FROM frames WHERE id IN ({marks})", chunk)}
    return found


def list_model_versions(db: sqlite_utils.Database, limit: int | None = None) -> list[str]:
    """Model versions with predictions in the store, newest registered first.

    >>> list_model_versions(db)  # doctest: +SKIP
    ['data/checkpoints/lora-1@b2c3d4e5f6a7', 'models/tiny-vqwen-qformer@a1b2c3d4e5f6']
    """
    sql = ("SELECT m.id FROM models m WHERE EXISTS (SELECT 1 FROM predictions p WHERE p.model_id = m.id)"
           " ORDER BY m.created_at DESC, m.rowid DESC")
    if limit is None:
        return [r[0] for r in db.execute(sql)]
    return [r[0] for r in db.execute(sql + " LIMIT ?", [int(limit)])]


def latest_model_id(db: sqlite_utils.Database) -> str | None:
    """The most recently registered model version that has predictions (None when there is none).

    >>> latest_model_id(db)  # doctest: +SKIP
    'tiny@1'
    """
    return next(iter(list_model_versions(db, limit=1)), None)


def sole_model_id(db: sqlite_utils.Database, refuse_several: bool = True) -> str | None:
    """The model version with predictions when the store holds exactly one (None when it holds none).

    What a read falls back to when the caller names no model. With several model versions in the store
    there is no right guess (the newest is only the last one somebody analyzed a video with), so it
    refuses with InvalidLabelError, or returns None with ``refuse_several=False``. The app names its
    default model version (``core.config.default_model_id``) instead of relying on this.

    >>> sole_model_id(db)  # doctest: +SKIP
    'tiny@1'
    """
    versions = list_model_versions(db, limit=3)
    if len(versions) <= 1:
        return next(iter(versions), None)
    if not refuse_several:
        return None
    shown = ", ".join(repr(v) for v in versions[:2])
    raise InvalidLabelError(f"the store holds predictions of several model versions ({shown}, ...): name the "
                            "one you mean")


def has_model(db: sqlite_utils.Database, model_id: str | None) -> bool:
    """Whether a model version is registered (it may have no predictions yet).

    >>> has_model(db, "tiny@1")  # doctest: +SKIP
    True
    """
    return model_id is not None and db.execute("SELECT 1 FROM models WHERE id = ?", [model_id]).fetchone() is not None


def read_predictions(db: sqlite_utils.Database, model_id: str,
                     collection: str | None = None) -> dict[int, tuple[float, str]]:
    """frame_id -> (P(sludge), most likely layout) of every frame one model version scored, in frame order;
    only the frames of one collection's videos when it is named.

    >>> read_predictions(db, "tiny@1")[1]  # doctest: +SKIP
    (0.91, 'vertical')
    """
    if collection is None:
        rows = db.execute("SELECT frame_id, p_sludge, layout FROM predictions WHERE model_id = ? ORDER BY frame_id",
                          [model_id])
    else:
        rows = db.execute(
            "SELECT p.frame_id, p.p_sludge, p.layout FROM predictions p JOIN frames f ON f.id = p.frame_id"
            " JOIN videos v ON v.id = f.video_id WHERE p.model_id = ? AND v.collection = ? ORDER BY p.frame_id",
            [model_id, collection])
    return {frame_id: (p, layout) for frame_id, p, layout in rows}


def frames_scored_by(db: sqlite_utils.Database, model_id: str) -> set[int]:
    """The ids of the frames a model version has predictions for.

    >>> frames_scored_by(db, "tiny@1")  # doctest: +SKIP
    {1, 2, 3}
    """
    return {r[0] for r in db.execute("SELECT frame_id FROM predictions WHERE model_id = ?", [model_id])}


def list_labelers(db: sqlite_utils.Database, kind: str = "human") -> list[str]:
    """Names of the labelers of one kind ("human", or "import" for ground truth), in alphabetical order.

    >>> list_labelers(db)  # doctest: +SKIP
    ['alice', 'rita']
    """
    return [r[0] for r in db.execute("SELECT name FROM labelers WHERE kind = ? ORDER BY name", [kind])]


# ---------------------------------------------------------------- label events


def frame_revision(db: sqlite_utils.Database, frame_id: int) -> int:
    """The frame's current revision: name it as ``seen_revision`` when correcting the frame.

    >>> frame_revision(db, 1)  # doctest: +SKIP
    0
    """
    row = db.execute("SELECT revision FROM frames WHERE id = ?", [check_id(frame_id)]).fetchone()
    if row is None:
        raise NotFoundError(f"frame {frame_id} is not in the store")
    return row[0]


def _current_value(db, frame_id: int, field: str) -> str | None:
    """The stored text of a field as the current_labels view gives it (None when never labelled)."""
    if field not in FIELDS:
        raise InvalidLabelError(f"unknown field {field!r}; expected one of {', '.join(FIELDS)}")
    # The view casts sludge to an integer; its stored text is "1" / "0".
    sql = "CAST(sludge AS TEXT)" if field == "sludge" else field
    row = db.execute(f"SELECT {sql} FROM current_labels WHERE frame_id = ?", [frame_id]).fetchone()
    return row[0] if row else None


def _check_seen(db, frame_id: int, seen_revision: int | None) -> int:
    """The frame's revision, refusing the write when the caller saw another one (None: no check)."""
    row = db.execute("SELECT revision FROM frames WHERE id = ?", [frame_id]).fetchone()
    if row is None:
        raise NotFoundError(f"frame {frame_id} is not in the store")
    revision = row[0]
    if seen_revision is not None and revision != seen_revision:
        raise StaleRevisionError(
            f"frame {frame_id} is at revision {revision} but this change was made against revision "
            f"{seen_revision}: someone changed it in the meantime. Nothing was written; reload the frame "
            f"and apply your change again.")
    return revision


def append_event(db, frame_id: int, field: str, new_value: str | None, labeler: str, seen_revision: int | None,
                  note: str, model_seen: str | None, kind: str, ref_event: int | None = None,
                  batch: str | None = None, source: str = "human") -> LabelEvent:
    """Insert one event inside the caller's write transaction; refuses a stale revision."""
    revision = _check_seen(db, frame_id, seen_revision)
    record = {
        "frame_id": frame_id,
        "field": field,
        "old_value": _current_value(db, frame_id, field),
        "new_value": new_value,
        "labeler": labeler,
        "source": source,
        "created_at": utc_now(),
        "model_seen": model_seen,
        "note": note,
        "revision": revision + 1,
        "kind": kind,
        "ref_event": ref_event,
        "batch": batch,
    }
    cursor = db.execute(
        "INSERT INTO label_events (frame_id, field, old_value, new_value, labeler, source, created_at, model_seen,"
        " note, revision, kind, ref_event, batch) VALUES (:frame_id, :field, :old_value, :new_value, :labeler,"
        " :source, :created_at, :model_seen, :note, :revision, :kind, :ref_event, :batch)", record)
    db.execute("UPDATE frames SET revision = ? WHERE id = ?", [revision + 1, frame_id])
    db.execute("DELETE FROM leases WHERE frame_id = ? AND labeler = ?", [frame_id, labeler])
    return _event_from_row({"id": cursor.lastrowid, **record})


def correct_label(db: sqlite_utils.Database, frame_id: int, field: str, value, labeler: str, seen_revision: int,
                  note: str = "", model_seen: str | None = None) -> LabelEvent:
    """Set one field of one frame, refusing the write if the frame moved past ``seen_revision``.

    Raises StaleRevisionError, PermissionDeniedError (unknown labeler or viewer), InvalidLabelError
    (bad field or value) or NotFoundError; on any refusal nothing changes.

    >>> ev = correct_label(db, 7, "layout", "pip", "ana", seen_revision=2, note="small face cam",
    ...                    model_seen="tiny@1")  # doctest: +SKIP
    >>> ev.revision  # doctest: +SKIP
    3
    """
    frame_id = check_id(frame_id)
    stored = encode_value(field, value)
    check_text(note, "note")
    seen_revision = _check_revision(seen_revision)
    with write_transaction(db):
        _require_role(db, labeler, WRITE_ROLES, "correct labels")
        return append_event(db, frame_id, field, stored, labeler, seen_revision, note, model_seen, "set")


def apply_range(db: sqlite_utils.Database, video_id: str, start_index: int, end_index: int, field: str, value,
                labeler: str, seen_revisions: Mapping[int, int] | int, note: str = "",
                model_seen: str | None = None) -> list[LabelEvent]:
    """Set one field on every stored frame of a video with start_index <= frame_index <= end_index.

    ``seen_revisions`` maps frame id -> revision seen, or is one revision every frame must be at (0 for
    never-labelled frames). All or nothing: one stale frame refuses the whole range.

    >>> apply_range(db, video_id, 0, 90, "sludge", True, "ana", {1: 0, 2: 3, 3: 0})  # doctest: +SKIP
    [LabelEvent(...), LabelEvent(...), LabelEvent(...)]
    """
    stored = encode_value(field, value)
    check_text(note, "note")
    start_index = _check_revision(start_index, "start_index")
    end_index = _check_revision(end_index, "end_index")
    if start_index > end_index:
        raise InvalidLabelError(f"start_index {start_index} is after end_index {end_index}")
    if isinstance(seen_revisions, Mapping):
        seen = {check_id(k): _check_revision(v) for k, v in seen_revisions.items()}
    else:
        seen = None
        single = _check_revision(seen_revisions)
    batch = uuid.uuid4().hex
    with write_transaction(db):
        _require_role(db, labeler, WRITE_ROLES, "correct labels")
        frames = db.execute(
            "SELECT id, revision FROM frames WHERE video_id = ? AND frame_index BETWEEN ? AND ? ORDER BY frame_index",
            [video_id, int(start_index), int(end_index)]).fetchall()
        if not frames:
            raise NotFoundError(f"video {video_id!r} has no stored frames with index {start_index}..{end_index}")
        expected = {fid: (seen.get(fid) if seen is not None else single) for fid, _ in frames}
        missing = [fid for fid, rev in expected.items() if rev is None]
        if missing:
            raise InvalidLabelError(f"seen_revisions has no entry for frames {missing}; nothing was written")
        stale = [(fid, rev, expected[fid]) for fid, rev in frames if rev != expected[fid]]
        if stale:
            detail = ", ".join(f"frame {fid} is at {rev} (you saw {saw})" for fid, rev, saw in stale[:10])
            raise StaleRevisionError(
                f"{len(stale)} of {len(frames)} frames changed since you saw them: {detail}. Nothing was written; "
                f"reload the frames and apply the range again.")
        return [append_event(db, fid, field, stored, labeler, rev, note, model_seen, "range", batch=batch)
                for fid, rev in frames]


def _events(db, frame_id: int, field: str | None = None, descending: bool = False) -> list[LabelEvent]:
    where, params = "frame_id = ?", [frame_id]
    if field is not None:
        where, params = where + " AND field = ?", params + [field]
    order = "DESC" if descending else "ASC"
    return [_event_from_row(r) for r in db.query(f"SELECT * FROM label_events WHERE {where} ORDER BY id {order}",
                                                 params)]


def label_history(db: sqlite_utils.Database, frame_id: int, field: str | None = None) -> list[LabelEvent]:
    """Every event of a frame (optionally one field), oldest first.

    >>> [e.new_value for e in label_history(db, 7, "sludge")]  # doctest: +SKIP
    [True, False, True]
    """
    return _events(db, frame_id, field)


def _effective_human_changes(db, frame_id: int, field: str) -> list[LabelEvent]:
    """Human set/range events of a field not taken back by an undo or a rejection, newest first."""
    events = [e for e in _events(db, frame_id, field, descending=True) if e.source == "human"]
    reverted = {e.ref_event for e in events if e.kind in ("undo", "reject")}
    return [e for e in events if e.kind in ("set", "range") and e.id not in reverted]


def _stored(field: str, value) -> str | None:
    return None if value is None else encode_value(field, value)


def undo(db: sqlite_utils.Database, frame_id: int, field: str, labeler: str, seen_revision: int,
         note: str = "") -> LabelEvent:
    """Take back the latest human change of a field not taken back yet, as a new event.

    The field returns to the human value before that change; when there is none, the new event holds no
    value and the imported (raw-gt) value, if any, shows again. Repeated undos walk further back; every
    undone event stays in the log.

    >>> undo(db, 7, "sludge", "ana", seen_revision=3).new_value  # doctest: +SKIP
    False
    """
    if field not in FIELDS:
        raise InvalidLabelError(f"unknown field {field!r}; expected one of {', '.join(FIELDS)}")
    check_text(note, "note")
    frame_id = check_id(frame_id)
    seen_revision = _check_revision(seen_revision)
    with write_transaction(db):
        _require_role(db, labeler, WRITE_ROLES, "undo labels")
        _check_seen(db, frame_id, seen_revision)
        changes = _effective_human_changes(db, frame_id, field)
        if not changes:
            raise InvalidLabelError(f"frame {frame_id} has no {field} change left to undo")
        target, before = changes[0], (changes[1].new_value if len(changes) > 1 else None)
        return append_event(db, frame_id, field, _stored(field, before), labeler, seen_revision, note, None, "undo",
                             ref_event=target.id)


def review_event(db: sqlite_utils.Database, event_id: int, reviewer: str, accept: bool, note: str = "") -> Review:
    """Accept or reject a label event.

    Rejecting a human change that still holds the field's value appends an event that restores the value
    before it (like an undo, under the reviewer's name); any other rejection is recorded only.

    >>> review_event(db, 42, "rita", accept=False, note="that is a PiP, not a split").revert.new_value  # doctest: +SKIP
    'vertical'
    """
    check_text(note, "note")
    event_id = check_id(event_id, "event_id")
    with write_transaction(db):
        _require_role(db, reviewer, ("reviewer",), "review labels")
        row = next(db.query("SELECT * FROM label_events WHERE id = ?", [event_id]), None)
        if row is None:
            raise NotFoundError(f"label event {event_id} is not in the store")
        event = _event_from_row(row)
        revert = None
        if not accept:
            changes = _effective_human_changes(db, event.frame_id, event.field)
            if changes and changes[0].id == event.id:
                before = changes[1].new_value if len(changes) > 1 else None
                revert = append_event(db, event.frame_id, event.field, _stored(event.field, before), reviewer,
                                       None, note, None, "reject", ref_event=event.id)
        created = utc_now()
        cursor = db.execute(
            "INSERT INTO reviews (event_id, reviewer, accepted, note, revert_event, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [event.id, reviewer, int(bool(accept)), note, revert.id if revert else None, created])
        return Review(id=cursor.lastrowid, event_id=event.id, reviewer=reviewer, accepted=bool(accept), note=note,
                      revert=revert, created_at=created)


def pending_reviews(db: sqlite_utils.Database, limit: int = 50) -> list[LabelEvent]:
    """Human label events nobody has reviewed yet, oldest first.

    >>> [e.id for e in pending_reviews(db, 5)]  # doctest: +SKIP
    [12, 13, 17]
    """
    rows = db.query(
        "SELECT e.* FROM label_events e WHERE e.source = 'human' AND e.kind IN ('set', 'range', 'undo')"
        " AND NOT EXISTS (SELECT 1 FROM reviews r WHERE r.event_id = e.id) ORDER BY e.id LIMIT ?", [int(limit)])
    return [_event_from_row(r) for r in rows]


# ---------------------------------------------------------------- reads


def current_labels(db: sqlite_utils.Database, video_id: str | None = None,
                   frame_ids: Sequence[int] | None = None) -> list[dict]:
    """The current label of each field per frame (None where never labelled), with who set it.

    >>> current_labels(db, video_id=video_id)[0]  # doctest: +SKIP
    {'frame_id': 1, 'video_id': '9f86…', 'frame_index': 0, 'time_s': 0.0, 'revision': 2, 'sludge': True,
     'sludge_labeler': 'ana', 'layout': 'vertical', ...}
    """
    where, params = [], []
    if video_id is not None:
        where.append("video_id = ?")
        params.append(video_id)
    if frame_ids is not None:
        ids = [int(i) for i in frame_ids]
        where.append(f"frame_id IN ({','.join('?' * len(ids)) or 'NULL'})")
        params += ids
    sql = "SELECT * FROM current_labels" + (" WHERE " + " AND ".join(where) if where else "")
    out = []
    for row in db.query(sql + " ORDER BY video_id, frame_index", params):
        row["sludge"] = None if row["sludge"] is None else bool(row["sludge"])
        out.append(row)
    return out


def get_frame(db: sqlite_utils.Database, frame_id: int, model_id: str | None = None) -> dict:
    """A frame with its absolute image path, current labels, and one model's prediction (with no model named:
    the store's only model version, if it holds one; else no prediction).

    >>> get_frame(db, 1)["revision"]  # doctest: +SKIP
    0
    """
    frame_id = check_id(frame_id)
    labels = current_labels(db, frame_ids=[frame_id])
    if not labels:
        raise NotFoundError(f"frame {frame_id} is not in the store")
    out = dict(labels[0])
    out["image"] = str(frame_image_path(db, frame_id))
    model_id = model_id or sole_model_id(db, refuse_several=False)
    pred = next(db.query("SELECT * FROM predictions WHERE frame_id = ? AND model_id = ?", [frame_id, model_id]), None)
    if pred is not None:
        pred["layout_scores"] = json.loads(pred["layout_scores"])
    out["prediction"] = pred
    return out


def video_frames(db: sqlite_utils.Database, video_id: str, model_id: str | None = None) -> list[dict]:
    """Every stored frame of a video in index order, with current labels and one model's scores (with no
    model named: the store's only model version, if it holds one; else no scores).

    >>> [f["frame_index"] for f in video_frames(db, video_id)]  # doctest: +SKIP
    [0, 15, 30]
    """
    model_id = model_id or sole_model_id(db, refuse_several=False)
    preds = {r["frame_id"]: r for r in db.query(
        "SELECT p.* FROM predictions p JOIN frames f ON f.id = p.frame_id WHERE f.video_id = ? AND p.model_id = ?",
        [video_id, model_id])}
    paths = dict(db.execute("SELECT id, image_path FROM frames WHERE video_id = ?", [video_id]).fetchall())
    media_dir = find_media_dir(db)
    out = []
    for row in current_labels(db, video_id=video_id):
        pred = preds.get(row["frame_id"])
        if pred is not None:
            pred = {**pred, "layout_scores": json.loads(pred["layout_scores"])}
        out.append({**row, "image": str(resolve_media_path(media_dir, paths[row["frame_id"]])), "prediction": pred})
    return out


def list_videos(db: sqlite_utils.Database, collection: str | None = None) -> list[dict]:
    """Stored videos with their frame counts, newest first; only one collection's when it is named.

    >>> list_videos(db)[0]["name"]  # doctest: +SKIP
    'clip.mp4'
    """
    where, params = ("WHERE v.collection = ?", [collection]) if collection else ("", [])
    return list(db.query(
        "SELECT v.*, (SELECT count(*) FROM frames f WHERE f.video_id = v.id) AS frames FROM videos v"
        f" {where} ORDER BY v.created_at DESC, v.id", params))


def get_video(db: sqlite_utils.Database, video_id: str) -> dict:
    """One stored video's row, its ``meta`` decoded from JSON.

    >>> get_video(db, video_id)["name"]  # doctest: +SKIP
    'clip.mp4'
    """
    row = next(db.query("SELECT * FROM videos WHERE id = ?", [check_text(video_id, "video id", MAX_NAME_CHARS)]),
               None)
    if row is None:
        raise NotFoundError(f"video {video_id!r} is not in the store")
    return {**row, "meta": json.loads(row["meta"] or "{}")}


def find_videos(db: sqlite_utils.Database, text: str = "", collection: str | None = None,
                limit: int = 100) -> list[dict]:
    """Stored videos whose name contains ``text`` (any case), newest first, at most ``limit``: id, name,
    collection, created_at and the number of stored frames. Only one collection's when it is named.

    >>> [v["name"] for v in find_videos(db, "split", limit=2)]  # doctest: +SKIP
    ['vertical_split.mp4', 'split_2.mp4']
    """
    check_text(text, "search text", MAX_NAME_CHARS)
    where, params = ["instr(lower(v.name), lower(?)) > 0"], [text.strip()]
    if collection is not None:
        where.append("v.collection = ?")
        params.append(collection)
    return list(db.query(
        "SELECT v.id, v.name, v.collection, v.created_at,"
        " (SELECT count(*) FROM frames f WHERE f.video_id = v.id) AS frames FROM videos v"
        f" WHERE {' AND '.join(where)} ORDER BY v.created_at DESC, v.id LIMIT ?", [*params, max(1, int(limit))]))


def check_collection(db: sqlite_utils.Database, collection: str | None) -> str | None:
    """The collection name when the store has videos in it (None passes: every collection).

    >>> check_collection(db, "crawl-2024")  # doctest: +SKIP
    'crawl-2024'
    """
    if collection is not None and db.execute("SELECT 1 FROM videos WHERE collection = ? LIMIT 1",
                                             [collection]).fetchone() is None:
        raise NotFoundError(f"no collection named {collection!r} in the store; the store has "
                            f"{', '.join(repr(c) for c in list_collection_names(db)) or 'none yet'}")
    return collection


def list_collection_names(db: sqlite_utils.Database) -> list[str]:
    """The names of the store's collections, sorted (read off the videos' collection index, no counting).

    >>> list_collection_names(db)  # doctest: +SKIP
    ['crawl-2024', 'uploads']
    """
    return [r[0] for r in db.execute("SELECT DISTINCT collection FROM videos ORDER BY collection")]


def count_collection_videos(db: sqlite_utils.Database) -> dict[str, int]:
    """Videos per collection, by name: a count over the videos' collection index, without the frames that
    list_collections joins (milliseconds at 100k videos, so a dropdown can show it each time it opens).

    >>> count_collection_videos(db)  # doctest: +SKIP
    {'crawl-2024': 1700, 'uploads': 3}
    """
    return {r[0]: r[1] for r in db.execute(
        "SELECT collection, count(*) FROM videos GROUP BY collection ORDER BY collection")}


def list_collections(db: sqlite_utils.Database) -> list[dict]:
    """Every collection with its number of videos and frames, by name.

    >>> list_collections(db)  # doctest: +SKIP
    [{'collection': 'uploads', 'videos': 3, 'frames': 48}]
    """
    return list(db.query(
        "SELECT v.collection, count(DISTINCT v.id) AS videos, count(f.id) AS frames FROM videos v"
        " LEFT JOIN frames f ON f.video_id = v.id GROUP BY v.collection ORDER BY v.collection"))
