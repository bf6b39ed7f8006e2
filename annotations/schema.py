"""The store's schema, its migrations, and how a connection to it is opened.

One SQLite file holds everything the labelers produce. The schema is applied by sqlite-utils' own
migration support (``sqlite_utils.Migrations``), so an older file is brought up to date on open and a
newer schema is one more decorated function below.

Tables (to add a table or a column, see "Where to add a store migration" in ARCHITECTURE.md):

- ``videos``        sha256 of the file bytes is the id, so the same upload twice is one video; each belongs
                    to one named ``collection`` (the first it was added under; ``uploads`` by default).
- ``frames``        (video, index) is unique; ``image_path`` is relative to the media folder and named by the
                    sha256 of the image bytes; ``revision`` grows by one with every accepted label event.
- ``models``        a model version (id, source, revision, lineage JSON).
- ``predictions``   one row per frame x model version.
- ``labelers``      name, role (viewer / labeler / reviewer) and kind (human / import).
- ``label_events``  append-only (triggers refuse UPDATE and DELETE): frame, field, old -> new, labeler, its
                    source (human / import), time, model version seen, note, the frame revision it produced.
- ``reviews``       append-only accept / reject of an event by a reviewer.
- ``leases``        short claims on frames handed out by the queue.
- ``exports``       one row per export: snapshot id, kind, counts, manifest hash.
- ``current_labels`` (view) per frame and field: the latest human event when it holds a value, else the latest
                    imported (raw-gt) one. A correction is never hidden by a later import, and a human undo
                    that takes back every human change lets the imported value show again.

    db = open_store("data/sludgelens.db", "data/media")
    db["frames"].count
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils
from sqlite_utils import Migrations

# The labeler that imported ground truth is recorded under; its events have provenance "raw".
RAW_GT = "raw-gt"


class StoreError(Exception):
    """Base of every refusal the store makes; the message says what happened and what to do."""


class StaleRevisionError(StoreError):
    """The caller saw an older revision of the frame than the store holds; nothing was written."""


class PermissionDeniedError(StoreError):
    """The named labeler does not exist or its role does not allow the write; nothing was written."""


class InvalidLabelError(StoreError, ValueError):
    """A value, field or argument that the store does not accept; nothing was written."""


class NotFoundError(StoreError, LookupError):
    """A video, frame, model or event that is not in the store."""


@dataclass(frozen=True)
class StoreConfig:
    """How a connection to the store is opened."""

    # A writer waits this long for another writer's lock inside SQLite before retrying; eight labelers
    # committing sub-millisecond transactions never come close.
    busy_timeout_ms: int = 10_000
    # Total time a write keeps retrying a busy database before the caller sees an error; long enough
    # that "database is locked" never reaches a labeler under ordinary load.
    write_deadline_s: float = 60.0
    # FULL fsyncs the WAL at every commit (~0.2 ms here): an acknowledged correction survives power loss,
    # not only a killed process.
    synchronous: str = "FULL"


class Store(sqlite_utils.Database):
    """A ``sqlite_utils.Database`` that also knows its media folder and serialises writes across threads.

    Gradio runs callbacks on worker threads; they share one connection, so a write transaction holds
    ``write_lock`` for its duration.
    """

    media_dir: Path
    config: StoreConfig
    write_lock: threading.RLock


MIGRATIONS = Migrations("sludgelens")


@MIGRATIONS()
def m001_initial(db: sqlite_utils.Database) -> None:
    """Tables, indexes, the append-only triggers, the current-labels view and the raw-gt labeler."""
    for statement in _INITIAL_SQL.split(";\n\n"):
        if statement.strip():
            db.execute(statement)
    db["labelers"].insert({"name": RAW_GT, "role": "labeler", "kind": "import", "created_at": utc_now()})


_INITIAL_SQL = """
CREATE TABLE videos (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    source_path TEXT,
    size_bytes INTEGER,
    duration_s REAL,
    fps REAL,
    width INTEGER,
    height INTEGER,
    meta TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL
);

CREATE TABLE frames (
    id INTEGER PRIMARY KEY,
    video_id TEXT NOT NULL REFERENCES videos(id),
    frame_index INTEGER NOT NULL,
    time_s REAL NOT NULL,
    image_path TEXT NOT NULL,
    image_sha256 TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    revision INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    UNIQUE (video_id, frame_index)
);

CREATE TABLE models (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    revision TEXT,
    lineage TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL
);

CREATE TABLE predictions (
    frame_id INTEGER NOT NULL REFERENCES frames(id),
    model_id TEXT NOT NULL REFERENCES models(id),
    p_sludge REAL NOT NULL CHECK (p_sludge >= 0.0 AND p_sludge <= 1.0),
    layout TEXT NOT NULL,
    layout_scores TEXT NOT NULL DEFAULT '{}',
    description TEXT,
    explanation TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (frame_id, model_id)
);

CREATE INDEX predictions_model_p ON predictions (model_id, p_sludge);

CREATE TABLE labelers (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('viewer', 'labeler', 'reviewer')),
    kind TEXT NOT NULL DEFAULT 'human' CHECK (kind IN ('human', 'import')),
    created_at TEXT NOT NULL
);

CREATE TABLE label_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    frame_id INTEGER NOT NULL REFERENCES frames(id),
    field TEXT NOT NULL CHECK (field IN ('sludge', 'layout', 'description')),
    old_value TEXT,
    new_value TEXT,
    labeler TEXT NOT NULL REFERENCES labelers(name),
    source TEXT NOT NULL CHECK (source IN ('human', 'import')),
    created_at TEXT NOT NULL,
    model_seen TEXT,
    note TEXT NOT NULL DEFAULT '',
    revision INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('set', 'range', 'undo', 'reject', 'import')),
    ref_event INTEGER REFERENCES label_events(id),
    batch TEXT
);

CREATE INDEX label_events_frame_field ON label_events (frame_id, field, source, id);

CREATE INDEX label_events_labeler ON label_events (labeler, field, frame_id);

CREATE TRIGGER label_events_append_only_update BEFORE UPDATE ON label_events
BEGIN SELECT RAISE(ABORT, 'label_events is append-only: record a new event instead'); END;

CREATE TRIGGER label_events_append_only_delete BEFORE DELETE ON label_events
BEGIN SELECT RAISE(ABORT, 'label_events is append-only: record a new event instead'); END;

CREATE TABLE reviews (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id INTEGER NOT NULL REFERENCES label_events(id),
    reviewer TEXT NOT NULL REFERENCES labelers(name),
    accepted INTEGER NOT NULL CHECK (accepted IN (0, 1)),
    note TEXT NOT NULL DEFAULT '',
    revert_event INTEGER REFERENCES label_events(id),
    created_at TEXT NOT NULL
);

CREATE INDEX reviews_event ON reviews (event_id);

CREATE TRIGGER reviews_append_only_update BEFORE UPDATE ON reviews
BEGIN SELECT RAISE(ABORT, 'reviews is append-only'); END;

CREATE TRIGGER reviews_append_only_delete BEFORE DELETE ON reviews
BEGIN SELECT RAISE(ABORT, 'reviews is append-only'); END;

CREATE TABLE leases (
    frame_id INTEGER PRIMARY KEY REFERENCES frames(id),
    labeler TEXT NOT NULL REFERENCES labelers(name),
    expires_at REAL NOT NULL
);

CREATE TABLE exports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    snapshot_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    out_dir TEXT NOT NULL,
    counts TEXT NOT NULL DEFAULT '{}',
    manifest_sha256 TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE VIEW current_labels AS
SELECT
    f.id AS frame_id,
    f.video_id,
    f.frame_index,
    f.time_s,
    f.revision,
    CAST(coalesce(sh.new_value, si.new_value) AS INTEGER) AS sludge,
    CASE WHEN sh.new_value IS NOT NULL THEN sh.labeler ELSE si.labeler END AS sludge_labeler,
    CASE WHEN sh.new_value IS NOT NULL THEN sh.source ELSE si.source END AS sludge_source,
    coalesce(lh.new_value, li.new_value) AS layout,
    CASE WHEN lh.new_value IS NOT NULL THEN lh.labeler ELSE li.labeler END AS layout_labeler,
    CASE WHEN lh.new_value IS NOT NULL THEN lh.source ELSE li.source END AS layout_source,
    coalesce(dh.new_value, di.new_value) AS description,
    CASE WHEN dh.new_value IS NOT NULL THEN dh.labeler ELSE di.labeler END AS description_labeler,
    CASE WHEN dh.new_value IS NOT NULL THEN dh.source ELSE di.source END AS description_source
FROM frames f
LEFT JOIN label_events sh ON sh.id = (SELECT max(id) FROM label_events
    WHERE frame_id = f.id AND field = 'sludge' AND source = 'human')
LEFT JOIN label_events si ON si.id = (SELECT max(id) FROM label_events
    WHERE frame_id = f.id AND field = 'sludge' AND source = 'import')
LEFT JOIN label_events lh ON lh.id = (SELECT max(id) FROM label_events
    WHERE frame_id = f.id AND field = 'layout' AND source = 'human')
LEFT JOIN label_events li ON li.id = (SELECT max(id) FROM label_events
    WHERE frame_id = f.id AND field = 'layout' AND source = 'import')
LEFT JOIN label_events dh ON dh.id = (SELECT max(id) FROM label_events
    WHERE frame_id = f.id AND field = 'description' AND source = 'human')
LEFT JOIN label_events di ON di.id = (SELECT max(id) FROM label_events
    WHERE frame_id = f.id AND field = 'description' AND source = 'import')
"""


# The collection a video belongs to when nobody named one: what the Analyze tab and the API upload.
UPLOADS = "uploads"


@MIGRATIONS()
def m002_collections(db: sqlite_utils.Database) -> None:
    """Videos belong to a named collection (a dataset ingested in one run, or the app's uploads)."""
    db.execute(f"ALTER TABLE videos ADD COLUMN collection TEXT NOT NULL DEFAULT '{UPLOADS}'")
    db.execute("CREATE INDEX videos_collection ON videos (collection, created_at)")


@MIGRATIONS()
def m003_collection_scale_indexes(db: sqlite_utils.Database) -> None:
    """Indexes for stores of millions of frames: a model version's predictions by time (the queue reads only
    those recorded since its last look) and videos newest first (the Analyze tab's list of stored videos)."""
    db.execute("CREATE INDEX predictions_model_created ON predictions (model_id, created_at)")
    db.execute("CREATE INDEX videos_created ON videos (created_at)")


def utc_now() -> str:
    """The current UTC time as ISO 8601 with microseconds, the store's one time format.

    >>> len(utc_now())
    32
    """
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def connect_store(path: str | Path, media_dir: str | Path, config: StoreConfig | None = None) -> Store:
    """Open the SQLite file with WAL, foreign keys, a busy timeout and FULL sync, without migrating.

    >>> db = connect_store("data/sludgelens.db", "data/media")  # doctest: +SKIP
    """
    config = config or StoreConfig()
    if config.synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
        raise InvalidLabelError(f"synchronous must be NORMAL, FULL or EXTRA, not {config.synchronous!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=config.busy_timeout_ms / 1000, check_same_thread=False)
    db = Store(conn)
    db.media_dir = Path(media_dir)
    db.config = config
    db.write_lock = threading.RLock()
    db.execute(f"PRAGMA busy_timeout = {int(config.busy_timeout_ms)}")
    _retry_busy(db.enable_wal, config.write_deadline_s)
    db.execute(f"PRAGMA synchronous = {config.synchronous.upper()}")
    db.execute("PRAGMA foreign_keys = ON")
    return db


def open_store(path: str | Path, media_dir: str | Path, config: StoreConfig | None = None) -> Store:
    """Open (creating if needed) the store at ``path`` and apply every pending migration.

    >>> db = open_store("data/sludgelens.db", "data/media")  # doctest: +SKIP
    >>> db.journal_mode  # doctest: +SKIP
    'wal'
    """
    db = connect_store(path, media_dir, config)
    db.media_dir.mkdir(parents=True, exist_ok=True)
    with write_transaction(db):
        # Inside one IMMEDIATE transaction, so two processes opening a fresh file migrate it once.
        MIGRATIONS.apply(db)
    return db


def _is_busy(error: sqlite3.OperationalError) -> bool:
    message = str(error).lower()
    return "locked" in message or "busy" in message


def _retry_busy(action, deadline_s: float, first_delay_s: float = 0.001, max_delay_s: float = 0.05):
    """Run ``action()``, retrying with exponential backoff while SQLite reports the database busy."""
    give_up = time.monotonic() + deadline_s
    delay = first_delay_s
    while True:
        try:
            return action()
        except sqlite3.OperationalError as error:
            if not _is_busy(error) or time.monotonic() > give_up:
                raise
            time.sleep(delay)
            delay = min(delay * 2, max_delay_s)


def _begin_immediate(db: sqlite_utils.Database, config: StoreConfig) -> None:
    """BEGIN IMMEDIATE, polling for the write lock ourselves.

    SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20 ... ms between tries, so a writer that arrives
    just after another one often sleeps far longer than the other's sub-millisecond transaction. Here the
    busy timeout is off for this one statement and the lock is retried after 0.1 ms, doubling to 2 ms.
    """
    db.conn.execute("PRAGMA busy_timeout = 0")
    try:
        _retry_busy(lambda: db.conn.execute("BEGIN IMMEDIATE"), config.write_deadline_s, 0.0001, 0.002)
    finally:
        db.conn.execute(f"PRAGMA busy_timeout = {int(config.busy_timeout_ms)}")


@contextlib.contextmanager
def write_transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """A write transaction taken with BEGIN IMMEDIATE, so a read-check-write cannot be overtaken.

    A deferred BEGIN that reads and then writes can fail with SQLITE_BUSY without waiting when another
    writer commits in between; IMMEDIATE takes the write lock up front, and the busy timeout plus the
    retry here make writers queue instead of erroring. Nested use becomes a savepoint.

    >>> with write_transaction(db):  # doctest: +SKIP
    ...     db.execute("UPDATE frames SET revision = revision + 1 WHERE id = ?", [1])
    """
    lock = getattr(db, "write_lock", None) or contextlib.nullcontext()
    config = getattr(db, "config", None) or StoreConfig()
    with lock:
        if db.conn.in_transaction:
            with db.atomic():
                yield db
            return
        _begin_immediate(db, config)
        try:
            yield db
        except BaseException:
            if db.conn.in_transaction:
                db.conn.execute("ROLLBACK")
            raise
        try:
            db.conn.execute("COMMIT")
        except BaseException:
            if db.conn.in_transaction:
                db.conn.execute("ROLLBACK")
            raise


@contextlib.contextmanager
def read_transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """One read transaction on the shared connection, so every query inside sees one consistent state
    while labelers keep writing; taken while no write transaction holds the connection.

    >>> with read_transaction(db):  # doctest: +SKIP
    ...     db.execute("SELECT count(*) FROM frames").fetchone()
    """
    lock = getattr(db, "write_lock", None) or contextlib.nullcontext()
    with lock:
        if db.conn.in_transaction:
            yield db
            return
        db.conn.execute("BEGIN")
        try:
            yield db
        finally:
            db.conn.execute("COMMIT")


def resolve_inside(root: str | Path, relative: str, what: str = "path") -> Path:
    """``root / relative`` resolved, refusing anything that would leave ``root`` (``..``, absolute, links).

    >>> resolve_inside("/data/exports", "run1/manifest.json")
    PosixPath('/data/exports/run1/manifest.json')
    """
    base = Path(root).resolve()
    candidate = (base / relative).resolve()
    if not candidate.is_relative_to(base) or candidate == base:
        raise InvalidLabelError(f"{what} {relative!r} points outside the folder {str(base)!r}")
    return candidate


def resolve_media_path(media_dir: str | Path, relative: str) -> Path:
    """The absolute path of a stored image, refusing anything that would leave the media folder.

    >>> resolve_media_path("/data/media", "ab/abcd.png")
    PosixPath('/data/media/ab/abcd.png')
    """
    return resolve_inside(media_dir, relative, "image path")
