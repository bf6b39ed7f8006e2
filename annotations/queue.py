"""Which frames a labeler should look at next, with short leases so two labelers never get the same frame.

Strategies:

- ``uncertain``     frames of one model version with |P(sludge) - threshold| smallest, across all videos,
                    that no human has labelled yet;
- ``disagreement``  frames where labelers' latest values differ (raw-gt counts as a labeler), then frames
                    where the model and the current label differ, most confident model first; a field is
                    settled (left out) once its current event is a reviewer's or has been accepted in review,
                    and a frame whose latest event is the asking labeler's own is left for someone else;
- ``unlabeled``     frames with no sludge label at all, in the order they were stored;
- ``random``        any frame, uniformly (for unbiased spot checks); ``seed`` makes it repeatable.

A frame handed to a labeler is leased to them for ``lease_s`` seconds; other labelers do not get it until
the lease expires or the labeler writes an event on it. Viewers may look at the queue but take no lease.

    next_frames(db, "ana", "uncertain", n=10)
    [{'frame_id': 812, 'p_sludge': 0.503, 'reason': 'uncertain', 'revision': 0, 'image': '/…/ab12….png', …}, …]
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

import sqlite_utils

from annotations.schema import (
    InvalidLabelError,
    PermissionDeniedError,
    resolve_media_path,
    write_transaction,
)
from annotations.writes import find_media_dir, latest_model_id

STRATEGIES = ("uncertain", "disagreement", "unlabeled", "random")
# Long enough to look at a frame's heatmaps and decide, short enough that a closed tab frees its frames soon.
DEFAULT_LEASE_S = 180.0

_AVAILABLE = ("NOT EXISTS (SELECT 1 FROM leases le WHERE le.frame_id = f.id AND le.labeler != :labeler"
              " AND le.expires_at > :now)")

_UNCERTAIN = f"""
SELECT f.id AS frame_id, abs(p.p_sludge - :threshold) AS score, 'uncertain' AS reason
FROM predictions p JOIN frames f ON f.id = p.frame_id
WHERE p.model_id = :model AND {_AVAILABLE}
  AND NOT EXISTS (SELECT 1 FROM label_events e WHERE e.frame_id = f.id AND e.field = 'sludge' AND e.source = 'human')
ORDER BY score, f.id
LIMIT :n
"""

_DISAGREEMENT = f"""
WITH latest AS (
    SELECT frame_id, field, labeler, new_value,
           row_number() OVER (PARTITION BY frame_id, field, labeler ORDER BY id DESC) AS rn
    FROM label_events WHERE field IN ('sludge', 'layout')
),
cur AS (
    SELECT c.frame_id, c.field, c.value,
           (lb.role = 'reviewer' OR EXISTS (SELECT 1 FROM reviews r WHERE r.event_id = c.event_id AND r.accepted = 1))
             AS settled
    FROM (
        SELECT frame_id, 'sludge' AS field, CAST(sludge AS TEXT) AS value, sludge_labeler AS labeler,
               (SELECT max(id) FROM label_events e WHERE e.frame_id = v.frame_id AND e.field = 'sludge'
                  AND e.labeler = v.sludge_labeler) AS event_id
        FROM current_labels v WHERE sludge IS NOT NULL
        UNION ALL
        SELECT frame_id, 'layout', layout, layout_labeler,
               (SELECT max(id) FROM label_events e WHERE e.frame_id = v.frame_id AND e.field = 'layout'
                  AND e.labeler = v.layout_labeler)
        FROM current_labels v WHERE layout IS NOT NULL
    ) c JOIN labelers lb ON lb.name = c.labeler
),
labeler_conflicts AS (
    SELECT DISTINCT l.frame_id FROM latest l
    JOIN cur c ON c.frame_id = l.frame_id AND c.field = l.field AND NOT c.settled
    WHERE l.rn = 1 AND l.new_value IS NOT NULL
    GROUP BY l.frame_id, l.field HAVING count(DISTINCT l.new_value) > 1
),
model_conflicts AS (
    SELECT c.frame_id, max(abs(p.p_sludge - :threshold)) AS confidence
    FROM cur c JOIN predictions p ON p.frame_id = c.frame_id AND p.model_id = :model
    WHERE NOT c.settled AND (
        (c.field = 'sludge' AND CAST(c.value AS INTEGER) != (p.p_sludge >= :threshold))
        OR (c.field = 'layout' AND c.value != CASE WHEN p.p_sludge >= :threshold THEN p.layout ELSE 'none' END))
    GROUP BY c.frame_id
)
SELECT f.id AS frame_id,
       CASE WHEN lc.frame_id IS NOT NULL THEN 1.0 ELSE 0.0 END + coalesce(mc.confidence, 0.0) AS score,
       CASE WHEN lc.frame_id IS NOT NULL THEN 'labelers disagree' ELSE 'model disagrees' END AS reason
FROM frames f
LEFT JOIN labeler_conflicts lc ON lc.frame_id = f.id
LEFT JOIN model_conflicts mc ON mc.frame_id = f.id
WHERE (lc.frame_id IS NOT NULL OR mc.frame_id IS NOT NULL) AND {_AVAILABLE}
  AND coalesce((SELECT e.labeler FROM label_events e WHERE e.frame_id = f.id ORDER BY e.id DESC LIMIT 1), '')
      != :labeler
ORDER BY score DESC, f.id
LIMIT :n
"""

_UNLABELED = f"""
SELECT f.id AS frame_id, 0.0 AS score, 'unlabeled' AS reason FROM frames f
WHERE NOT EXISTS (SELECT 1 FROM label_events e WHERE e.frame_id = f.id AND e.field = 'sludge')
  AND {_AVAILABLE}
ORDER BY f.id
LIMIT :n
"""


def next_frames(db: sqlite_utils.Database, labeler: str, strategy: str = "uncertain", n: int = 10,
                model_id: str | None = None, lease_s: float = DEFAULT_LEASE_S, threshold: float = 0.5,
                seed: int | None = None) -> list[dict]:
    """The next ``n`` frames for ``labeler`` by ``strategy``, leased to them for ``lease_s`` seconds.

    ``model_id`` defaults to the latest model version with predictions. Each returned dict carries
    frame_id, video_id, frame_index, time_s, revision (pass it back as seen_revision), image (absolute
    path), current labels, the model's p_sludge / layout, reason, score and lease_expires_at.

    >>> [f["frame_id"] for f in next_frames(db, "ana", "disagreement", n=3)]  # doctest: +SKIP
    [17, 4, 230]
    """
    if strategy not in STRATEGIES:
        raise InvalidLabelError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if n < 1:
        return []
    row = next(db.query("SELECT role, kind FROM labelers WHERE name = ?", [labeler]), None)
    if row is None or row["kind"] != "human":
        raise PermissionDeniedError(f"unknown labeler {labeler!r}: add it with add_labeler to use the queue")
    model_id = model_id or latest_model_id(db)
    now = time.time()
    # Candidates are chosen outside the write lock (the disagreement query reads every label of the store),
    # with room to spare for frames another labeler leases in the meantime; the short write transaction
    # below drops those and takes the leases.
    spare = 3 * int(n) + 10
    params = {"labeler": labeler, "now": now, "n": spare, "threshold": float(threshold), "model": model_id}
    if strategy == "uncertain":
        candidates = [] if model_id is None else db.execute(_UNCERTAIN, params).fetchall()
    elif strategy == "disagreement":
        candidates = db.execute(_DISAGREEMENT, params).fetchall()
    elif strategy == "unlabeled":
        candidates = db.execute(_UNLABELED, params).fetchall()
    else:
        ids = [r[0] for r in db.execute(f"SELECT f.id FROM frames f WHERE {_AVAILABLE} ORDER BY f.id", params)]
        candidates = [(fid, 0.0, "random") for fid in random.Random(seed).sample(ids, min(spare, len(ids)))]
    expires = now + float(lease_s)
    with write_transaction(db):
        db.execute("DELETE FROM leases WHERE expires_at <= ?", [now])
        ids = [c[0] for c in candidates]
        taken = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            taken |= {r[0] for r in db.execute(
                f"SELECT frame_id FROM leases WHERE labeler != ? AND frame_id IN ({','.join('?' * len(chunk))})",
                [labeler, *chunk])}
        picked = [c for c in candidates if c[0] not in taken][:int(n)]
        if row["role"] != "viewer":
            db.conn.executemany(
                "INSERT INTO leases (frame_id, labeler, expires_at) VALUES (?, ?, ?) ON CONFLICT (frame_id)"
                " DO UPDATE SET labeler = excluded.labeler, expires_at = excluded.expires_at",
                [(fid, labeler, expires) for fid, _, _ in picked])
    return _describe(db, picked, model_id, expires if row["role"] != "viewer" else None)


def _describe(db, picked: Sequence[tuple], model_id: str | None, expires: float | None) -> list[dict]:
    if not picked:
        return []
    ids = [p[0] for p in picked]
    marks = ",".join("?" * len(ids))
    labels = {r["frame_id"]: r for r in db.query(f"SELECT * FROM current_labels WHERE frame_id IN ({marks})", ids)}
    paths = dict(db.execute(f"SELECT id, image_path FROM frames WHERE id IN ({marks})", ids).fetchall())
    preds = {r["frame_id"]: r for r in db.query(
        f"SELECT frame_id, p_sludge, layout FROM predictions WHERE model_id = ? AND frame_id IN ({marks})",
        [model_id, *ids])}
    media_dir = find_media_dir(db)
    out = []
    for frame_id, score, reason in picked:
        label = labels[frame_id]
        pred = preds.get(frame_id)
        out.append({
            "frame_id": frame_id,
            "video_id": label["video_id"],
            "frame_index": label["frame_index"],
            "time_s": label["time_s"],
            "revision": label["revision"],
            "image": str(resolve_media_path(media_dir, paths[frame_id])),
            "sludge": None if label["sludge"] is None else bool(label["sludge"]),
            "layout": label["layout"],
            "description": label["description"],
            "model_id": model_id if pred else None,
            "p_sludge": pred["p_sludge"] if pred else None,
            "model_layout": pred["layout"] if pred else None,
            "reason": reason,
            "score": round(float(score), 6),
            "lease_expires_at": expires,
        })
    return out


def release_frames(db: sqlite_utils.Database, labeler: str, frame_ids: Sequence[int] | None = None) -> int:
    """Give back a labeler's leases (all of them, or those frames); returns how many were released.

    >>> release_frames(db, "ana")  # doctest: +SKIP
    10
    """
    with write_transaction(db):
        if frame_ids is None:
            return db.execute("DELETE FROM leases WHERE labeler = ?", [labeler]).rowcount
        ids = [int(i) for i in frame_ids]
        marks = ",".join("?" * len(ids)) or "NULL"
        return db.execute(f"DELETE FROM leases WHERE labeler = ? AND frame_id IN ({marks})", [labeler, *ids]).rowcount


def count_unlabeled(db: sqlite_utils.Database) -> int:
    """How many frames have no current sludge label (never labelled, or every label on them taken back).

    >>> count_unlabeled(db)  # doctest: +SKIP
    412
    """
    return db.execute("SELECT count(*) FROM current_labels WHERE sludge IS NULL").fetchone()[0]
