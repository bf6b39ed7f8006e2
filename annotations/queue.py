"""Which frames a labeler should look at next, with short leases so two labelers never get the same frame.

Strategies:

- ``uncertain``     frames of one model version with |P(sludge) - threshold| smallest, across all videos,
                    that no human has labelled yet;
- ``disagreement``  frames where labelers' latest values differ (raw-gt counts as a labeler), then frames
                    where the model and the current label differ, most confident model first; a field is
                    settled (left out) once its current event is a reviewer's or has been accepted in review,
                    and a frame whose latest event is the asking labeler's own is left for someone else;
- ``unlabeled``     frames with no sludge label at all, in the order they were stored;
- ``random``        any frame, uniformly (for unbiased spot checks); ``seed`` makes it repeatable;
- ``label-issue``   frames whose current sludge label is most likely wrong given the model's P(sludge) and
                    what the rest of the video says: cleanlab's label quality score
                    (``cleanlab.rank.get_label_quality_scores``, self-confidence: the probability the frame's
                    label gets), lowest first, ties by frame id. The probability is the model's refitted on
                    each collection's own labels with the vote of each frame's nearest neighbours' labels in
                    its video (``QueueConfig.label_context``; the model's P as it is while either class has
                    too few labels in the collection, or while hardly any of its labels differs from its
                    neighbours, as with raw labels given per video). Candidates have a current sludge label
                    and a prediction of the model version; settled labels and frames whose latest event is the
                    asking labeler's own are left out, as above. Its reason says how many of the frame's
                    labelled neighbours say otherwise. Where per-video labels sit among frames whose truth
                    changes often, the neighbours still vouch for a misjudged video's frames; such
                    collections want:
- ``label-issue-model`` the same, by the model's P(sludge) alone.

Every strategy can be limited to one collection of videos (``collection``; None: all of them). Ties go to
the lower frame id.

A frame handed to a labeler is leased to them for ``lease_s`` seconds; other labelers do not get it until
the lease expires or the labeler writes an event on it. Viewers may look at the queue but take no lease.

The strategies rank every frame of the store, so they work on a :class:`LabelIndex`: each frame's current
labels, and a model version's scores and label quality, as numpy arrays, built on a connection's first
call and kept in step by reading only what is new since the last one (label events and reviews are
append-only and numbered, frames are numbered, predictions carry a rowid and a time). Each ranked strategy
keeps its frames sorted by its key (:class:`RankedOrder`); a call walks that order from the top until it
has enough frames that pass the strategy's filters, and scores the few frames whose key changed since the
sort apart. So a call reads a few thousand array entries, however many frames the store holds. A new label
rescores its frame and its neighbours; a collection's three label-context weights are refitted only once
about as many of its frames changed as the fit read (a collection ingested later is fitted once it has
labels).

    next_frames(db, "ana", "label-issue", n=10, collection="crawl-2024")
    [{'frame_id': 812, 'p_sludge': 0.97, 'sludge': False, 'reason': 'label issue', 'score': 0.03, …}, …]
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sqlite_utils

from annotations.schema import (
    InvalidLabelError,
    PermissionDeniedError,
    read_transaction,
    resolve_media_path,
    write_transaction,
)
from annotations.writes import check_collection, find_media_dir, sole_model_id
from core.vocabulary import LABEL_LAYOUTS, NO_LAYOUT

STRATEGIES = ("uncertain", "disagreement", "unlabeled", "random", "label-issue", "label-issue-model")
# The label-issue strategies, and whether each weighs the labels of a frame's neighbours in its video.
_ISSUE_STRATEGIES = {"label-issue": True, "label-issue-model": False}
# How the reason of a frame judged with its neighbours' labels begins (then what they said); a frame judged by
# the model's P alone reads "label issue".
WEIGHED_REASON = "label issue · "
# Long enough to look at a frame's heatmaps and decide, short enough that a closed tab frees its frames soon.
DEFAULT_LEASE_S = 180.0


@dataclass(frozen=True)
class QueueConfig:
    """How the queue ranks frames."""

    # cleanlab's per-frame label quality score. With two classes, self-confidence, normalized margin and the
    # entropy score rank frames alike; self-confidence (P of the given label) reads plainly in the Label tab.
    label_quality: str = "self_confidence"
    # The P(sludge) a label is judged under: the model's alone misses what the rest of the video says. Sampled
    # frames of one video mostly share their label, and a label that its neighbours contradict is a likely slip
    # (on a synthetic collection with 12 % uniform flips, the first 10 % of the frames looked at held 64 % of
    # the flips by the model's P alone, 76 % with this; bench/bench_queue.py). So P(sludge) is refitted on each
    # collection's own labels by a logistic regression of two numbers per frame: the model's log-odds and the vote
    # of the current sludge labels of the `label_context` nearest frames on each side in its video (+1 sludge,
    # -1 not, 0 none; averaged). 0 uses the model's P as it is. Three weights fitted on hundreds of labels
    # cannot learn any one frame's label, so the fit need not be cross-validated as a model's own probabilities
    # must be.
    label_context: int = 2
    # Fewer labels than this of either class leave the model's P as it is: too few to weigh the two numbers.
    context_min_labels: int = 50
    # Where raw labels were given per video (a whole video misjudged at once), a frame's neighbours share its
    # slip and vouch for it (bench_queue --noise-kind video: 34 % of the flips in the first 10 % with the vote,
    # 67 % without). Such labels leave few frames labelled unlike every frame next to them, no more than the
    # truth does (1.5-4.4 % on the bench's 8-frame clips, where the truth changes mid-clip), and slips frame by
    # frame leave many (14-17 % there with 12 % uniform flips); below this share the vote would only repeat
    # each frame's own judgement, and the model's P is used as it is. A collection whose truth changes often
    # between sampled frames reads higher (9-10 % on the loop experiment's 2-frame clips): per-video labels
    # there still want the label-issue-model strategy.
    context_min_isolated: float = 0.08
    # The fit reads at most this many labelled frames, spread evenly over the store: ~0.1 s; weights stop
    # moving long before.
    context_fit_frames: int = 200_000
    # A collection's weights are fitted again (and its frames rescored) once as many of its frames' labels or
    # scores changed since its fit as the fit read, at least context_min_labels and at most this many: a
    # collection ingested while the app runs is weighed once it has the labels, a large one is not refitted
    # at every few corrections. Between fits a new label rescores its frame and its neighbours only.
    refit_after: int = 20_000
    # Up to this many frames in scope (the store, or one collection) are ranked in one vectorised pass; a
    # larger scope walks the sorted orders, which costs the same however large the store grows.
    dense_frames: int = 50_000
    # A collection with less than this share of the store's frames is ranked in one pass over its frames:
    # walking the store-wide order would pass ~1/share frames of other collections per frame it keeps.
    dense_share: float = 1 / 16
    # An order is sorted again once this many of its frames changed key since the sort. Until then each call
    # scores those frames apart; a sort of 1.6 M frames takes about a second here.
    resort_after: int = 20_000
    # Model versions whose scores an index keeps at once (~40 bytes per frame each): the selector's current
    # and previous model and the Review tab's two.
    models_kept: int = 4


_SLUDGE, _LAYOUT = 0, 1
_NONE_CODE = LABEL_LAYOUTS.index(NO_LAYOUT)
_FIELD_SQL = "CASE e.field WHEN 'sludge' THEN 0 WHEN 'layout' THEN 1 ELSE 2 END"
# An event as three integers: its id; its frame id and the first characters of its field, source and value
# packed in one (the stored words differ in their first letter, and a code point is one cheap call per
# column; the store holds millions of events); its labeler's rowid (read with the labelers, so codes never
# depend on rowids staying put).
_EVENTS_SQL = ("SELECT e.id, ((e.frame_id * 256 + unicode(e.field)) * 256 + unicode(e.source)) * 256"
               " + coalesce(unicode(e.new_value), 0) % 256, lb.rowid"
               " FROM label_events e JOIN labelers lb ON lb.name = e.labeler WHERE e.id > ? ORDER BY e.id")


def _build_letter_table(words: dict[str, int]) -> np.ndarray:
    """A table from a word's first character (its code point) to its code; -1 for any other character."""
    table = np.full(256, -1, np.int8)
    for word, code in words.items():
        if table[ord(word[0])] != -1:
            raise ValueError(f"{word!r} shares its first letter with another word of its column")
        table[ord(word[0])] = code
    return table


_FIELD_OF = _build_letter_table({"sludge": 0, "layout": 1, "description": 2})
_VALUE_OF = _build_letter_table({"0": 0, "1": 1, **{name: i for i, name in enumerate(LABEL_LAYOUTS)}})
# A prediction as two numbers: frame id and layout packed in one, and P(sludge).
_PREDICTIONS_SQL = ("SELECT p.frame_id * 8 + (CASE p.layout "
                    + " ".join(f"WHEN '{name}' THEN {i}" for i, name in enumerate(LABEL_LAYOUTS))
                    + " ELSE -1 END) + 1, p.p_sludge FROM predictions p WHERE ")


def _read_columns(rows, width: int, dtype=np.int64) -> list[np.ndarray]:
    """Rows of `width` numbers as `width` numpy columns, read straight from a cursor."""
    flat = np.fromiter(itertools.chain.from_iterable(rows), dtype)
    return [flat[i::width] for i in range(width)]


@dataclass
class RankedOrder:
    """Frames sorted by one strategy's key (ties by frame id), and which of them changed key since the sort."""

    slots: np.ndarray  # positions in the index, by key
    stale: np.ndarray  # per position: its key changed since the sort (the walk skips it)
    fresh: list[np.ndarray] = field(default_factory=list)  # those positions, in batches
    changed: int = 0
    # slots[:start] are stale or out for good (e.g. labelled by a person, for the uncertain order): every
    # walk starts here, so frames worked through once are not walked past again.
    start: int = 0

    @classmethod
    def sort(cls, candidates: np.ndarray, keys: np.ndarray, size: int) -> "RankedOrder":
        # candidates are in position order, so a stable sort leaves ties in frame-id order.
        return cls(candidates[np.argsort(keys, kind="stable")], np.zeros(size, bool))

    def touch(self, slots: np.ndarray) -> None:
        if len(slots):
            self.stale[slots] = True
            self.fresh.append(slots)
            self.changed += len(slots)

    def list_fresh(self) -> np.ndarray:
        return np.unique(np.concatenate(self.fresh)) if self.fresh else np.zeros(0, np.int64)

    def walk(self, accept: Callable[[np.ndarray], np.ndarray], k: int,
             gone: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        """The first k positions of the order (skipping stale ones) that `accept` keeps, in order. `gone`
        says which positions can never be accepted again (the walk's start moves past them)."""
        while self.start < len(self.slots):
            chunk = self.slots[self.start:self.start + 4096]
            out = self.stale[chunk] | (gone(chunk) if gone is not None else False)
            if not out.all():
                self.start += int(np.argmin(out))
                break
            self.start += len(chunk)
        return _walk(self.slots[self.start:], lambda chunk: ~self.stale[chunk] & accept(chunk), k)


@dataclass
class ModelScores:
    """One model version's P(sludge), layout and label quality per frame of a :class:`LabelIndex`."""

    model_id: str
    p: np.ndarray  # float64, NaN where the version has not scored the frame
    layout: np.ndarray  # int8 index in LABEL_LAYOUTS, -1 where not scored
    # Per label-issue strategy, cleanlab label quality of each frame's current sludge label (NaN: no label or
    # no score); absent until that strategy first asks for it.
    quality: dict[str, np.ndarray] = field(default_factory=dict)
    # Per strategy, positions whose label or score changed since its quality was last brought up to date.
    quality_dirty: dict[str, list[np.ndarray]] = field(default_factory=dict)
    # The label-context fit per collection code (weights of the log-odds and the neighbours' vote, intercept;
    # None or absent: the model's P as it is; the whole dict None until the first fit). Each collection gets
    # its own: one may hold raw labels given per video, another slips frame by frame, and their footage and
    # their labels' noise differ. Per collection code too: how many labelled frames its fit read, and how many
    # of its frames' labels or scores changed since (a collection ingested later counts its new frames).
    context: dict[int, tuple[float, float, float] | None] | None = None
    context_sizes: dict[int, int] = field(default_factory=dict)
    context_changes: dict[int, int] = field(default_factory=dict)
    orders: dict[tuple, RankedOrder] = field(default_factory=dict)
    last_rowid: int = 0
    last_created: str = ""

    def touch_scores(self, slots: np.ndarray, limit: int, collections: np.ndarray) -> None:
        """Note that the frames' scores changed (`collections`: their collection codes); an order with more
        than `limit` changes is dropped (sorted afresh when next asked for), as is the label quality."""
        for key, order in list(self.orders.items()):
            if key[0] not in _ISSUE_STRATEGIES:
                order.touch(slots)
                if order.changed > limit:
                    del self.orders[key]
        self.touch_labels(slots, limit, collections)

    def touch_labels(self, slots: np.ndarray, limit: int, collections: np.ndarray) -> None:
        """Note that the frames' sludge labels changed (`collections`: their collection codes): their label
        quality is out of date, and their collections' label context one change nearer its refit."""
        counts = np.bincount(collections)
        for code in np.flatnonzero(counts).tolist():
            self.context_changes[code] = self.context_changes.get(code, 0) + int(counts[code])
        self.touch_quality(slots, limit, list(self.quality))

    def touch_quality(self, slots: np.ndarray, limit: int, strategies: list[str]) -> None:
        """Mark the frames' label quality out of date for these strategies; one with more than `limit` frames
        marked is dropped whole (scored afresh when next asked for)."""
        for strategy in strategies:
            dirty = self.quality_dirty.setdefault(strategy, [])
            dirty.append(slots)
            if sum(len(d) for d in dirty) > limit:
                self.drop_quality(strategy)

    def drop_quality(self, strategy: str) -> None:
        """Forget a label-issue strategy's quality and order: the next call scores and sorts every frame."""
        self.quality.pop(strategy, None)
        self.quality_dirty.pop(strategy, None)
        self.orders.pop((strategy,), None)


class LabelIndex:
    """Every frame's current labels as numpy arrays, in frame-id order, kept in step with the event log.

    Per field (sludge, layout) it holds what the ``current_labels`` view computes: the latest human and the
    latest imported event (value, id, labeler), the current value and event, whether that event was accepted
    in review, and whether labelers' latest values differ. Labelers are small integer codes (0: nobody).

    >>> index = get_label_index(db)  # doctest: +SKIP
    >>> int((index.cur_val[0] < 0).sum())  # frames without a current sludge label  # doctest: +SKIP
    412
    """

    def __init__(self, config: QueueConfig = QueueConfig()) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.ids = np.zeros(0, np.int64)
        self.collection = np.zeros(0, np.int32)
        # Each frame's video (the videos table's rowid) and its index in the video, for its neighbours.
        self.video = np.zeros(0, np.int64)
        self.frame_index = np.zeros(0, np.int64)
        self._neighbours: np.ndarray | None = None
        self.collections: dict[str, int] = {}
        self.labelers: dict[str, int] = {}
        self.reviewer = np.zeros(1, bool)  # by labeler code
        self.last_frame = self.last_event = self.last_review = 0
        # Grows with every batch of label events; keys the caches below.
        self.version = 0
        self.any_sludge = np.zeros(0, bool)
        self.last_labeler = np.zeros(0, np.int32)
        two = range(2)
        self.h_val = [np.zeros(0, np.int8) for _ in two]  # -2: no human event, -1: one holding nothing
        self.h_ev = [np.zeros(0, np.int64) for _ in two]
        self.h_lab = [np.zeros(0, np.int32) for _ in two]
        self.i_val = [np.zeros(0, np.int8) for _ in two]
        self.i_ev = [np.zeros(0, np.int64) for _ in two]
        self.i_lab = [np.zeros(0, np.int32) for _ in two]
        self.cur_val = [np.zeros(0, np.int8) for _ in two]  # -1: no current value
        self.cur_ev = [np.zeros(0, np.int64) for _ in two]
        self.cur_lab = [np.zeros(0, np.int32) for _ in two]
        self.cur_accepted = [np.zeros(0, bool) for _ in two]
        self.differs = [np.zeros(0, bool) for _ in two]
        # Positions where labelers' latest values differ in either field (few: frames two people labelled).
        self.differing: set[int] = set()
        self.differing_version = 0
        # (position, field) -> {human labeler code: latest value}; only frames people have labelled.
        self.human_latest: dict[tuple[int, int], dict[int, int]] = {}
        self.accepted: set[int] = set()
        self.models: dict[str, ModelScores] = {}
        self._cache: dict[tuple, object] = {}

    # ------------------------------------------------------------ keeping in step

    def refresh(self, db: sqlite_utils.Database, model_id: str | None = None) -> ModelScores | None:
        """Read what is new in the store (one read transaction) and, with ``model_id``, that version's scores."""
        with read_transaction(db):
            rowids = self._read_labelers(db)
            self._read_frames(db)
            self._read_events(db, rowids)
            self._read_reviews(db)
            return self._read_predictions(db, model_id) if model_id else None

    def _code(self, name: str) -> int:
        code = self.labelers.get(name)
        if code is None:
            code = self.labelers[name] = len(self.labelers) + 1
            self.reviewer = np.append(self.reviewer, False)
        return code

    def _read_labelers(self, db) -> np.ndarray:
        """Roles by code, and the labelers table's rowid -> code."""
        rows = db.execute("SELECT rowid, name, role FROM labelers").fetchall()
        rowids = np.zeros(max((r[0] for r in rows), default=0) + 1, np.int32)
        for rowid, name, role in rows:
            code = self._code(name)
            self.reviewer[code] = role == "reviewer"
            rowids[rowid] = code
        return rowids

    def _read_frames(self, db) -> None:
        if self.last_frame == 0:
            # All of a store's frames: collection by collection, off the videos' and frames' indexes (twice as
            # fast as joining each frame to its video).
            parts = []
            for name in [r[0] for r in db.execute("SELECT DISTINCT collection FROM videos ORDER BY collection")]:
                code = self.collections.setdefault(name, len(self.collections))
                found, video, index = _read_columns(db.execute(
                    "SELECT f.id, v.rowid, f.frame_index FROM videos v JOIN frames f ON f.video_id = v.id"
                    " WHERE v.collection = ?", [name]), 3)
                parts.append((found, np.full(len(found), code, np.int32), video, index))
            if parts:
                ids, codes, video, index = (np.concatenate(column) for column in zip(*parts))
                by_id = np.argsort(ids)
                ids, codes, video, index = ids[by_id], codes[by_id], video[by_id], index[by_id]
            else:
                ids = codes = video = index = np.zeros(0, np.int64)
        else:
            rows = db.execute("SELECT f.id, v.collection, v.rowid, f.frame_index FROM frames f JOIN videos v"
                              " ON v.id = f.video_id WHERE f.id > ? ORDER BY f.id", [self.last_frame]).fetchall()
            names = [r[1] for r in rows]
            for name in sorted(set(names) - set(self.collections)):
                self.collections[name] = len(self.collections)
            ids = np.array([r[0] for r in rows], np.int64)
            codes = np.fromiter(map(self.collections.__getitem__, names), np.int32, len(names))
            video = np.array([r[2] for r in rows], np.int64)
            index = np.array([r[3] for r in rows], np.int64)
        n = len(ids)
        if not n:
            return
        first_new = len(self.ids)
        self.ids = np.concatenate([self.ids, ids])
        self.collection = np.concatenate([self.collection, codes.astype(np.int32)])
        self.video = np.concatenate([self.video, video])
        self.frame_index = np.concatenate([self.frame_index, index])
        self._neighbours = None
        self.any_sludge = np.concatenate([self.any_sludge, np.zeros(n, bool)])
        self.last_labeler = np.concatenate([self.last_labeler, np.zeros(n, np.int32)])
        for name, fill in (("h_val", -2), ("h_ev", 0), ("h_lab", 0), ("i_val", -2), ("i_ev", 0), ("i_lab", 0),
                           ("cur_val", -1), ("cur_ev", 0), ("cur_lab", 0), ("cur_accepted", False),
                           ("differs", False)):
            arrays = getattr(self, name)
            for f in range(2):
                arrays[f] = np.concatenate([arrays[f], np.full(n, fill, arrays[f].dtype)])
        for scores in self.models.values():
            scores.p = np.concatenate([scores.p, np.full(n, np.nan)])
            scores.layout = np.concatenate([scores.layout, np.full(n, -1, np.int8)])
            for strategy, quality in scores.quality.items():
                scores.quality[strategy] = np.concatenate([quality, np.full(n, np.nan)])
            for order in scores.orders.values():
                order.stale = np.concatenate([order.stale, np.zeros(n, bool)])
            # A new frame has no label, but it may now stand between labelled neighbours: their vote changed.
            scores.touch_labels(np.arange(first_new, first_new + n), self.config.resort_after, codes)
        self.last_frame = int(ids[-1])
        self._cache.clear()

    def find_slots(self, frame_ids) -> np.ndarray:
        """Positions of frame ids in the arrays (every id must be a known frame)."""
        return np.searchsorted(self.ids, np.asarray(frame_ids, np.int64))

    def find_known_slots(self, frame_ids) -> np.ndarray:
        """Positions of those frame ids that are in the arrays (a frame stored since the last refresh is not)."""
        ids = np.asarray(frame_ids, np.int64)
        if not len(self.ids):
            return np.zeros(0, np.int64)
        slots = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        return slots[self.ids[slots] == ids]

    def _read_events(self, db, rowids: np.ndarray) -> None:
        eid, packed, lab_rowid = _read_columns(db.execute(_EVENTS_SQL, [self.last_event]), 3)
        if not len(eid):
            return
        self.version += 1
        val = _VALUE_OF[packed % 256]
        hum = (packed >> 8) % 256 == ord("h")
        fld = _FIELD_OF[(packed >> 16) % 256]
        slot = self.find_slots(packed >> 24)
        lab = rowids[lab_rowid]
        order = np.arange(len(eid))
        last = _find_last_per_slot(slot, order, len(self.ids))
        self.last_labeler[slot[last]] = lab[last]
        for f in (_SLUDGE, _LAYOUT):
            of_field = np.flatnonzero(fld == f)
            if not len(of_field):
                continue
            for is_human, value, event, labeler in ((True, self.h_val, self.h_ev, self.h_lab),
                                                    (False, self.i_val, self.i_ev, self.i_lab)):
                rows = of_field[hum[of_field] == is_human]
                last = _find_last_per_slot(slot[rows], rows, len(self.ids))
                value[f][slot[last]] = val[last]
                event[f][slot[last]] = eid[last]
                labeler[f][slot[last]] = lab[last]
            people = of_field[hum[of_field]]
            for s, code, value in zip(slot[people].tolist(), lab[people].tolist(), val[people].tolist()):
                self.human_latest.setdefault((s, f), {})[code] = value
            touched = _dedupe(slot[of_field], len(self.ids))
            self._settle(f, touched)
            if f == _SLUDGE:
                self.any_sludge[touched] = True
                for scores in self.models.values():
                    scores.touch_labels(touched, self.config.resort_after, self.collection[touched])
        self.last_event = int(eid[-1])

    def _settle(self, f: int, touched: np.ndarray) -> None:
        """Recompute the current value, its event and labeler, acceptance and disagreement of touched frames."""
        h = self.h_val[f][touched]
        i = self.i_val[f][touched]
        use_h, use_i = h >= 0, (h < 0) & (i >= 0)
        self.cur_val[f][touched] = np.where(use_h, h, np.where(use_i, i, -1))
        self.cur_ev[f][touched] = np.where(use_h, self.h_ev[f][touched], np.where(use_i, self.i_ev[f][touched], 0))
        self.cur_lab[f][touched] = np.where(use_h, self.h_lab[f][touched], np.where(use_i, self.i_lab[f][touched], 0))
        self.cur_accepted[f][touched] = _is_member(self.cur_ev[f][touched], self.accepted)
        for s in touched[self.h_ev[f][touched] > 0].tolist():
            values = {v for v in self.human_latest.get((s, f), {}).values() if v >= 0}
            if self.i_val[f][s] >= 0:
                values.add(int(self.i_val[f][s]))
            self.differs[f][s] = len(values) > 1
            if (self.differs[_SLUDGE][s] or self.differs[_LAYOUT][s]) != (s in self.differing):
                self.differing ^= {s}
                self.differing_version += 1

    def _read_reviews(self, db) -> None:
        rows = db.execute("SELECT r.id, r.accepted, e.id, e.frame_id, {field} FROM reviews r JOIN label_events e"
                          " ON e.id = r.event_id WHERE r.id > ? ORDER BY r.id".format(field=_FIELD_SQL),
                          [self.last_review]).fetchall()
        for _, accepted, event_id, frame_id, f in rows:
            if accepted:
                self.accepted.add(event_id)
                if f < 2:
                    s = int(self.find_slots([frame_id])[0])
                    if self.cur_ev[f][s] == event_id:
                        self.cur_accepted[f][s] = True
        if rows:
            self.last_review = rows[-1][0]

    def _read_predictions(self, db, model_id: str) -> ModelScores:
        scores = self.models.pop(model_id, None)
        top = db.execute("SELECT max(rowid) FROM predictions").fetchone()[0] or 0
        newest = db.execute("SELECT max(created_at) FROM predictions WHERE model_id = ?", [model_id]).fetchone()[0]
        if scores is None or top < scores.last_rowid:  # new, or the table was rebuilt (VACUUM renumbers rowids)
            n = len(self.ids)
            scores = ModelScores(model_id, np.full(n, np.nan), np.full(n, -1, np.int8))
            packed, p = _read_columns(db.execute(_PREDICTIONS_SQL + "p.model_id = ?", [model_id]), 2, np.float64)
        elif top == scores.last_rowid and (newest or "") <= scores.last_created:
            packed = p = np.zeros(0)
        else:
            # New rows have higher rowids; a row recorded again keeps its rowid and gets a new time.
            added = _read_columns(db.execute(_PREDICTIONS_SQL + "p.rowid > ? AND p.model_id = ?",
                                        [scores.last_rowid, model_id]), 2, np.float64)
            redone = _read_columns(db.execute(_PREDICTIONS_SQL + "p.model_id = ? AND p.created_at > ?",
                                         [model_id, scores.last_created]), 2, np.float64)
            packed, p = (np.concatenate(pair) for pair in zip(added, redone))
        scores.last_rowid, scores.last_created = top, newest or ""
        if len(packed):
            packed = packed.astype(np.int64)
            slots = self.find_slots(packed // 8)
            scores.p[slots] = p
            scores.layout[slots] = packed % 8 - 1
            slots = _dedupe(slots, len(self.ids))
            scores.touch_scores(slots, self.config.resort_after, self.collection[slots])
        self.models[model_id] = scores
        while len(self.models) > self.config.models_kept:
            self.models.pop(next(iter(self.models)))
        return scores

    def score_labels(self, scores: ModelScores, strategy: str = "label-issue") -> np.ndarray:
        """cleanlab's label quality per frame for a label-issue strategy, rescoring those whose label or score
        changed since last time (and, in context, their neighbours, whose vote changed)."""
        from cleanlab.rank import get_label_quality_scores

        context = _ISSUE_STRATEGIES[strategy] and self.config.label_context > 0
        if context and (due := self.list_due_contexts(scores)):
            fits, sizes = self.fit_context(scores, due)
            scores.context = scores.context or {}
            for code in due:
                scores.context[code], scores.context_sizes[code] = fits.get(code), sizes.get(code, 0)
                scores.context_changes.pop(code, None)
            refitted = np.flatnonzero(np.isin(self.collection, due))  # their frames' P moved with the weights
            scores.touch_quality(refitted, self.config.resort_after,
                                 [s for s in scores.quality if _ISSUE_STRATEGIES[s]])
        quality = scores.quality.get(strategy)
        if quality is None:
            quality = scores.quality[strategy] = np.full(len(self.ids), np.nan)
            dirty = np.arange(len(self.ids))
        elif scores.quality_dirty.get(strategy):
            dirty = np.concatenate(scores.quality_dirty[strategy])
            if context:
                around = self.list_neighbours()[dirty].ravel()
                dirty = np.concatenate([dirty, around[around >= 0]])
            dirty = _dedupe(dirty, len(self.ids))
        else:
            return quality
        scores.quality_dirty[strategy] = []
        labels, p = self.cur_val[_SLUDGE][dirty], scores.p[dirty]
        ok = (labels >= 0) & ~np.isnan(p)
        quality[dirty] = np.nan
        if ok.any():
            p = self.predict_in_context(scores, dirty[ok]) if context else p[ok]
            quality[dirty[ok]] = get_label_quality_scores(
                labels[ok].astype(np.int64), np.stack([1.0 - p, p], axis=1), method=self.config.label_quality)
        if (strategy,) in scores.orders:
            scores.orders[(strategy,)].touch(dirty)
        return quality

    def list_neighbours(self) -> np.ndarray:
        """Per position, the positions of the ``label_context`` nearest frames on each side in its video, in
        frame-index order (-1: none there)."""
        if self._neighbours is None:
            reach, n = self.config.label_context, len(self.ids)
            order = np.lexsort((self.frame_index, self.video))
            rank = np.empty(n, np.int64)
            rank[order] = np.arange(n)
            table = np.full((n, 2 * reach), -1, np.int32 if n < 2**31 else np.int64)
            for column, step in enumerate([-d for d in range(reach, 0, -1)] + list(range(1, reach + 1))):
                at = rank + step
                inside = (at >= 0) & (at < n)
                other = order[np.clip(at, 0, max(n - 1, 0))]
                same = inside & (self.video[other] == self.video)
                table[same, column] = other[same]
            self._neighbours = table
        return self._neighbours

    def read_neighbour_labels(self, slots: np.ndarray) -> np.ndarray:
        """Per frame, the current sludge labels of its neighbours (columns as ``list_neighbours``; -1: no
        neighbour there, or one without a label)."""
        around = self.list_neighbours()[slots]
        return np.where(around >= 0, self.cur_val[_SLUDGE][np.maximum(around, 0)], -1)

    def describe_context(self, scores: ModelScores, slots: np.ndarray) -> np.ndarray:
        """The two numbers the label context weighs per frame: the model's log-odds of sludge and the vote of
        the neighbours' current sludge labels (+1 sludge, -1 not, 0 no label or no neighbour; averaged)."""
        p = np.clip(scores.p[slots], 1e-4, 1 - 1e-4)
        labels = self.read_neighbour_labels(slots)
        vote = np.where(labels >= 0, 2.0 * labels - 1.0, 0.0).sum(axis=1) / labels.shape[1]
        return np.stack([np.log(p / (1 - p)), vote], axis=1)

    def count_neighbours_against(self, scores: ModelScores, slots: np.ndarray
                                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per frame, how many of its labelled neighbours are labelled otherwise, how many are labelled, and
        whether its collection's ranking weighs them at all."""
        labels = self.read_neighbour_labels(slots)
        weighed = ~np.isnan(self.weigh_in_context(scores, slots)[:, 0])
        known = (labels >= 0).sum(axis=1)
        against = ((labels >= 0) & (labels != self.cur_val[_SLUDGE][slots][:, None])).sum(axis=1)
        return against, known, weighed

    def list_due_contexts(self, scores: ModelScores) -> list[int]:
        """Collections whose label context is due to be fitted: every one before the first fit; then those
        with as many of their frames changed since their fit as it read labelled frames, at least
        ``context_min_labels`` and at most ``refit_after``. A collection ingested or labelled after the first
        fit is due as soon as it has that many."""
        if scores.context is None:
            return list(self.collections.values())
        low, high = self.config.context_min_labels, self.config.refit_after
        return [code for code, changed in scores.context_changes.items()
                if changed >= min(max(scores.context_sizes.get(code, 0), low), high)]

    def fit_context(self, scores: ModelScores, codes: list[int]
                    ) -> tuple[dict[int, tuple[float, float, float] | None], dict[int, int]]:
        """Weights of the label context per collection of `codes`, each fitted on its frames with a current
        sludge label and a score; None where either class has fewer than ``context_min_labels`` of them, or
        where fewer than ``context_min_isolated`` of its labels differ from the frames next to them. Also how
        many such frames each collection has."""
        from sklearn.linear_model import LogisticRegression

        fits: dict[int, tuple[float, float, float] | None] = {}
        sizes: dict[int, int] = {}
        judged = np.flatnonzero((self.cur_val[_SLUDGE] >= 0) & ~np.isnan(scores.p) & np.isin(self.collection, codes))
        for code in np.unique(self.collection[judged]).tolist():
            slots = judged[self.collection[judged] == code]
            labels = self.cur_val[_SLUDGE][slots]
            fits[code], sizes[code] = None, len(slots)
            if min(int((labels == 1).sum()), int((labels == 0).sum())) < self.config.context_min_labels:
                continue
            if self.count_isolated_share(slots) < self.config.context_min_isolated:
                continue
            if len(slots) > self.config.context_fit_frames:
                spread = np.linspace(0, len(slots) - 1, self.config.context_fit_frames).astype(np.int64)
                slots, labels = slots[spread], labels[spread]
            fit = LogisticRegression().fit(self.describe_context(scores, slots), labels)
            fits[code] = float(fit.coef_[0, 0]), float(fit.coef_[0, 1]), float(fit.intercept_[0])
        return fits, sizes

    def count_isolated_share(self, slots: np.ndarray) -> float:
        """Of the labelled frames among `slots` with a labelled frame next to them in the video, the share
        labelled unlike every such frame: the trace slips frame by frame leave, and labels given per video do
        not."""
        reach = self.config.label_context
        beside = self.read_neighbour_labels(slots)[:, reach - 1:reach + 1]  # the frames right next to it
        known = beside >= 0
        own = self.cur_val[_SLUDGE][slots]
        judged = (own >= 0) & known.any(axis=1)
        unlike = (~known | (beside != own[:, None])).all(axis=1)
        return float(unlike[judged].mean()) if judged.any() else 0.0

    def weigh_in_context(self, scores: ModelScores, slots: np.ndarray) -> np.ndarray:
        """Per frame, the weights of its collection's fit (log-odds, vote, intercept); NaN where it has none."""
        table = np.full((len(self.collections) + 1, 3), np.nan)
        for code, fit in (scores.context or {}).items():
            if fit is not None:
                table[code] = fit
        return table[self.collection[slots]]

    def predict_in_context(self, scores: ModelScores, slots: np.ndarray) -> np.ndarray:
        """P(sludge) of the frames under their collection's label-context weights (the model's P where the
        collection has none)."""
        weights = self.weigh_in_context(scores, slots)
        x = self.describe_context(scores, slots)
        # Term by term (not a matrix product), so a frame gets the same bits in any batch.
        fitted = 1.0 / (1.0 + np.exp(-(x[:, 0] * weights[:, 0] + x[:, 1] * weights[:, 1] + weights[:, 2])))
        return np.where(np.isnan(weights[:, 0]), scores.p[slots], fitted)

    # ------------------------------------------------------------ reading

    def get_order(self, scores: ModelScores, key: tuple, build: Callable[[], tuple[np.ndarray, np.ndarray]]
              ) -> RankedOrder:
        """The model's order for a strategy (and threshold), sorted again when too many keys changed."""
        order = scores.orders.get(key)
        if order is None or order.changed > self.config.resort_after:
            candidates, keys = build()
            order = scores.orders[key] = RankedOrder.sort(candidates, keys, len(self.ids))
            # An order per threshold is kept; an old threshold's gives way to the new one.
            for old in [k for k in scores.orders if k[0] == key[0] and k != key]:
                del scores.orders[old]
        return order

    def pick_scope(self, db, collection: str | None) -> tuple[int | None, np.ndarray | None]:
        """(collection code, its positions when it is small enough to rank in one pass), or (None, None)."""
        if collection is None:
            return None, (np.arange(len(self.ids)) if len(self.ids) <= self.config.dense_frames else None)
        if collection not in self.collections:
            check_collection(db, collection)  # refuses a name no video of the store has
            return -1, np.zeros(0, np.int64)  # its videos have no frames yet
        code = self.collections[collection]
        key = ("scope", code)
        if key not in self._cache:
            self._cache[key] = np.flatnonzero(self.collection == code)
        slots = self._cache[key]
        small = len(slots) <= self.config.dense_frames or len(slots) < self.config.dense_share * len(self.ids)
        return code, (slots if small else None)

    def list_differing(self) -> np.ndarray:
        """Positions where labelers' latest values differ in either field, in frame-id order."""
        key = ("differing", self.differing_version)
        if key not in self._cache:
            self._cache = {k: v for k, v in self._cache.items() if k[0] != "differing"}
            self._cache[key] = np.sort(np.fromiter(self.differing, np.int64, len(self.differing)))
        return self._cache[key]

    def list_unlabeled(self) -> np.ndarray:
        """Positions of frames with no sludge event at all, in frame-id order."""
        key = ("unlabeled", self.version)
        if key not in self._cache:
            self._cache = {k: v for k, v in self._cache.items() if k[0] != "unlabeled"}
            self._cache[key] = np.flatnonzero(~self.any_sludge)
        return self._cache[key]

    def count_unlabeled_by_collection(self) -> np.ndarray:
        """Frames without a current sludge label, per collection code."""
        key = ("count", self.version)
        if key not in self._cache:
            self._cache = {k: v for k, v in self._cache.items() if k[0] != "count"}
            self._cache[key] = np.bincount(self.collection[self.cur_val[_SLUDGE] < 0],
                                           minlength=len(self.collections))
        return self._cache[key]

    def find_settled(self, f: int, slots: np.ndarray) -> np.ndarray:
        """Which of the frames' current value of field f is a reviewer's or was accepted in review."""
        return self.reviewer[self.cur_lab[f][slots]] | self.cur_accepted[f][slots]


_INDEXES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_INDEXES_LOCK = threading.Lock()


def get_label_index(db: sqlite_utils.Database) -> LabelIndex:
    """The connection's :class:`LabelIndex` (built on first use); call ``refresh`` before reading it.

    >>> get_label_index(db).refresh(db)  # doctest: +SKIP
    """
    with _INDEXES_LOCK:
        index = _INDEXES.get(db)
        if index is None:
            index = _INDEXES[db] = LabelIndex()
        return index


def _is_member(values: np.ndarray, known: set[int]) -> np.ndarray | bool:
    """Which values are in the set."""
    if not known:
        return False
    if len(values) < 4096:
        return np.fromiter((v in known for v in values.tolist()), bool, len(values))
    return np.isin(values, np.fromiter(known, np.int64, len(known)))


def _dedupe(slots: np.ndarray, size: int) -> np.ndarray:
    """The distinct positions, in order (a mask over the index: cheaper than sorting millions)."""
    if len(slots) < 4096:
        return np.unique(slots)
    mask = np.zeros(size, bool)
    mask[slots] = True
    return np.flatnonzero(mask)


def _find_last_per_slot(slots: np.ndarray, rows: np.ndarray, size: int) -> np.ndarray:
    """Of rows in event order, the last one of each position."""
    if len(rows) < 4096:
        _, first = np.unique(slots[::-1], return_index=True)
        return rows[::-1][first]
    last = np.full(size, -1, np.int64)
    np.maximum.at(last, slots, np.arange(len(rows)))
    return rows[last[last >= 0]]


def _walk(slots: np.ndarray, accept: Callable[[np.ndarray], np.ndarray], k: int) -> np.ndarray:
    """The first k of `slots` that `accept` keeps, in order, judged a chunk at a time (chunks double)."""
    found: list[np.ndarray] = []
    count, start, step = 0, 0, max(1024, 16 * k)
    while start < len(slots) and count < k:
        chunk = slots[start:start + step]
        chunk = chunk[accept(chunk)]
        found.append(chunk)
        count += len(chunk)
        start, step = start + step, step * 2
    return np.concatenate(found)[:k] if found else np.zeros(0, np.int64)


def _rank_first(keys: np.ndarray, ties: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k lowest (key, tie) pairs, in that order (a partition first: only ties at the k-th key
    are sorted with the rest)."""
    index = np.arange(len(keys))
    if len(keys) > k:
        index = index[keys <= np.partition(keys, k - 1)[k - 1]]
    return index[np.lexsort((ties[index], keys[index]))[:k]]


def _pick_first(slots: np.ndarray, keys: np.ndarray, k: int) -> np.ndarray:
    """The k slots with the lowest keys, in order of (key, slot): ties go to the lower frame id."""
    return slots[_rank_first(keys, slots, k)]


# ---------------------------------------------------------------- the queue


def next_frames(db: sqlite_utils.Database, labeler: str, strategy: str = "uncertain", n: int = 10,
                model_id: str | None = None, lease_s: float = DEFAULT_LEASE_S, threshold: float = 0.5,
                seed: int | None = None, collection: str | None = None) -> list[dict]:
    """The next ``n`` frames for ``labeler`` by ``strategy``, leased to them for ``lease_s`` seconds.

    ``model_id`` defaults to the store's only model version with predictions (name one when there are
    several); ``collection`` limits the queue to one collection's videos (None: every collection). Each
    returned dict carries frame_id, video_id, frame_index, time_s, revision (pass it back as seen_revision),
    image (absolute path), its width and height in pixels, current labels, the model's p_sludge / layout, reason, score and lease_expires_at.

    >>> [f["frame_id"] for f in next_frames(db, "ana", "label-issue", n=3)]  # doctest: +SKIP
    [17, 4, 230]
    """
    if strategy not in STRATEGIES:
        raise InvalidLabelError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if n < 1:
        return []
    row = next(db.query("SELECT role, kind FROM labelers WHERE name = ?", [labeler]), None)
    if row is None or row["kind"] != "human":
        raise PermissionDeniedError(f"unknown labeler {labeler!r}: add it with add_labeler to use the queue")
    model_id = model_id or sole_model_id(db)
    now = time.time()
    # Candidates are chosen outside the write lock, with room to spare for frames another labeler leases in
    # the meantime; the short write transaction below drops those and takes the leases.
    spare = 3 * int(n) + 10
    index = get_label_index(db)
    with index.lock:
        wants_model = strategy in ("uncertain", "disagreement", *_ISSUE_STRATEGIES) and model_id is not None
        scores = index.refresh(db, model_id if wants_model else None)
        candidates = _rank(db, index, scores, strategy, labeler, spare, float(threshold), seed, now, collection)
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


def _rank(db, index: LabelIndex, scores: ModelScores | None, strategy: str, labeler: str, k: int,
          threshold: float, seed: int | None, now: float, collection: str | None) -> list[tuple[int, float, str]]:
    """(frame id, score, reason) of up to k frames by the strategy, best first."""
    code, dense = index.pick_scope(db, collection)
    leased = np.sort(index.find_known_slots([r[0] for r in db.execute(
        "SELECT frame_id FROM leases WHERE labeler != ? AND expires_at > ?", [labeler, now])]))
    asker = index.labelers.get(labeler, 0)

    def open_to_all(slots: np.ndarray) -> np.ndarray:
        keep = np.ones(len(slots), bool) if code is None else index.collection[slots] == code
        return keep & ~np.isin(slots, leased) if len(leased) else keep

    def rows(slots, keys, reason):
        return [(int(index.ids[s]), float(v), reason(i) if callable(reason) else reason)
                for i, (s, v) in enumerate(zip(slots.tolist(), keys.tolist()))]

    if strategy == "unlabeled":
        picked = _walk(index.list_unlabeled(), open_to_all, k)
        return rows(picked, np.zeros(len(picked)), "unlabeled")
    if strategy == "random":
        picked = _sample(len(index.ids), dense, open_to_all, k, seed)
        return rows(picked, np.zeros(len(picked)), "random")
    if scores is None:
        return []
    p = scores.p
    if strategy == "uncertain":
        def accept(slots):
            return open_to_all(slots) & ~np.isnan(p[slots]) & (index.h_ev[_SLUDGE][slots] == 0)

        def key(slots):
            return np.abs(p[slots] - threshold)

        def build():
            candidates = np.flatnonzero(~np.isnan(p))
            return candidates, key(candidates)

        # A frame a person labelled never comes back to this queue: the walk's start moves past it.
        picked = _pick_best(index, scores, ("uncertain", threshold), build, accept, key, dense, k,
                       gone=lambda slots: index.h_ev[_SLUDGE][slots] > 0)
        return rows(picked, key(picked), "uncertain")
    if strategy in _ISSUE_STRATEGIES:
        quality = index.score_labels(scores, strategy)

        def accept(slots):
            return (open_to_all(slots) & ~np.isnan(quality[slots]) & ~index.find_settled(_SLUDGE, slots)
                    & (index.last_labeler[slots] != asker))

        def key(slots):
            return quality[slots]

        def build():
            candidates = np.flatnonzero(~np.isnan(quality))
            return candidates, key(candidates)

        picked = _pick_best(index, scores, (strategy,), build, accept, key, dense, k)
        if not (_ISSUE_STRATEGIES[strategy] and index.config.label_context > 0):
            return rows(picked, key(picked), "label issue")
        # Say what the neighbours' vote was, beside the frame: how many of them a labeler would contradict.
        against, known, weighed = index.count_neighbours_against(scores, picked)
        return rows(picked, key(picked), lambda i: (
            "label issue" if not weighed[i] else f"{WEIGHED_REASON}{against[i]} of {known[i]} labelled frames beside "
            "it say otherwise" if known[i] else f"{WEIGHED_REASON}no labelled frames beside it"))

    # disagreement: labelers first (score 1 + the model's confidence where it disagrees too), then the model
    def for_asker(slots):
        return open_to_all(slots) & (index.last_labeler[slots] != asker)

    def judge(slots):
        """(labelers differ, model differs) on a field not settled yet, for the frames."""
        opened = [(index.cur_val[f][slots] >= 0) & ~index.find_settled(f, slots) for f in (_SLUDGE, _LAYOUT)]
        labelers_differ = (index.differs[_SLUDGE][slots] & opened[_SLUDGE]) | (index.differs[_LAYOUT][slots]
                                                                               & opened[_LAYOUT])
        said = p[slots] >= threshold
        shown_layout = np.where(said, scores.layout[slots], _NONE_CODE)
        model_differs = ~np.isnan(p[slots]) & (
            (opened[_SLUDGE] & (index.cur_val[_SLUDGE][slots] != said))
            | (opened[_LAYOUT] & (index.cur_val[_LAYOUT][slots] != shown_layout)))
        return labelers_differ, model_differs

    def model_only(slots):
        """Which of the frames this labeler may get the model disagrees with, and labelers do not."""
        keep = for_asker(slots)
        labelers_differ, model_differs = judge(slots[keep])
        keep[keep] = model_differs & ~labelers_differ
        return keep

    def build():
        candidates = np.flatnonzero(~np.isnan(p))
        return candidates, -np.abs(p[candidates] - threshold)

    if dense is not None:
        picked = dense[for_asker(dense)]
        labelers_differ, model_differs = judge(picked)
        keep = labelers_differ | model_differs
        picked, labelers_differ, model_differs = picked[keep], labelers_differ[keep], model_differs[keep]
    else:
        # Labelers' conflicts are few and all rank first; the model's are walked by its confidence, when
        # there are not k of the former.
        picked = index.list_differing()
        picked = picked[for_asker(picked)]
        labelers_differ, model_differs = judge(picked)
        picked, model_differs = picked[labelers_differ], model_differs[labelers_differ]
        labelers_differ = np.ones(len(picked), bool)
        if len(picked) < k:
            by_model = _pick_best(index, scores, ("disagreement", threshold), build, model_only,
                             lambda slots: -np.abs(p[slots] - threshold), None, k)
            picked = np.concatenate([picked, by_model])
            labelers_differ = np.concatenate([labelers_differ, np.zeros(len(by_model), bool)])
            model_differs = np.concatenate([model_differs, np.ones(len(by_model), bool)])
    score = labelers_differ + np.where(model_differs, np.abs(p[picked] - threshold), 0.0)
    best = _rank_first(-score, picked, k)
    return rows(picked[best], score[best], lambda i: "labelers disagree" if labelers_differ[best][i] else
                "model disagrees")


def _pick_best(index: LabelIndex, scores: ModelScores, name: tuple, build, accept, key, dense, k: int,
          gone=None) -> np.ndarray:
    """The k best frames by `key` that `accept` keeps: in one pass over a small scope, else by walking the
    sorted order and scoring apart the frames whose key changed since the sort."""
    if dense is not None:
        slots = dense[accept(dense)]
        return _pick_first(slots, key(slots), k)
    order = index.get_order(scores, name, build)
    walked = order.walk(accept, k, gone)
    fresh = order.list_fresh()
    slots = np.concatenate([walked, fresh[accept(fresh)]])
    return _pick_first(slots, key(slots), k)


def _sample(n: int, dense: np.ndarray | None, accept, k: int, seed: int | None) -> np.ndarray:
    """k of n positions drawn uniformly without replacement from those `accept` keeps."""
    rng = np.random.default_rng(seed)
    if dense is None:
        # Draw positions and keep the acceptable ones in draw order: a scope this large fills up in a round
        # or two. Should it not (most frames leased), one pass over all of them decides.
        picked = np.zeros(0, np.int64)
        for _ in range(8):
            draws = rng.integers(0, n, 4 * k)
            _, first_at = np.unique(draws, return_index=True)
            draws = draws[np.sort(first_at)]
            draws = draws[~np.isin(draws, picked)]
            picked = np.concatenate([picked, draws[accept(draws)]])
            if len(picked) >= k:
                return picked[:k]
        dense = np.arange(n)
    pool = dense[accept(dense)]
    return pool[rng.choice(len(pool), size=min(k, len(pool)), replace=False)]


def _describe(db, picked: Sequence[tuple], model_id: str | None, expires: float | None) -> list[dict]:
    if not picked:
        return []
    ids = [p[0] for p in picked]
    marks = ",".join("?" * len(ids))
    labels = {r["frame_id"]: r for r in db.query(f"SELECT * FROM current_labels WHERE frame_id IN ({marks})", ids)}
    stored = {r[0]: r[1:] for r in db.execute(f"SELECT id, image_path, width, height FROM frames WHERE id IN ({marks})",
                                                ids).fetchall()}
    preds = {r["frame_id"]: r for r in db.query(
        f"SELECT frame_id, p_sludge, layout FROM predictions WHERE model_id = ? AND frame_id IN ({marks})",
        [model_id, *ids])}
    images = dict(zip(ids, _resolve_image_paths(find_media_dir(db), [stored[i][0] for i in ids])))
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
            "image": images[frame_id],
            "width": stored[frame_id][1],
            "height": stored[frame_id][2],
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


def _resolve_image_paths(media_dir, relatives: list[str]) -> list[str]:
    """Absolute paths of stored images, each refused when it would leave the media folder, as
    ``resolve_media_path`` does, with the folder resolved once for the batch: below it, a path that names
    no '..' and passes through no link is its own resolved path (an lstat per part below the folder, not
    one per folder up to the root)."""
    base = str(Path(media_dir).resolve())
    out = []
    for relative in relatives:
        parts = relative.split("/")
        plain = not relative.startswith("/") and "\\" not in relative and not {"", ".", ".."} & set(parts)
        path = base
        for part in parts if plain else ():
            path = os.path.join(path, part)
            plain = plain and not os.path.islink(path)
        out.append(path if plain else str(resolve_media_path(base, relative)))
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


def count_unlabeled(db: sqlite_utils.Database, collection: str | None = None) -> int:
    """How many frames have no current sludge label (never labelled, or every label on them taken back),
    in one collection or (None) in the whole store.

    >>> count_unlabeled(db)  # doctest: +SKIP
    412
    """
    index = get_label_index(db)
    with index.lock:
        index.refresh(db)
        code, _ = index.pick_scope(db, collection)
        counts = index.count_unlabeled_by_collection()
        if code is None:
            return int(counts.sum())
        return int(counts[code]) if code >= 0 else 0
