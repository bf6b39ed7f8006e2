"""Durable copies of the store: SQLite backup-API snapshots, kept in a folder or a Hub dataset repo.

A Space has no persistent disk, so the store lives on local disk and is copied out on a schedule, and
copied back at start when the local file is missing. A snapshot target (local folder, or Hub dataset repo
mirrored through a local folder) holds::

    snapshots/sludgelens-20250101T120000123456Z.db   one consistent copy per snapshot (SQLite backup API)
    media/ab/ab12….png                                the frame images, content-addressed, copied once

A snapshot is taken with the online backup API while labelers keep writing, checked with
``PRAGMA integrity_check``, switched to a single-file journal, fsynced and renamed into place; an
identical copy of the newest snapshot is not kept twice.

    snapshot_store("data/sludgelens.db", "/backups", media_dir="data/media")
    restore_latest_snapshot("/backups", "data/sludgelens.db", media_dir="data/media")
    scheduler = schedule_snapshots("data/sludgelens.db", "hf://datasets/me/sludge-store", every_s=900)
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path

from annotations.schema import InvalidLabelError, StoreConfig
from annotations.targets import (
    download_from_hub,
    parse_target,
    upload_file_to_hub,
    upload_folder_to_hub,
)

log = logging.getLogger(__name__)

SNAPSHOT_PREFIX = "sludgelens-"
# A day of 15-minute snapshots; older ones add little once newer ones exist.
DEFAULT_KEEP = 96


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_snapshots(target_dir: str | Path) -> list[Path]:
    """Snapshot files under ``target_dir/snapshots``, oldest first (their names sort by time).

    >>> [p.name for p in list_snapshots("/backups")]  # doctest: +SKIP
    ['sludgelens-20250101T120000123456Z.db']
    """
    folder = Path(target_dir) / "snapshots"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f"{SNAPSHOT_PREFIX}*.db") if p.is_file())


def check_integrity(db_path: str | Path) -> str:
    """``PRAGMA integrity_check`` of a SQLite file: "ok", or what is wrong with it.

    >>> check_integrity("data/sludgelens.db")  # doctest: +SKIP
    'ok'
    """
    conn = sqlite3.connect(f"file:{Path(db_path)}?mode=ro", uri=True)
    try:
        return "\n".join(row[0] for row in conn.execute("PRAGMA integrity_check"))
    except sqlite3.DatabaseError as error:
        return f"not a readable SQLite file: {error}"
    finally:
        conn.close()


def sync_media(source: Path, destination: Path) -> int:
    """Copy content-addressed media files missing from ``destination``; returns how many were copied.

    >>> sync_media(Path("data/media"), Path("/backups/media"))  # doctest: +SKIP
    12
    """
    if not source.is_dir():
        return 0
    copied = 0
    for path in sorted(source.glob("*/*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        target = destination / path.parent.name / path.name
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".tmp-{target.name}")
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)
        copied += 1
    return copied


def snapshot_store(db_path: str | Path, target_dir: str | Path, media_dir: str | Path | None = None,
                   keep: int = DEFAULT_KEEP, config: StoreConfig | None = None) -> Path:
    """Take a consistent snapshot of the store into ``target_dir/snapshots``; returns the snapshot's path.

    If the newest snapshot already holds identical bytes, the new copy is dropped and that one is returned.
    ``media_dir``'s new files are copied to ``target_dir/media``; only the newest ``keep`` snapshots stay.

    >>> snapshot_store("data/sludgelens.db", "/backups", media_dir="data/media")  # doctest: +SKIP
    PosixPath('/backups/snapshots/sludgelens-20250101T120000123456Z.db')
    """
    db_path, target_dir = Path(db_path), Path(target_dir)
    if not db_path.is_file():
        raise InvalidLabelError(f"there is no store at {str(db_path)!r} to snapshot")
    config = config or StoreConfig()
    folder = target_dir / "snapshots"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    final = folder / f"{SNAPSHOT_PREFIX}{stamp}.db"
    tmp = folder / f".tmp-{final.name}"
    previous = list_snapshots(target_dir)
    source = sqlite3.connect(str(db_path), timeout=config.busy_timeout_ms / 1000)
    try:
        dest = sqlite3.connect(str(tmp))
        try:
            source.backup(dest)
            dest.execute("PRAGMA journal_mode = DELETE")
            verdict = "\n".join(row[0] for row in dest.execute("PRAGMA integrity_check"))
        finally:
            dest.close()
    finally:
        source.close()
    try:
        if verdict != "ok":
            raise InvalidLabelError(f"the snapshot of {str(db_path)!r} failed its integrity check: {verdict}")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if previous and _sha256_file(previous[-1]) == _sha256_file(tmp):
            final = previous[-1]
        else:
            os.replace(tmp, final)
            _fsync_dir(folder)
    finally:
        tmp.unlink(missing_ok=True)
    if media_dir is not None:
        sync_media(Path(media_dir), target_dir / "media")
    for old in list_snapshots(target_dir)[:-max(1, keep)]:
        old.unlink(missing_ok=True)
    return final


def restore_latest_snapshot(target_dir: str | Path, db_path: str | Path, media_dir: str | Path | None = None,
                            force: bool = False) -> Path | None:
    """Put the newest intact snapshot in place of a missing store; returns the snapshot used, or None.

    Does nothing while ``db_path`` exists, unless ``force``. A snapshot that fails its integrity check is
    skipped for the next newest. Media files missing locally are copied back.

    >>> restore_latest_snapshot("/backups", "data/sludgelens.db", media_dir="data/media")  # doctest: +SKIP
    PosixPath('/backups/snapshots/sludgelens-20250101T120000123456Z.db')
    """
    target_dir, db_path = Path(target_dir), Path(db_path)
    if db_path.exists() and not force:
        return None
    chosen = None
    for snapshot in reversed(list_snapshots(target_dir)):
        verdict = check_integrity(snapshot)
        if verdict == "ok":
            chosen = snapshot
            break
        log.warning("skipping snapshot %s: %s", snapshot.name, verdict)
    if chosen is None:
        return None
    db_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = db_path.with_name(f".tmp-{db_path.name}")
    shutil.copyfile(chosen, tmp)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    for suffix in ("-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    os.replace(tmp, db_path)
    if media_dir is not None:
        sync_media(target_dir / "media", Path(media_dir))
    return chosen


def _staging_dir(db_path: Path) -> Path:
    """The local mirror of a Hub target, next to the store."""
    return db_path.parent / f".{db_path.stem}-snapshots"


def backup_store(db_path: str | Path, target: str | Path, media_dir: str | Path | None = None,
                 keep: int = DEFAULT_KEEP, token: str | None = None) -> Path:
    """Snapshot the store to a target: a local folder, or a Hub dataset repo (through a local mirror).

    >>> backup_store("data/sludgelens.db", "hf://datasets/me/sludge-store", media_dir="data/media")  # doctest: +SKIP
    PosixPath('data/.sludgelens-snapshots/snapshots/sludgelens-20250101T120000123456Z.db')
    """
    kind, where = parse_target(target)
    if kind == "local":
        return snapshot_store(db_path, where, media_dir, keep)
    staging = _staging_dir(Path(db_path))
    newest_before = (list_snapshots(staging) or [None])[-1]
    snapshot = snapshot_store(db_path, staging, media_dir, keep=2)
    if snapshot != newest_before:
        upload_file_to_hub(snapshot, str(where), f"snapshots/{snapshot.name}", token=token,
                           commit_message=f"Snapshot {snapshot.name}")
    if media_dir is not None and (staging / "media").is_dir():
        upload_folder_to_hub(staging / "media", str(where), "media", token=token, commit_message="Media files")
    return snapshot


def restore_store(target: str | Path, db_path: str | Path, media_dir: str | Path | None = None,
                  force: bool = False, token: str | None = None) -> Path | None:
    """Restore the newest snapshot from a local folder or a Hub dataset repo when the store is missing.

    >>> restore_store("hf://datasets/me/sludge-store", "data/sludgelens.db", media_dir="data/media")  # doctest: +SKIP
    PosixPath('data/.sludgelens-snapshots/snapshots/sludgelens-20250101T120000123456Z.db')
    """
    if Path(db_path).exists() and not force:
        return None
    kind, where = parse_target(target)
    if kind == "local":
        return restore_latest_snapshot(where, db_path, media_dir, force)
    staging = _staging_dir(Path(db_path))
    from huggingface_hub import HfApi

    files = HfApi(token=token).list_repo_files(str(where), repo_type="dataset")
    names = sorted(f for f in files if f.startswith(f"snapshots/{SNAPSHOT_PREFIX}") and f.endswith(".db"))
    if not names:
        return None
    patterns = names[-3:] + (["media/*"] if media_dir is not None else [])
    download_from_hub(str(where), staging, patterns, token=token)
    return restore_latest_snapshot(staging, db_path, media_dir, force)


class SnapshotScheduler:
    """Takes a snapshot every ``every_s`` seconds on a daemon thread until stopped; failures are logged
    and kept in ``last_error``, never raised into the app.

    >>> scheduler = SnapshotScheduler("data/sludgelens.db", "/backups", every_s=900).start()  # doctest: +SKIP
    >>> scheduler.stop()  # doctest: +SKIP
    """

    def __init__(self, db_path: str | Path, target: str | Path, every_s: float, media_dir: str | Path | None = None,
                 keep: int = DEFAULT_KEEP, token: str | None = None):
        if every_s <= 0:
            raise InvalidLabelError(f"every_s must be positive, not {every_s!r}")
        parse_target(target)
        self.db_path, self.target, self.every_s = Path(db_path), target, float(every_s)
        self.media_dir, self.keep, self.token = media_dir, keep, token
        self.last_snapshot: Path | None = None
        self.last_error: str | None = None
        self.runs = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> Path | None:
        """Take one snapshot now; returns it, or None when it failed (see ``last_error``)."""
        try:
            self.last_snapshot = backup_store(self.db_path, self.target, self.media_dir, self.keep, self.token)
            self.last_error = None
        except Exception as error:  # noqa: BLE001 - a failed upload must not take the app down; it is logged
            self.last_error = f"{type(error).__name__}: {error}"
            log.exception("snapshot of %s to %s failed", self.db_path, self.target)
            return None
        finally:
            self.runs += 1
        return self.last_snapshot

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.run_once()

    def start(self) -> SnapshotScheduler:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="sludgelens-snapshots", daemon=True)
            self._thread.start()
        return self

    def stop(self, final_snapshot: bool = False) -> None:
        """Stop the schedule (optionally taking one last snapshot, e.g. at shutdown)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.every_s + 5)
        if final_snapshot:
            self.run_once()


def schedule_snapshots(db_path: str | Path, target: str | Path, every_s: float, media_dir: str | Path | None = None,
                       keep: int = DEFAULT_KEEP, token: str | None = None) -> SnapshotScheduler:
    """Start snapshotting the store to ``target`` every ``every_s`` seconds; returns the running scheduler.

    >>> scheduler = schedule_snapshots("data/sludgelens.db", "hf://datasets/me/sludge-store", 900)  # doctest: +SKIP
    """
    return SnapshotScheduler(db_path, target, every_s, media_dir, keep, token).start()
