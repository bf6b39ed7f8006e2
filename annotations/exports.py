"""Exports of the labels for retraining and for other tools; the same store gives byte-identical files.

Every export folder holds a ``manifest.json``: kind, snapshot id (the last label event id plus a hash of the
exported files), counts (records, per split, per provenance), the model versions whose predictions filled
in, and the sha256 of every file in the folder. Each export is also recorded in the ``exports`` table.

Training JSONL (``export_training_set`` -> ``training.jsonl``), read by the fine-tuning scripts
---------------------------------------------------------------------------------------------------
One JSON object per line, one line per frame, sorted by (video_id, frame_index), UTF-8, keys sorted::

    {"image": "images/ab12….png",     # relative to the export folder ("copy"), or absolute ("absolute")
     "image_sha256": "ab12…",
     "sludge": true,                  # bool
     "layout": "vertical",            # vertical | horizontal | pip | other | none ("none" when not sludge)
     "description": "…",              # the labelled description, else the model's, else ""
     "explanation": "Sludge: …",      # one sentence derived from sludge + layout, in the training data's style
     "provenance": "corrected",       # of the sludge label: corrected (a person) | raw (imported) | model
     "provenance_fields": {"sludge": "corrected", "layout": "model", "description": "none"},
     "labeler": "ana",                # who set the sludge label (null for model)
     "split": "train",                # train | val | test, by video (split_videos): no video spans two splits
     "video_id": "9f86…", "frame_id": 12, "frame_index": 30, "time_s": 1.0,
     "model_id": "tiny@1", "p_sludge": 0.91}   # the model version used for fill-ins and its score (or null)

``provenance_fields`` values: corrected | raw | model | derived ("none" layout of a non-sludge frame) |
default (a sludge frame nobody, not even a model, gave a layout: "other") | none (empty description).
Frames with no sludge label are left out by default (counted in the manifest as ``skipped_unlabelled``): an
export holds human and imported labels only. With ``include_model_labels`` they are written as the model's
pseudo-labels (provenance "model") where the model version scored them, and the manifest says so under
``pseudo_labels`` ({"included", "model_id", "records"}).

Splits (``split_videos``): by video, per collection. Each video has a fixed place in a hash order of its id;
a video below ``test_fraction`` is test, below ``test_fraction + val_fraction`` val, the rest train, and a
collection of ``min_videos_for_holdout`` or more videos has at least ``min_test_videos`` test and
``min_val_videos`` val videos (the first ones in hash order), so a small collection is not all train. A
video keeps its split as videos are added, except one that a small collection promoted to val or test
(it may move once the collection has enough videos of its own in that split). The review holdout
(``annotations.review``) is the test split of this same rule.

Label Studio tasks: ``data`` holds the image and where the frame comes from; the current human (and imported)
labels are the task's ``annotations`` ([{"result": [...]}]) and the model's answer its ``predictions``, as
Label Studio imports them.

Imagefolder (``export_imagefolder``): ``{train,validation,test}/<video>-<index>.<ext>`` plus a
``metadata.jsonl`` per split with ``file_name`` and the fields above, loadable with
``datasets.load_dataset("imagefolder", data_dir=...)``.

Label Studio (``export_label_studio``): ``tasks.json`` (one task per frame, our scores as pre-annotations
under ``predictions``), ``label_config.xml`` for the project, and ``images/``.

    manifest = export_training_set(db, "data/exports/run1", model_id="tiny@1")
    push_export_to_hub("data/exports/run1", "hf://datasets/me/sludge-labels")
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
import sqlite_utils

from annotations.schema import (
    InvalidLabelError,
    read_transaction,
    resolve_inside,
    resolve_media_path,
    utc_now,
    write_transaction,
)
from annotations.targets import copy_tree, parse_target, upload_folder_to_hub
from annotations.writes import find_media_dir, sole_model_id

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
# datasets' imagefolder recognises these folder names as the three splits.
IMAGEFOLDER_SPLITS = {"train": "train", "val": "validation", "test": "test"}

EXPLANATIONS = {
    "vertical": "Sludge: two unrelated streams share the frame, stacked top and bottom.",
    "horizontal": "Sludge: two unrelated streams share the frame, side by side.",
    "pip": "Sludge: a second, unrelated stream is inset in the frame.",
    "other": "Sludge: several unrelated streams are tiled in one frame.",
    "none": "Not sludge: the frame shows a single stream.",
}


@dataclass(frozen=True)
class ExportConfig:
    """What goes into an export and how it is split."""

    # 80/10/10 by video: enough validation videos to pick a checkpoint, without starving training.
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    # Changing the salt reshuffles which videos land in which split; keep it fixed across retrainings so a
    # test video never becomes a training video.
    split_salt: str = "sludgelens-split-v1"
    # A collection this large gets a test and a validation video even when no video hashes below the
    # fractions (with 10 % each, most collections under ~10 videos would otherwise be all train).
    min_videos_for_holdout: int = 3
    min_test_videos: int = 1
    min_val_videos: int = 1
    # Unlabelled frames the model scored can stand in as pseudo-labels, but a model trained on its own guesses
    # learns its own mistakes: off unless asked for, and the manifest says whether they are in.
    include_model_labels: bool = False
    # P(sludge) at or above this makes a model pseudo-label (and a Label Studio pre-annotation) "sludge";
    # pass the engine's threshold so an export calls a frame what the app showed for it.
    threshold: float = 0.5


def split_key(video_id: str, config: ExportConfig = ExportConfig()) -> float:
    """A video's place in the split order, in [0, 1): a hash of its id and the salt.

    >>> 0.0 <= split_key("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08") < 1.0
    True
    """
    digest = hashlib.sha256(f"{config.split_salt}:{video_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def split_for_video(video_id: str, config: ExportConfig = ExportConfig()) -> str:
    """The split of a video by its hash alone: what :func:`split_videos` gives in a collection large enough to
    need no minimum counts.

    >>> split_for_video("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08") in SPLITS
    True
    """
    u = split_key(video_id, config)
    if u < config.test_fraction:
        return "test"
    if u < config.test_fraction + config.val_fraction:
        return "val"
    return "train"


def assign_splits(video_ids, config: ExportConfig = ExportConfig()) -> dict[str, str]:
    """The splits of one collection's videos: by hash order, with the minimum counts of a small collection.

    >>> splits = assign_splits([f"video-{i}" for i in range(4)])
    >>> sorted(splits.values())
    ['test', 'train', 'train', 'val']
    >>> assign_splits(["a", "b"]) == {"a": split_for_video("a"), "b": split_for_video("b")}
    True
    """
    order = sorted(set(video_ids), key=lambda v: (split_key(v, config), v))
    keys = [split_key(v, config) for v in order]
    n_test = sum(k < config.test_fraction for k in keys)
    n_val = sum(config.test_fraction <= k < config.test_fraction + config.val_fraction for k in keys)
    if len(order) >= config.min_videos_for_holdout:
        n_test = max(n_test, config.min_test_videos)
        n_val = max(n_val, config.min_val_videos)
        # Training keeps at least one video.
        n_val = max(0, min(n_val, len(order) - n_test - 1))
    return {v: "test" if i < n_test else "val" if i < n_test + n_val else "train" for i, v in enumerate(order)}


def split_videos(db: sqlite_utils.Database, config: ExportConfig = ExportConfig()) -> dict[str, str]:
    """video id -> train | val | test for every stored video, collection by collection (:func:`assign_splits`).

    >>> split_videos(db)["9f86d081884c7d65..."]  # doctest: +SKIP
    'test'
    """
    collections: dict[str, list[str]] = {}
    for video_id, collection in db.execute("SELECT id, collection FROM videos"):
        collections.setdefault(collection, []).append(video_id)
    out: dict[str, str] = {}
    for video_ids in collections.values():
        out.update(assign_splits(video_ids, config))
    return out


_RECORDS_SQL = """
SELECT c.frame_id, c.video_id, c.frame_index, c.time_s,
       c.sludge, c.sludge_labeler, c.sludge_source,
       c.layout, c.layout_source, c.description, c.description_source,
       f.image_path, f.image_sha256,
       p.p_sludge, p.layout AS model_layout, p.description AS model_description
FROM current_labels c
JOIN frames f ON f.id = c.frame_id
LEFT JOIN predictions p ON p.frame_id = c.frame_id AND p.model_id = :model
ORDER BY c.video_id, c.frame_index
"""


# A label's provenance in an export, by the source of its event; anything else is the model's.
_PROVENANCE = {"human": "corrected", "import": "raw"}


def collect_records(db: sqlite_utils.Database, model_id: str | None = None,
                    config: ExportConfig = ExportConfig()) -> tuple[list[dict], dict]:
    """The training records (without the image key) and what was left out, read in one transaction.

    >>> records, info = collect_records(db, "tiny@1")  # doctest: +SKIP
    >>> records[0]["provenance"], info["skipped_unlabelled"]  # doctest: +SKIP
    ('corrected', 12)
    """
    model_id = model_id or sole_model_id(db)
    records, skipped = [], 0
    splits = split_videos(db, config)
    threshold, include_model = config.threshold, config.include_model_labels
    # Plain tuples, unpacked by position: building a dict per row is a third of reading 1.6 M frames.
    for (frame_id, video_id, frame_index, time_s, sludge, sludge_labeler, sludge_source, layout, layout_source,
         description, description_source, image_path, image_sha256, p, model_layout,
         model_description) in db.execute(_RECORDS_SQL, {"model": model_id}):
        if sludge is not None:
            sludge, sludge_prov = bool(sludge), _PROVENANCE.get(sludge_source, "model")
        elif include_model and p is not None:
            sludge, sludge_prov = p >= threshold, "model"
        else:
            skipped += 1
            continue
        if layout is not None:
            layout_prov = _PROVENANCE.get(layout_source, "model")
        elif not sludge:
            layout, layout_prov = "none", "derived"
        elif p is not None and model_layout not in (None, "none"):
            layout, layout_prov = model_layout, "model"
        else:
            layout, layout_prov = "other", "default"
        if description is not None:
            description_prov = _PROVENANCE.get(description_source, "model")
        elif model_description:
            description, description_prov = model_description, "model"
        else:
            description, description_prov = "", "none"
        records.append({
            "frame_id": frame_id,
            "video_id": video_id,
            "frame_index": frame_index,
            "time_s": time_s,
            "image_path": image_path,
            "image_sha256": image_sha256,
            "sludge": sludge,
            "layout": layout,
            "description": description,
            "explanation": EXPLANATIONS["none" if not sludge else layout],
            "provenance": sludge_prov,
            "provenance_fields": {"sludge": sludge_prov, "layout": layout_prov, "description": description_prov},
            "labeler": sludge_labeler if sludge_prov != "model" else None,
            "split": splits[video_id],
            "model_id": model_id if p is not None else None,
            "p_sludge": p,
        })
    last_event = db.execute("SELECT coalesce(max(id), 0) FROM label_events").fetchone()[0]
    return records, {"skipped_unlabelled": skipped, "last_event": last_event, "model_id": model_id,
                     "pseudo_labels": _pseudo_labels(records, config, model_id)}


def _pseudo_labels(records: list[dict], config: ExportConfig, model_id: str | None) -> dict:
    """What the manifest says about the model's pseudo-labels: whether asked for, whose, and how many."""
    return {"included": config.include_model_labels, "model_id": model_id if config.include_model_labels else None,
            "records": sum(r["provenance"] == "model" for r in records)}


def _dumps(obj) -> str:
    """One JSON line, keys sorted, UTF-8 kept. orjson writes a record in a tenth of the standard library's
    time, which was a third of exporting 1.6 M frame labels."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# The names save_media gives: "ab/<sha256>.png". Such a name cannot leave the media folder, so it needs no
# resolve() (a dozen syscalls per frame, the larger part of exporting 100 k frames).
_MEDIA_NAME = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{64}\.(png|jpg)$")


def _media_path(media_root: Path, relative: str) -> str:
    """Absolute path of a stored image: plain join for a content-addressed name, checked resolve otherwise."""
    if _MEDIA_NAME.match(relative):
        return f"{media_root}/{relative}"
    return str(resolve_media_path(media_root, relative))


def _suffix(relative: str) -> str:
    return os.path.splitext(relative)[1]


def _copy_media(media_root: Path, relative: str, expected_sha: str, staging: Path, name: str,
                copied: dict[str, str]) -> str:
    """Copy one stored image to ``staging/name`` (once per name, checking its hash); returns its sha256."""
    if name in copied:
        return copied[name]
    data = Path(_media_path(media_root, relative)).read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if sha != expected_sha:
        raise InvalidLabelError(f"media file {relative!r} does not match its recorded sha256; the media folder is "
                                "damaged (restore it from a snapshot)")
    target = staging / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    copied[name] = sha
    return sha


@contextmanager
def _without_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while millions of records are built: none of them holds a cycle,
    and each collection would walk all those built so far (a tenth of exporting 1.6 M frame labels)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextmanager
def _export_folder(out_dir: str | Path) -> Iterator[Path]:
    """A fresh staging folder that replaces ``out_dir`` when the export succeeds.

    ``out_dir`` must be missing, empty, or a previous export (it has a manifest.json), so nothing else is
    ever deleted.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "manifest.json").is_file():
        raise InvalidLabelError(f"{str(out_dir)!r} is not empty and holds no export; choose an empty folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield staging
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def _finish(db, staging: Path, out_dir: Path, kind: str, counts: dict, model_versions: list[str],
            last_event: int, extra: dict, hashed: dict[str, str]) -> dict:
    """Hash every file, write manifest.json into the staging folder, record the export."""
    files = {}
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        rel = path.relative_to(staging).as_posix()
        files[rel] = hashed.get(rel) or _sha256_file(path)
    listing = hashlib.sha256("".join(f"{k}\t{v}\n" for k, v in sorted(files.items())).encode()).hexdigest()
    manifest = {
        "kind": kind,
        "format_version": FORMAT_VERSION,
        "snapshot_id": f"ev{last_event}-{listing[:16]}",
        "last_label_event": last_event,
        "counts": counts,
        "model_versions": model_versions,
        "files": files,
        **extra,
    }
    text = json.dumps(manifest, sort_keys=True, ensure_ascii=False, indent=2) + "\n"
    (staging / "manifest.json").write_text(text, encoding="utf-8")
    with write_transaction(db):
        db["exports"].insert({
            "snapshot_id": manifest["snapshot_id"],
            "kind": kind,
            "out_dir": str(Path(out_dir).resolve()),
            "counts": json.dumps(counts, sort_keys=True),
            "manifest_sha256": hashlib.sha256(text.encode()).hexdigest(),
            "created_at": utc_now(),
        })
    return manifest


def _counts(records: list[dict], info: dict) -> dict:
    return {
        "records": len(records),
        "videos": len({r["video_id"] for r in records}),
        "by_split": dict(sorted(Counter(r["split"] for r in records).items())),
        "by_provenance": dict(sorted(Counter(r["provenance"] for r in records).items())),
        "sludge": sum(r["sludge"] for r in records),
        "skipped_unlabelled": info["skipped_unlabelled"],
    }


def _model_versions(records: list[dict]) -> list[str]:
    return sorted({r["model_id"] for r in records if r["model_id"]})


def export_training_set(db: sqlite_utils.Database, out_dir: str | Path, model_id: str | None = None,
                        images: str = "copy", config: ExportConfig = ExportConfig()) -> dict:
    """Write ``training.jsonl`` (format in the module docstring) and ``manifest.json``; returns the manifest.

    ``images="copy"`` copies each distinct image to ``images/<sha256>.<ext>`` and writes relative paths, so
    the folder is self-contained (and can be pushed to the Hub); ``"absolute"`` writes absolute paths into
    the media folder and copies nothing.

    >>> export_training_set(db, "data/exports/run1", model_id="tiny@1")["counts"]["by_provenance"]  # doctest: +SKIP
    {'corrected': 310, 'model': 2900, 'raw': 1200}
    """
    if images not in ("copy", "absolute"):
        raise InvalidLabelError(f"images must be 'copy' or 'absolute', not {images!r}")
    media_dir = find_media_dir(db).resolve()
    with read_transaction(db), _without_gc():
        records, info = collect_records(db, model_id, config)
    out_dir = Path(out_dir)
    with _export_folder(out_dir) as staging:
        copied: dict[str, str] = {}
        with open(staging / "training.jsonl", "w", encoding="utf-8", buffering=1 << 20) as out:
            for record in records:
                relative = record.pop("image_path")
                if images == "copy":
                    name = f"images/{record['image_sha256']}{_suffix(relative)}"
                    _copy_media(media_dir, relative, record["image_sha256"], staging, name, copied)
                    record["image"] = name
                else:
                    record["image"] = _media_path(media_dir, relative)
                out.write(_dumps(record) + "\n")
        manifest = _finish(db, staging, out_dir, "training-jsonl", _counts(records, info), _model_versions(records),
                           info["last_event"], {"images": images, "split": _split_info(config),
                                                "pseudo_labels": info["pseudo_labels"]}, copied)
    return manifest


def _split_info(config: ExportConfig) -> dict:
    return {"by": "video_id hash order per collection", "salt": config.split_salt,
            "val_fraction": config.val_fraction, "test_fraction": config.test_fraction,
            "min_videos_for_holdout": config.min_videos_for_holdout, "min_test_videos": config.min_test_videos,
            "min_val_videos": config.min_val_videos}


def export_imagefolder(db: sqlite_utils.Database, out_dir: str | Path, model_id: str | None = None,
                       config: ExportConfig = ExportConfig()) -> dict:
    """Write an imagefolder dataset (one folder per split with metadata.jsonl); returns the manifest.

    >>> export_imagefolder(db, "data/exports/hf")  # doctest: +SKIP
    >>> datasets.load_dataset("imagefolder", data_dir="data/exports/hf")["train"][0]["layout"]  # doctest: +SKIP
    'vertical'
    """
    media_dir = find_media_dir(db).resolve()
    with read_transaction(db), _without_gc():
        records, info = collect_records(db, model_id, config)
    out_dir = Path(out_dir)
    with _export_folder(out_dir) as staging:
        per_split: dict[str, list[str]] = {}
        copied: dict[str, str] = {}
        for record in records:
            relative = record.pop("image_path")
            folder = IMAGEFOLDER_SPLITS[record["split"]]
            file_name = f"{record['video_id'][:16]}-{record['frame_index']:06d}{_suffix(relative)}"
            _copy_media(media_dir, relative, record["image_sha256"], staging, f"{folder}/{file_name}", copied)
            meta = {k: v for k, v in record.items() if k not in ("provenance_fields", "model_id", "p_sludge")}
            meta["labeler"] = meta["labeler"] or ""
            per_split.setdefault(folder, []).append(_dumps({"file_name": file_name, **meta}))
        for folder, lines in sorted(per_split.items()):
            (staging / folder / "metadata.jsonl").write_text("".join(x + "\n" for x in lines), encoding="utf-8")
        manifest = _finish(db, staging, out_dir, "imagefolder", _counts(records, info), _model_versions(records),
                           info["last_event"], {"split": _split_info(config), "pseudo_labels": info["pseudo_labels"]},
                           copied)
    return manifest


def label_studio_config() -> str:
    """The Label Studio labeling config matching our fields and the pre-annotations we export.

    >>> "<Choices name=\\"sludge\\"" in label_studio_config()
    True
    """
    layouts = "\n".join(f'    <Choice value="{name}"/>' for name in EXPLANATIONS)
    return (
        "<View>\n"
        '  <Image name="image" value="$image"/>\n'
        '  <Choices name="sludge" toName="image" choice="single" showInline="true">\n'
        '    <Choice value="sludge"/>\n'
        '    <Choice value="not_sludge"/>\n'
        "  </Choices>\n"
        '  <Choices name="layout" toName="image" choice="single" showInline="true">\n'
        f"{layouts}\n"
        "  </Choices>\n"
        '  <TextArea name="description" toName="image" rows="3"/>\n'
        "</View>\n"
    )


def _choice(frame_id: int, name: str, value: str) -> dict:
    return {"id": f"{frame_id}-{name}", "from_name": name, "to_name": "image", "type": "choices",
            "value": {"choices": [value]}}


def _label_studio_annotation(row: dict) -> dict | None:
    """A frame's current labels (a person's, or imported ground truth) as one Label Studio annotation, or None.

    >>> _label_studio_annotation({"frame_id": 3, "sludge": 1, "layout": "pip", "description": None})["result"][1]
    {'id': '3-layout', 'from_name': 'layout', 'to_name': 'image', 'type': 'choices', 'value': {'choices': ['pip']}}
    """
    frame_id = row["frame_id"]
    result = []
    if row["sludge"] is not None:
        result.append(_choice(frame_id, "sludge", "sludge" if row["sludge"] else "not_sludge"))
    if row["layout"] is not None:
        result.append(_choice(frame_id, "layout", row["layout"]))
    if row["description"]:
        result.append({"id": f"{frame_id}-description", "from_name": "description", "to_name": "image",
                       "type": "textarea", "value": {"text": [row["description"]]}})
    return {"result": result} if result else None


def export_label_studio(db: sqlite_utils.Database, out_dir: str | Path, model_id: str | None = None,
                        image_url_prefix: str = "/data/local-files/?d=images/",
                        config: ExportConfig = ExportConfig()) -> dict:
    """Write Label Studio ``tasks.json``: each frame's current labels as its annotation and our predictions as
    pre-annotations; returns the manifest.

    Images are copied to ``images/``; with the default prefix, serve them by starting Label Studio with
    LOCAL_FILES_SERVING_ENABLED=true and LOCAL_FILES_DOCUMENT_ROOT set to the export folder.

    >>> export_label_studio(db, "data/exports/ls", model_id="tiny@1")["counts"]["tasks"]  # doctest: +SKIP
    480
    """
    media_dir = find_media_dir(db).resolve()
    model_id = model_id or sole_model_id(db)
    with read_transaction(db):
        rows = list(db.query(
            "SELECT c.*, f.image_path, f.image_sha256, p.p_sludge, p.layout AS model_layout,"
            " p.description AS model_description FROM current_labels c JOIN frames f ON f.id = c.frame_id"
            " LEFT JOIN predictions p ON p.frame_id = c.frame_id AND p.model_id = ?"
            " ORDER BY c.video_id, c.frame_index", [model_id]))
        last_event = db.execute("SELECT coalesce(max(id), 0) FROM label_events").fetchone()[0]
    out_dir = Path(out_dir)
    with _export_folder(out_dir) as staging:
        tasks: list[dict] = []
        copied: dict[str, str] = {}
        for row in rows:
            name = f"{row['image_sha256']}{_suffix(row['image_path'])}"
            _copy_media(media_dir, row["image_path"], row["image_sha256"], staging, f"images/{name}", copied)
            task = {
                "id": row["frame_id"],
                "data": {
                    "image": image_url_prefix + name,
                    "frame_id": row["frame_id"],
                    "video_id": row["video_id"],
                    "frame_index": row["frame_index"],
                    "time_s": row["time_s"],
                },
            }
            annotation = _label_studio_annotation(row)
            if annotation is not None:
                task["annotations"] = [annotation]
                # Who set the sludge label and how: a correction, or imported (raw) ground truth.
                field = next(f for f in ("sludge", "layout", "description") if row[f] is not None)
                task["meta"] = {"labeler": row[f"{field}_labeler"],
                                "provenance": _PROVENANCE.get(row[f"{field}_source"], "model")}
            p = row["p_sludge"]
            if p is not None:
                predicted = p >= config.threshold
                result = [
                    {"id": f"{row['frame_id']}-sludge", "from_name": "sludge", "to_name": "image", "type": "choices",
                     "value": {"choices": ["sludge" if predicted else "not_sludge"]}},
                    {"id": f"{row['frame_id']}-layout", "from_name": "layout", "to_name": "image", "type": "choices",
                     "value": {"choices": [row["model_layout"] if predicted else "none"]}},
                ]
                if row["model_description"]:
                    result.append({"id": f"{row['frame_id']}-description", "from_name": "description",
                                   "to_name": "image", "type": "textarea",
                                   "value": {"text": [row["model_description"]]}})
                task["predictions"] = [{"model_version": model_id, "score": round(max(p, 1 - p), 6),
                                        "result": result}]
            tasks.append(task)
        # One task per line: still one JSON list for Label Studio, written by json's fast C encoder (indent=
        # would switch to the pure-Python one, several times slower on 100 k tasks).
        body = ",\n".join(json.dumps(task, sort_keys=True, ensure_ascii=False) for task in tasks)
        (staging / "tasks.json").write_text(f"[\n{body}\n]\n" if tasks else "[]\n", encoding="utf-8")
        (staging / "label_config.xml").write_text(label_studio_config(), encoding="utf-8")
        counts = {"tasks": len(tasks), "with_annotations": sum("annotations" in t for t in tasks),
                  "with_predictions": sum("predictions" in t for t in tasks)}
        versions = [model_id] if model_id and counts["with_predictions"] else []
        manifest = _finish(db, staging, out_dir, "label-studio", counts, versions, last_event,
                           {"image_url_prefix": image_url_prefix}, copied)
    return manifest


def has_export(db: sqlite_utils.Database, snapshot_id: str | None) -> bool:
    """Whether this store wrote the export with this snapshot id (its ``exports`` table has it).

    >>> has_export(db, manifest["snapshot_id"])  # doctest: +SKIP
    True
    """
    return bool(snapshot_id) and db.execute(
        "SELECT 1 FROM exports WHERE snapshot_id = ?", [snapshot_id]).fetchone() is not None


def push_export_to_hub(export_dir: str | Path, target: str | Path, token: str | None = None,
                       path_in_repo: str | None = None) -> str:
    """Push an export folder to a Hub dataset repo, or copy it into a local target folder; returns where.

    ``path_in_repo`` defaults to ``exports/<snapshot id>``. Refuses a folder without a manifest, and a
    training export with absolute image paths (they would mean nothing elsewhere).

    >>> push_export_to_hub("data/exports/run1", "hf://datasets/me/sludge-labels")  # doctest: +SKIP
    'https://huggingface.co/datasets/me/sludge-labels/commit/…'
    """
    export_dir = Path(export_dir)
    manifest_path = export_dir / "manifest.json"
    if not manifest_path.is_file():
        raise InvalidLabelError(f"{str(export_dir)!r} has no manifest.json; push a folder an export wrote")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("images") == "absolute":
        raise InvalidLabelError("this export points at images by absolute path; export again with images='copy'")
    path_in_repo = path_in_repo or f"exports/{manifest['snapshot_id']}"
    kind, where = parse_target(target)
    if kind == "local":
        destination = resolve_inside(where, path_in_repo, "path_in_repo")
        return str(copy_tree(export_dir, destination))
    return upload_folder_to_hub(export_dir, str(where), path_in_repo, token=token,
                                commit_message=f"Export {manifest['kind']} {manifest['snapshot_id']}")
