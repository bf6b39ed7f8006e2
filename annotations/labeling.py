"""One labeler's pass through the queue: what is on screen, what the keys do, and what a refusal leaves behind.

A :class:`LabelSession` is plain data (it lives in the UI's per-browser state) and every method that
writes takes the store as its first argument. The keys of the Label tab map one to one onto methods:

    y / n      label(db, "sludge", True / False)        n moves on; y waits for a layout
    1 .. 4     label(db, "layout", "vertical" ...)      also sets sludge=yes when it is not yet; moves on
    Enter      accept_prediction(db)                    the model's sludge (and layout) as the label; moves on
    u          undo_last(db)                            takes back this session's latest change
    r          apply_range(db)                          the last label, from where it was set to this frame
    <- / ->    move(-1) / move(+1)

Every write names the frame revision the labeler saw. When someone else got there first the store refuses
(``StaleRevisionError``), nothing is written, and the change waits in ``pending`` until the labeler
retries it on the fresh revision (``retry_pending``) or drops it (``discard_pending``).

    session = LabelSession("alice")
    session.load(db, "uncertain", n=20)
    session.label(db, "sludge", True, note="face cam bottom right")
    session.label(db, "layout", "pip")
"""

from __future__ import annotations

from dataclasses import dataclass, field

import annotations as store
from core.vocabulary import LAYOUTS, NO_LAYOUT


@dataclass
class PendingChange:
    """A change the store refused because the frame moved on; kept so the labeler loses nothing."""

    kind: str  # "label" or "range"
    frame_id: int
    field: str
    value: object
    note: str
    reason: str

    def describe(self) -> str:
        """What the change was, e.g. "your change sludge = yes on frame 12"."""
        what = "range" if self.kind == "range" else "change"
        return f"your {what} {self.field} = {show_value(self.value)} on frame {self.frame_id}"


@dataclass
class LabelSession:
    """A labeler's queue, position, last label (for ranges), undo stack and any refused change."""

    labeler: str
    strategy: str = "uncertain"
    threshold: float = 0.5
    lease_s: float = 180.0
    items: list[dict] = field(default_factory=list)
    position: int = 0
    # Frame ids this session wrote a label for: the progress counter.
    done: list[int] = field(default_factory=list)
    # The last (field, value) written and where: a range runs from there to the current frame.
    last_label: tuple[str, object] | None = None
    anchor: tuple[str, int] | None = None  # (video id, frame index)
    # One entry per key press, newest last: the (frame id, field, revision it produced) of each event it
    # wrote. "u" takes back the newest entry, naming those revisions, so it never undoes someone else's work.
    undo_stack: list[list[tuple[int, str, int]]] = field(default_factory=list)
    pending: PendingChange | None = None
    message: str = ""
    # Revisions of the current frame's video's frames as shown; a range names these as what it saw.
    strip: dict[int, int] = field(default_factory=dict)

    # ------------------------------------------------------------ reading

    @property
    def current(self) -> dict | None:
        """The frame on screen (a dict as ``annotations.next_frames`` returns it), or None."""
        return self.items[self.position] if 0 <= self.position < len(self.items) else None

    def progress(self) -> dict:
        """{"done", "queued", "position"} for the counter.

        >>> LabelSession("ana").progress()
        {'done': 0, 'queued': 0, 'position': 0}
        """
        return {"done": len(set(self.done)), "queued": len(self.items),
                "position": self.position + 1 if self.items else 0}

    # ------------------------------------------------------------ moving

    def load(self, db, strategy: str | None = None, n: int = 20, model_id: str | None = None) -> "LabelSession":
        """Fill the queue with the next `n` frames by `strategy`, leased to this labeler.

        >>> LabelSession("ana").load(db, "unlabeled", n=5).current["frame_id"]  # doctest: +SKIP
        12
        """
        self.strategy = strategy or self.strategy
        self.items = store.next_frames(db, self.labeler, self.strategy, n=n, model_id=model_id,
                                       lease_s=self.lease_s, threshold=self.threshold)
        self.position = 0
        self.pending = None
        self.message = (f"{len(self.items)} frames queued by '{self.strategy}'." if self.items else
                        f"Nothing to label by '{self.strategy}': analyze a video first, or pick another strategy.")
        self._refresh(db)
        return self

    def move(self, db, delta: int) -> "LabelSession":
        """Go `delta` frames along the queue (clamped to its ends) and re-read that frame's labels."""
        if self.items:
            self.position = max(0, min(len(self.items) - 1, self.position + delta))
        self.message = ""
        self._refresh(db)
        return self

    def _refresh(self, db) -> None:
        """Re-read the current frame's revision and labels, and its video's revisions for ranges."""
        item = self.current
        if item is None:
            self.strip = {}
            return
        fresh = store.get_frame(db, item["frame_id"], model_id=item.get("model_id"))
        item.update(revision=fresh["revision"], sludge=fresh["sludge"], layout=fresh["layout"],
                    description=fresh["description"])
        self.strip = {f["frame_id"]: f["revision"] for f in store.current_labels(db, video_id=item["video_id"])}

    def _advance(self) -> None:
        if self.position < len(self.items) - 1:
            self.position += 1

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
            self.last_label = (field, value)
            self.anchor = (item["video_id"], item["frame_index"])
            if advance:
                self._advance()
            self._refresh(db)
        return self

    def accept_prediction(self, db, note: str = "") -> "LabelSession":
        """Take the model's answer as the label (sludge, and its layout when sludge) and move on."""
        item = self._require_current()
        if item.get("p_sludge") is None:
            self.message = "This frame has no prediction to accept; label it with y / n."
            return self
        sludge = item["p_sludge"] >= self.threshold
        changes = [("sludge", sludge)]
        if sludge and item.get("model_layout") in LAYOUTS:
            changes.append(("layout", item["model_layout"]))
        if self._write(db, item, changes, note or "accepted prediction"):
            self.last_label = ("sludge", sludge)
            self.anchor = (item["video_id"], item["frame_index"])
            self._advance()
            self._refresh(db)
        return self

    def _write(self, db, item: dict, changes: list[tuple[str, object]], note: str) -> bool:
        revision = item["revision"]
        written: list[tuple[int, str, int]] = []
        try:
            for field, value in changes:
                event = store.correct_label(db, item["frame_id"], field, value, self.labeler, revision,
                                            note=note, model_seen=item.get("model_id"))
                revision = event.revision
                written.append((item["frame_id"], field, revision))
        except store.StaleRevisionError as err:
            field, value = changes[len(written)]
            self.pending = PendingChange("label", item["frame_id"], field, value, note, str(err))
            self.message = f"Not saved: {err}"
            # Show what the frame holds now, so the labeler sees the other change before retrying over it.
            self._refresh(db)
            return False
        finally:
            if written:
                self.undo_stack.append(written)
        item["revision"] = revision
        for field, value in changes:
            item[field] = value
        self.done.append(item["frame_id"])
        self.pending = None
        shown = ", ".join(f"{f} = {show_value(v)}" for f, v in changes)
        self.message = f"Saved frame {item['frame_id']}: {shown} (revision {revision})."
        return True

    def undo_last(self, db) -> "LabelSession":
        """Take back this session's newest key press (each of its events, as new events) and show that frame.

        Each undo names the revision our own event produced, so if someone changed the frame since, the undo
        is refused rather than taking back their work.
        """
        if not self.undo_stack:
            self.message = "Nothing to undo in this session."
            return self
        action = self.undo_stack.pop()
        seen = {frame_id: revision for frame_id, _, revision in action}
        undone: list[tuple[int, str, object]] = []
        error = None
        for frame_id, field, _ in reversed(action):
            try:
                event = store.undo(db, frame_id, field, self.labeler, seen_revision=seen[frame_id])
            except (store.StaleRevisionError, store.InvalidLabelError) as err:
                error = err
                continue
            # An undo is itself an event: the frame's next undo names one revision more.
            seen[frame_id] = event.revision
            undone.append((frame_id, field, event.new_value))
        if undone:
            self._show_frame(undone[-1][0])
        self._refresh(db)
        frames = sorted({f for f, _, _ in undone})
        if len(frames) == 1:
            done = ", ".join(f"{field} back to {show_value(value)}" for _, field, value in reversed(undone))
            self.message = f"Undone on frame {frames[0]}: {done}."
        elif frames:
            self.message = f"Undone on {len(frames)} frames."
        else:
            self.message = "Nothing undone."
        if error is not None:
            self.message += f" Not undone: {error}"
        return self

    def _show_frame(self, frame_id: int) -> None:
        for i, item in enumerate(self.items):
            if item["frame_id"] == frame_id:
                self.position = i

    def apply_range(self, db, note: str = "") -> "LabelSession":
        """Write the last label on every frame of this video from where it was set to the current frame."""
        item = self._require_current()
        if self.last_label is None or self.anchor is None:
            self.message = "Label a frame first; r then applies that label from there to this frame."
            return self
        video_id, start = self.anchor
        if video_id != item["video_id"]:
            self.message = "A range stays within one video: the last label was set on another video."
            return self
        lo, hi = sorted((start, item["frame_index"]))
        field, value = self.last_label
        try:
            events = store.apply_range(db, video_id, lo, hi, field, value, self.labeler, dict(self.strip),
                                       note=note or "range", model_seen=item.get("model_id"))
        except store.StaleRevisionError as err:
            self.pending = PendingChange("range", item["frame_id"], field, value, note, str(err))
            self.message = f"Not saved: {err}"
            self._refresh(db)
            return self
        self.undo_stack.append([(e.frame_id, e.field, e.revision) for e in events])
        self.done += [e.frame_id for e in events]
        self.pending = None
        self._refresh(db)
        self.message = f"Saved {field} = {show_value(value)} on {len(events)} frames (indices {lo}..{hi})."
        return self

    def retry_pending(self, db) -> "LabelSession":
        """Apply the refused change again, on the frame's revision as it is now."""
        pending = self.pending
        if pending is None:
            self.message = "No refused change to retry."
            return self
        self._refresh(db)
        if pending.kind == "range":
            self.last_label = (pending.field, pending.value)
            return self.apply_range(db, pending.note)
        self._show_frame(pending.frame_id)
        self._refresh(db)
        return self.label(db, pending.field, pending.value, pending.note, advance=False)

    def discard_pending(self) -> "LabelSession":
        """Drop the refused change; the frame keeps the value the other labeler wrote."""
        self.pending = None
        self.message = "Dropped your refused change."
        return self

    def _require_current(self) -> dict:
        item = self.current
        if item is None:
            raise store.InvalidLabelError("No frame on screen: load the queue first.")
        return item


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
