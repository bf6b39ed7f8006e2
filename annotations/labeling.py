"""One labeler's pass through the queue: what is on screen, what the keys do, and what a refusal leaves behind.

A :class:`LabelSession` is plain data (it lives in the UI's per-browser state) and every method that
writes takes the store as its first argument. The keys of the Label tab map one to one onto methods, and
:meth:`LabelSession.press` dispatches a key by name:

    y / n      label(db, "sludge", True / False)        n moves on; y waits for a layout
    1 .. 4     label(db, "layout", "vertical" ...)      also sets sludge=yes when it is not yet; moves on
    Enter      accept_prediction(db)                    the model's sludge (and layout) as the label; moves on
    u          undo_last(db)                            takes back your newest write not taken back yet
    r          apply_range(db)                          your last label (sludge and layout), from where it was
                                                        set to this frame
    <- / ->    move(db, -1) / move(db, +1)

The queue is continuous: when the labeler nears the end of the frames handed out, the next batch is
fetched by the same strategy, so a day of labeling needs no mouse. A key names the frame that was on
screen when it was pressed (``press(..., on_screen=frame_id)``); a key that arrives after the screen has
moved on (pressed twice quickly, or queued behind a slow write) is ignored, so no frame is labelled
that the labeler has not seen.

Every write names the frame revision the labeler saw. When someone else got there first the store refuses
(``StaleRevisionError``), nothing is written, and the change waits in ``pending`` until the labeler
retries it on the fresh revision (``retry_pending``) or drops it (``discard_pending``).

Undo is a stack of this labeler's own writes across frames, newest first. Each entry remembers the event
it wrote; the session also remembers the revision each of its own writes and undos produced on a frame,
so the next undo names that revision: a labeler's own later write (or undo) never makes an undo stale.
A change by someone else on top of yours is never taken back: ``u`` stops there and says so (press ``u``
again, having seen it, to take back your label under it, or ``u`` moves past a label already replaced).

    session = LabelSession("alice")
    session.load(db, "uncertain", n=20)
    session.press(db, "y", on_screen=session.current["frame_id"], note="face cam bottom right")
    session.press(db, "3", on_screen=session.current["frame_id"])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import annotations as store
from annotations.queue import WEIGHED_REASON
from core.vocabulary import LAYOUTS, NO_LAYOUT

# The Label tab's keys (KeyboardEvent.key names) and what each does.
KEYS = {
    "y": "sludge", "n": "not sludge",
    **{str(i): f"layout {name}" for i, name in enumerate(LAYOUTS, 1)},
    "Enter": "accept the prediction", "u": "undo", "r": "range",
    "ArrowLeft": "previous frame", "ArrowRight": "next frame",
}
# Frames of the current video in the neighbour strip, and how far the strip moves when it moves: it moves
# in steps, so between two of them the same frames stay in place (a screen redraws only the labels).
STRIP_FRAMES = 9
STRIP_STEP = 5


@dataclass
class PendingChange:
    """A change the store refused because the frame moved on; kept so the labeler loses nothing."""

    kind: str  # "label" or "range"
    frame_id: int
    field: str
    value: object
    note: str
    reason: str
    # For a range: the whole label it applies, {"sludge": ..., "layout": ...}.
    label: dict | None = None

    def describe(self) -> str:
        """What the change was, e.g. "your change sludge = yes on frame 12"."""
        if self.kind == "range" and self.label:
            return f"your range {show_label(self.label)} up to frame {self.frame_id}"
        what = "range" if self.kind == "range" else "change"
        return f"your {what} {self.field} = {show_value(self.value)} on frame {self.frame_id}"


@dataclass(frozen=True)
class Write:
    """One event this session wrote: which frame and field, the event id and the revision it produced."""

    frame_id: int
    field: str
    event_id: int
    revision: int


@dataclass
class LabelSession:
    """A labeler's queue, position, last label (for ranges), undo stack and any refused change."""

    labeler: str
    strategy: str = "uncertain"
    threshold: float = 0.5
    lease_s: float = 180.0
    # Frames fetched at a time; the next batch is fetched when fewer than `ahead` frames are left.
    batch: int = 20
    ahead: int = 3
    # The model version whose predictions the queue ranks by and shows (None: the store's only one).
    model_id: str | None = None
    # Only this collection's videos (None: every collection).
    collection: str | None = None
    items: list[dict] = field(default_factory=list)
    # Index into items; len(items) means "past the end": the queue has nothing more right now.
    position: int = 0
    # The last label written (both fields as the frame then held) and where: a range runs from there.
    last_label: dict | None = None
    anchor: tuple[str, int] | None = None  # (video id, frame index)
    # One entry per key press, newest last; "u" takes back the newest entry, one write at a time.
    undo_stack: list[list[Write]] = field(default_factory=list)
    # frame id -> the revision this session's latest write or undo on it produced (or, after a refused
    # undo, the revision the labeler was then shown): what the next undo on that frame names as seen.
    revisions: dict[int, int] = field(default_factory=dict)
    pending: PendingChange | None = None
    message: str = ""
    # How the message reads: "ok" (saved / undone), "info", "warn" (ignored, not undone) or "error".
    tone: str = "info"
    # The current frame's video: its frames in index order (``annotations.video_frames``) and name.
    video: list[dict] = field(default_factory=list)
    video_name: str = ""
    # Revisions of the current video's frames as shown; a range names these as what it saw.
    strip: dict[int, int] = field(default_factory=dict)

    # ------------------------------------------------------------ reading

    @property
    def current(self) -> dict | None:
        """The frame on screen (a dict as ``annotations.next_frames`` returns it), or None."""
        return self.items[self.position] if 0 <= self.position < len(self.items) else None

    def progress(self) -> dict:
        """{"done", "queued", "position"} for the counter: "done" counts the frames holding a label of yours
        from this session that you have not taken back.

        >>> LabelSession("ana").progress()
        {'done': 0, 'queued': 0, 'position': 0}
        """
        done = {w.frame_id for action in self.undo_stack for w in action}
        return {"done": len(done), "queued": len(self.items),
                "position": min(self.position + 1, len(self.items)) if self.items else 0}

    def neighbours(self, size: int = STRIP_FRAMES, step: int = STRIP_STEP) -> list[dict]:
        """`size` frames of the current frame's video around it, each with its current labels, the model's
        P(sludge), its image path and ``current`` (True for the frame on screen).

        The window moves in steps of `step` frames and keeps at least (size - step) // 2 frames on each side
        of the current one where the video has them.

        >>> LabelSession("ana").neighbours()
        []
        """
        item = self.current
        if item is None:
            return []
        at = next((i for i, f in enumerate(self.video) if f["frame_id"] == item["frame_id"]), None)
        if at is None:
            return []
        margin = (size - step) // 2
        start = max(0, min(len(self.video) - size, (at // step) * step - margin))
        out = []
        for f in self.video[start:start + size]:
            prediction = f.get("prediction") or {}
            out.append({"frame_id": f["frame_id"], "frame_index": f["frame_index"], "time_s": f["time_s"],
                        "sludge": f["sludge"], "layout": f["layout"], "image": f["image"],
                        "p_sludge": prediction.get("p_sludge"), "current": f["frame_id"] == item["frame_id"]})
        return out

    def upcoming(self, n: int = 2) -> list[dict]:
        """The next `n` frames of the queue after the current one (what a screen may prepare ahead).

        >>> LabelSession("ana").upcoming()
        []
        """
        return self.items[self.position + 1:self.position + 1 + n]

    # ------------------------------------------------------------ moving

    def load(self, db, strategy: str | None = None, n: int | None = None, model_id: str | None = None,
             collection: str | None = None) -> "LabelSession":
        """Start the queue afresh: the next `n` frames by `strategy`, leased to this labeler.

        The undo stack is kept: a labeler can take back what they wrote before reloading.

        >>> LabelSession("ana").load(db, "unlabeled", n=5).current["frame_id"]  # doctest: +SKIP
        12
        """
        self.strategy = strategy or self.strategy
        self.batch = int(n or self.batch)
        self.model_id = model_id or self.model_id
        self.collection = collection if collection is not None else self.collection
        self.items = []
        self.position = 0
        self.pending = None
        self._fetch_more(db)
        if self.items:
            self.say(f"{len(self.items)} frames queued by '{self.strategy}'{self.describe_weighing()}; the next ones "
                     "load as you go.")
        else:
            self.say(f"Nothing to label by '{self.strategy}': analyze a video first, or pick another strategy.")
        self._refresh(db)
        return self

    def describe_weighing(self) -> str:
        """For the label-issue queue, how its frames' labels were judged: with the labels beside them in their
        video (their reason counts those neighbours) or by the model's P alone (labels given per video, or too
        few labels in the collection to weigh neighbours); "" for other strategies.

        >>> LabelSession("ana").describe_weighing()
        ''
        """
        if self.strategy != "label-issue" or not self.items:
            return ""
        weighed = sum(item.get("reason", "").startswith(WEIGHED_REASON) for item in self.items)
        if weighed == len(self.items):
            return ", each label weighed with the labels beside it in its video"
        if not weighed:
            return (", by the model's P alone: labels given per video, or too few labels yet to weigh each with "
                    "the labels beside it")
        return (f", {weighed} of them weighed with the labels beside them in their video, the rest by the model's "
                "P alone")

    def _fetch_more(self, db) -> int:
        """Append the next batch by the strategy, leaving out frames already in this queue; returns how many."""
        seen = {item["frame_id"] for item in self.items}
        # Frames already handed out that still have no label come back first (they are ours, leased to us):
        # ask for that many more, so the batch brings new frames.
        open_ones = sum(1 for item in self.items if item.get("sludge") is None)
        more = store.next_frames(db, self.labeler, self.strategy, n=self.batch + open_ones, model_id=self.model_id,
                                 lease_s=self.lease_s, threshold=self.threshold,
                                 **({"collection": self.collection} if self.collection else {}))
        fresh = [item for item in more if item["frame_id"] not in seen][:self.batch]
        self.items.extend(fresh)
        return len(fresh)

    def move(self, db, delta: int) -> "LabelSession":
        """Go `delta` frames along the queue and re-read that frame's labels; past the end, fetch the next batch."""
        self.say("")
        if delta > 0:
            for _ in range(delta):
                if not self._advance(db):
                    break
        elif self.items:
            self.position = max(0, min(len(self.items), self.position + delta))
        self._refresh(db)
        return self

    def _refresh(self, db) -> None:
        """Re-read the current frame's revision and labels, and its video's frames (labels, revisions, name)."""
        item = self.current
        if item is None:
            self.video, self.strip, self.video_name = [], {}, ""
            return
        if self.video and self.video[0]["video_id"] == item["video_id"]:
            # The same video as before: its images and scores are known, only labels and revisions move.
            labels = {row["frame_id"]: row for row in store.current_labels(db, video_id=item["video_id"])}
            self.video = [{**f, **labels[f["frame_id"]]} for f in self.video if f["frame_id"] in labels]
        else:
            self.video = store.video_frames(db, item["video_id"], model_id=item.get("model_id") or self.model_id)
        fresh = next((f for f in self.video if f["frame_id"] == item["frame_id"]), None)
        if fresh is None:
            fresh = store.get_frame(db, item["frame_id"], model_id=item.get("model_id"))
        item.update(revision=fresh["revision"], sludge=fresh["sludge"], layout=fresh["layout"],
                    description=fresh["description"])
        self.strip = {f["frame_id"]: f["revision"] for f in self.video}
        if not item.get("video_name"):
            row = db["videos"].get(item["video_id"])
            item["video_name"] = row["name"]
        self.video_name = item["video_name"]

    def _advance(self, db) -> bool:
        """Move to the next frame, fetching the next batch when few are left; False at the very end."""
        past_end = self.position >= len(self.items)
        if len(self.items) - self.position <= self.ahead:
            self._fetch_more(db)
        if past_end and self.position < len(self.items):
            return True  # the first of the frames fetched just now
        if self.position < len(self.items) - 1:
            self.position += 1
            return True
        self.position = len(self.items)
        self.say(f"No more frames by '{self.strategy}' right now: the queue is done. Press ← to go back, "
                  "→ to look again, or pick another strategy and Load queue.")
        return False

    # ------------------------------------------------------------ keys

    def press(self, db, key: str, on_screen: int | None = None, note: str = "") -> "LabelSession":
        """Handle one key of the Label tab for the frame that was on screen when it was pressed.

        ``on_screen`` is that frame's id (None when no frame was shown). A key meant for a frame that is no
        longer current is ignored: nothing is written and the screen says so.

        >>> LabelSession("ana").press(None, "y", on_screen=None).message
        'No frame on screen: load the queue first.'
        """
        if key not in KEYS:
            self.say(f"'{key}' is not a key of this tab.", "warn")
            return self
        item = self.current
        if on_screen != (item["frame_id"] if item else None):
            where = f"frame {item['frame_id']}" if item else "the end of the queue"
            self.say(f"Ignored '{key}': it was meant for frame {on_screen}, and the screen had moved on to "
                      f"{where}. Nothing was written.", "warn")
            return self
        if key == "ArrowLeft":
            return self.move(db, -1)
        if key == "ArrowRight":
            return self.move(db, 1)
        if key == "u":
            return self.undo_last(db)
        if item is None:
            self.say("No frame on screen: load the queue first.", "warn")
            return self
        if key in ("y", "n"):
            return self.label(db, "sludge", key == "y", note=note)
        if key == "Enter":
            return self.accept_prediction(db, note=note)
        if key == "r":
            return self.apply_range(db, note=note)
        return self.label(db, "layout", LAYOUTS[int(key) - 1], note=note)

    # ------------------------------------------------------------ writing

    def label(self, db, field: str, value, note: str = "", advance: bool | None = None) -> "LabelSession":
        """Write one field of the current frame; n and layouts move on, y waits for a layout.

        A layout on a frame not yet labelled sludge also labels it sludge: a layout implies two streams.
        """
        item = self._require_current()
        advance = (field == "layout" or value is False) if advance is None else advance
        changes = [(field, value)]
        if field == "layout" and value != NO_LAYOUT and item.get("sludge") is not True:
            changes.insert(0, ("sludge", True))
        if field == "sludge" and value is False and item.get("layout") not in (None, NO_LAYOUT):
            changes.append(("layout", NO_LAYOUT))
        if self._write(db, item, changes, note):
            self._remember(item)
            if advance:
                self._advance(db)
            self._refresh(db)
        return self

    def accept_prediction(self, db, note: str = "") -> "LabelSession":
        """Take the model's answer as the label (sludge, and its layout when sludge) and move on."""
        item = self._require_current()
        if item.get("p_sludge") is None:
            self.say("This frame has no prediction to accept; label it with y / n.", "warn")
            return self
        sludge = item["p_sludge"] >= self.threshold
        changes = [("sludge", sludge)]
        if sludge and item.get("model_layout") in LAYOUTS:
            changes.append(("layout", item["model_layout"]))
        elif not sludge and item.get("layout") not in (None, NO_LAYOUT):
            changes.append(("layout", NO_LAYOUT))
        if self._write(db, item, changes, note or "accepted prediction"):
            self._remember(item)
            self._advance(db)
            self._refresh(db)
        return self

    def _remember(self, item: dict) -> None:
        """The frame's label as it now stands is the one a range applies, from this frame on."""
        self.last_label = {"sludge": item.get("sludge"), "layout": item.get("layout")}
        self.anchor = (item["video_id"], item["frame_index"])

    def _write(self, db, item: dict, changes: list[tuple[str, object]], note: str) -> bool:
        revision = item["revision"]
        written: list[Write] = []
        try:
            for field, value in changes:
                event = store.correct_label(db, item["frame_id"], field, value, self.labeler, revision,
                                            note=note, model_seen=item.get("model_id"))
                revision = event.revision
                written.append(Write(item["frame_id"], field, event.id, revision))
                self.revisions[item["frame_id"]] = revision
        except store.StaleRevisionError as err:
            field, value = changes[len(written)]
            self.pending = PendingChange("label", item["frame_id"], field, value, note, str(err))
            self.say(f"Not saved: {err}", "error")
            # Show what the frame holds now, so the labeler sees the other change before retrying over it.
            self._refresh(db)
            return False
        finally:
            if written:
                self.undo_stack.append(written)
        item["revision"] = revision
        for field, value in changes:
            item[field] = value
        self.pending = None
        shown = ", ".join(f"{f} = {show_value(v)}" for f, v in changes)
        self.say(f"Saved frame {item['frame_id']}: {shown} (revision {revision}).", "ok")
        return True

    def undo_last(self, db) -> "LabelSession":
        """Take back your newest write not taken back yet (as new events) and show that frame.

        Walks back through your own writes in order, across frames. Each undo names the revision your own
        latest write or undo on that frame produced, so your own later writes never make it stale. When
        someone else changed the frame since, nothing is undone: the frame is shown as it is now, and a second
        ``u`` takes back your label on the revision you were shown; a label of yours that someone has already
        replaced is left alone and the undo moves on to your write before it.
        """
        if not self.undo_stack:
            self.say("Nothing of yours to undo in this session.", "info")
            return self
        action = self.undo_stack[-1]
        undone: list[tuple[int, str, object]] = []
        replaced: list[tuple[int, str, str]] = []
        while action:
            w = action[-1]
            on_top = _latest_effective_change(db, w.frame_id, w.field)
            if on_top is None or on_top.id != w.event_id:
                # Someone else's change (or a review's rejection) replaced this label already: nothing to take back.
                action.pop()
                replaced.append((w.frame_id, w.field, on_top.labeler if on_top else "a review"))
                continue
            seen = self.revisions.get(w.frame_id, w.revision)
            try:
                event = store.undo(db, w.frame_id, w.field, self.labeler, seen_revision=seen)
            except store.StaleRevisionError:
                latest = store.label_history(db, w.frame_id)[-1]
                self._show_frame(w.frame_id)
                self._refresh(db)
                # The labeler sees the frame as it is now; a second u takes back their label on this revision.
                self.revisions[w.frame_id] = store.frame_revision(db, w.frame_id)
                self.say(f"Not undone yet: {latest.labeler} changed frame {w.frame_id} after your label "
                          f"({latest.field} = {show_value(latest.new_value)}). It is on screen now; press u again "
                          f"to take back your {w.field} label anyway.", "warn")
                return self
            action.pop()
            self.revisions[w.frame_id] = event.revision
            undone.append((w.frame_id, w.field, event.new_value))
        self.undo_stack.pop()
        if undone:
            self._show_frame(undone[-1][0])
        self._refresh(db)
        frames = sorted({f for f, _, _ in undone})
        if len(frames) == 1:
            done = ", ".join(f"{f} back to {show_value(v)}" for _, f, v in undone)
            message, tone = f"Undone on frame {frames[0]}: {done}.", "ok"
        elif frames:
            message, tone = f"Undone on {len(frames)} frames (frame ids {frames[0]}..{frames[-1]}).", "ok"
        else:
            message, tone = "Nothing undone.", "warn"
        if replaced:
            who = ", ".join(sorted({name for _, _, name in replaced}))
            message += (f" Not undone: your {replaced[0][1]} label on frame {replaced[0][0]}"
                        + (f" and {len(replaced) - 1} more" if len(replaced) > 1 else "")
                        + f" was already replaced by {who}; their change stands.")
        self.say(message, tone)
        return self

    def _show_frame(self, frame_id: int) -> None:
        for i, item in enumerate(self.items):
            if item["frame_id"] == frame_id:
                self.position = i

    def apply_range(self, db, note: str = "") -> "LabelSession":
        """Write your last label (sludge and, where set, layout) on every frame of this video from where it was
        set to the current frame, all in one transaction: every frame of the range, or none."""
        item = self._require_current()
        if self.last_label is None or self.anchor is None or self.last_label.get("sludge") is None:
            self.say("Label a frame first; r then applies that label from there to this frame.", "warn")
            return self
        video_id, start = self.anchor
        if video_id != item["video_id"]:
            self.say("A range stays within one video: the last label was set on another video.", "warn")
            return self
        lo, hi = sorted((start, item["frame_index"]))
        label = dict(self.last_label)
        if label["sludge"] is False:
            label["layout"] = NO_LAYOUT
        fields = [(f, label[f]) for f in ("sludge", "layout") if label.get(f) is not None]
        seen = dict(self.strip)
        events = []
        try:
            with store.write_transaction(db):
                for field_name, value in fields:
                    written = store.apply_range(db, video_id, lo, hi, field_name, value, self.labeler, seen,
                                                note=note or "range", model_seen=item.get("model_id"))
                    seen.update({e.frame_id: e.revision for e in written})
                    events += written
        except store.StaleRevisionError as err:
            self.pending = PendingChange("range", item["frame_id"], fields[0][0], fields[0][1], note, str(err),
                                         label=label)
            self.say(f"Not saved: {err}", "error")
            self._refresh(db)
            return self
        self.undo_stack.append([Write(e.frame_id, e.field, e.id, e.revision) for e in events])
        for e in events:
            self.revisions[e.frame_id] = e.revision
        self.pending = None
        self._refresh(db)
        frames = len({e.frame_id for e in events})
        shown = ", ".join(f"{f} = {show_value(v)}" for f, v in fields)
        self.say(f"Saved {shown} on {frames} frames (indices {lo}..{hi}).", "ok")
        return self

    def retry_pending(self, db) -> "LabelSession":
        """Apply the refused change again, on the frame's revision as it is now."""
        pending = self.pending
        if pending is None:
            self.say("No refused change to retry.", "info")
            return self
        self._refresh(db)
        if pending.kind == "range":
            self.last_label = dict(pending.label or {pending.field: pending.value})
            return self.apply_range(db, pending.note)
        self._show_frame(pending.frame_id)
        self._refresh(db)
        return self.label(db, pending.field, pending.value, pending.note, advance=False)

    def discard_pending(self) -> "LabelSession":
        """Drop the refused change; the frame keeps the value the other labeler wrote."""
        self.pending = None
        self.say("Dropped your refused change.", "info")
        return self

    def _require_current(self) -> dict:
        item = self.current
        if item is None:
            raise store.InvalidLabelError("No frame on screen: load the queue first.")
        return item

    def say(self, message: str, tone: str = "info") -> None:
        """Set the message the screen shows and how it reads ("ok", "info", "warn" or "error")."""
        self.message, self.tone = message, tone


def _latest_effective_change(db, frame_id: int, field: str):
    """The human set/range event of a field that holds its value now (not taken back), or None."""
    events = [e for e in store.label_history(db, frame_id, field) if e.source == "human"]
    reverted = {e.ref_event for e in events if e.kind in ("undo", "reject")}
    return next((e for e in reversed(events) if e.kind in ("set", "range") and e.id not in reverted), None)


def show_value(value, empty: str = "(nothing)") -> str:
    """A label value as a person reads it.

    >>> show_value(True), show_value(None), show_value("pip")
    ('yes', '(nothing)', 'pip')
    """
    if value is True:
        return "yes"
    if value is False:
        return "no"
    return empty if value is None else str(value)


def show_label(label: dict) -> str:
    """A whole label as a person reads it.

    >>> show_label({"sludge": True, "layout": "pip"}), show_label({"sludge": False, "layout": None})
    ('sludge = yes, layout = pip', 'sludge = no')
    """
    return ", ".join(f"{f} = {show_value(label[f])}" for f in ("sludge", "layout") if label.get(f) is not None)


def explain_queue_frames(lm, db, frame_ids: list[int], background: bool = False) -> list[tuple]:
    """What the Label tab shows beside queued frames: each frame's pixels and its explanation (question-aware
    map and auto-budget token mask), in one batched pass and without the faithfulness re-scores, which the
    Analyze tab's inspector computes for the frame a person opens.

    ``background``: frames explained ahead of the labeler. On a CPU they leave one core free (torch's
    threads, for the call), so the labeler's keys and the page are answered at once meanwhile.

    >>> [(frame, e)] = explain_queue_frames(lm, db, [12])  # doctest: +SKIP
    >>> e.selection.auto  # doctest: +SKIP
    True
    """
    # The model library loads only where a model runs; the session itself is plain data.
    import torch

    from annotations.analyses import load_frame_image
    from core.explain import explain_frames

    frames = [load_frame_image(db, f) for f in frame_ids]
    threads = torch.get_num_threads()
    spare = background and lm.device.type == "cpu" and threads > 1
    if spare:
        torch.set_num_threads(threads - 1)
    try:
        return list(zip(frames, explain_frames(lm, frames, faithfulness=False)))
    finally:
        if spare:
            torch.set_num_threads(threads)
