"""Import raw ground truth from CSV or JSONL as the labeler "raw-gt", so corrections can be measured against it.

One row per video or per frame. Columns (CSV header or JSONL keys):

- ``video``        the video's sha256 id or its stored name (also accepted: ``video_id``, ``video_name``, ``name``)
- ``frame_index``  optional; empty or absent makes the row video-level: it applies to every stored frame
- ``sludge``       true/false, 1/0, yes/no, sludge/not_sludge (also accepted under ``label``)
- ``layout``       optional: vertical, horizontal, pip, other, none
- ``description``  optional free text

Frame-level rows win over a video-level row of the same video, whatever their order. An import is one
transaction (all rows or none) and is idempotent: a value raw-gt already holds is not written again.
Imported values never hide a human correction (see ``current_labels``).

    import_ground_truth(db, "truth.csv")
    {'rows': 40, 'events': 612, 'unchanged': 0, 'shadowed': 3, 'unknown_videos': [], 'ambiguous_videos': [], …}
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import sqlite_utils

from annotations.schema import RAW_GT, InvalidLabelError, write_transaction
from annotations.writes import append_event, check_text, encode_value
from core.vocabulary import FIELDS

_VIDEO_KEYS = ("video", "video_id", "video_name", "name")


def read_ground_truth_rows(path: str | Path, fmt: str | None = None) -> list[dict]:
    """The rows of a CSV or JSONL file as dicts (format from ``fmt`` or the file suffix).

    >>> read_ground_truth_rows("truth.jsonl")[0]  # doctest: +SKIP
    {'video': 'clip_001.mp4', 'sludge': True, 'layout': 'vertical'}
    """
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt == "csv":
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return [dict(row) for row in csv.DictReader(fh)]
    if fmt in ("jsonl", "ndjson", "json"):
        rows = []
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as error:
                        raise InvalidLabelError(f"{path.name} line {number} is not JSON: {error}") from error
                    if not isinstance(row, dict):
                        raise InvalidLabelError(f"{path.name} line {number} is not a JSON object")
                    rows.append(row)
        return rows
    raise InvalidLabelError(f"ground truth must be .csv or .jsonl, not {path.name!r} (pass fmt= to say which)")


def _blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def import_ground_truth(db: sqlite_utils.Database, path: str | Path, fmt: str | None = None) -> dict:
    """Record the file's labels as events of labeler "raw-gt"; returns what happened, row by row counts.

    >>> import_ground_truth(db, "truth.jsonl")["events"]  # doctest: +SKIP
    612
    """
    rows = read_ground_truth_rows(path, fmt)
    name = Path(path).name
    report = {"file": name, "rows": len(rows), "events": 0, "unchanged": 0, "shadowed": 0,
              "unknown_videos": [], "ambiguous_videos": [], "unknown_frames": 0}
    with write_transaction(db):
        videos = db.execute("SELECT id, name FROM videos").fetchall()
        by_id = {vid: vid for vid, _ in videos}
        by_name: dict[str, list[str]] = {}
        for vid, vname in videos:
            by_name.setdefault(vname, []).append(vid)
        # (frame_id, field) -> (value, line, frame-level?) ; frame-level rows win over video-level ones.
        wanted: dict[tuple[int, str], tuple[str, int, bool]] = {}
        for line, row in enumerate(rows, 1):
            key = next((row[k] for k in _VIDEO_KEYS if not _blank(row.get(k))), None)
            if key is None:
                raise InvalidLabelError(f"{name} row {line} names no video (columns: {', '.join(_VIDEO_KEYS)})")
            key = str(key)
            if key in by_id:
                video_id = key
            elif len(by_name.get(key, [])) == 1:
                video_id = by_name[key][0]
            else:
                bucket = "ambiguous_videos" if key in by_name else "unknown_videos"
                if key not in report[bucket]:
                    report[bucket].append(key)
                continue
            values = {}
            for field in FIELDS:
                raw = row.get(field)
                if field == "sludge" and _blank(raw):
                    raw = row.get("label")
                if not _blank(raw):
                    try:
                        values[field] = encode_value(field, raw.strip() if field != "description" and
                                                     isinstance(raw, str) else raw)
                    except InvalidLabelError as error:
                        raise InvalidLabelError(f"{name} row {line}: {error}") from error
            if not values:
                raise InvalidLabelError(f"{name} row {line} has no sludge, layout or description value")
            frame_level = not _blank(row.get("frame_index"))
            if frame_level:
                try:
                    index = int(str(row["frame_index"]).strip())
                except ValueError as error:
                    raise InvalidLabelError(f"{name} row {line}: frame_index {row['frame_index']!r} is not an "
                                            "integer") from error
                found = db.execute("SELECT id FROM frames WHERE video_id = ? AND frame_index = ?",
                                   [video_id, index]).fetchone()
                if found is None:
                    report["unknown_frames"] += 1
                    continue
                frame_ids = [found[0]]
            else:
                frame_ids = [r[0] for r in db.execute("SELECT id FROM frames WHERE video_id = ? ORDER BY frame_index",
                                                      [video_id])]
            for frame_id in frame_ids:
                for field, value in values.items():
                    previous = wanted.get((frame_id, field))
                    if previous is None or frame_level or not previous[2]:
                        wanted[(frame_id, field)] = (value, line, frame_level)
        for (frame_id, field), (value, line, _) in sorted(wanted.items()):
            held = db.execute(
                "SELECT new_value FROM label_events WHERE id = (SELECT max(id) FROM label_events"
                " WHERE frame_id = ? AND field = ? AND labeler = ?)", [frame_id, field, RAW_GT]).fetchone()
            if held is not None and held[0] == value:
                report["unchanged"] += 1
                continue
            human = db.execute(
                "SELECT new_value FROM label_events WHERE id = (SELECT max(id) FROM label_events"
                " WHERE frame_id = ? AND field = ? AND source = 'human')", [frame_id, field]).fetchone()
            if human is not None and human[0] is not None:
                report["shadowed"] += 1
            append_event(db, frame_id, field, value, RAW_GT, None, check_text(f"import {name}:{line}", "note"),
                          None, "import", source="import")
            report["events"] += 1
    return report
