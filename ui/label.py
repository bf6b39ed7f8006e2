"""The Label tab: sign in, a queue by strategy, the frame with the model's answer, heatmap and mask, and keys.

The frame fills the screen's height; beside it the video's name and a strip of its neighbouring frames with
their labels, the heatmap and token mask with their colour key, the last save's message and the frame's
facts. A key acts only on the frame on screen: the page's script (ui/static/app.js) ignores keys while the
next frame loads, and each key names the frame it was pressed for (``LabelSession.press``). Heatmaps of the
next frames are computed while the labeler looks at this one, so they usually arrive with the frame.
"""

from __future__ import annotations

import base64
import io
import itertools
import threading
from collections import OrderedDict

import gradio as gr
import numpy as np
from PIL import Image

import annotations as store
from annotations.accounts import (
    AuthError,
    authenticate,
    make_dev_identity,
    make_oauth_identity,
    register_identity,
    require_writer,
)
from annotations.labeling import LabelSession, explain_queue_frames
from core.engine import ModelLoadError
from core.render import render_heatmap, render_mask
from core.vocabulary import LAYOUT_MEANINGS, LAYOUTS
from ui.format import (
    format_conflict,
    format_label_context,
    format_label_explain,
    format_label_facts,
    format_label_progress,
    format_label_stage,
    format_message,
    format_model_status,
)
from ui.gpu import MODEL_QUEUE, on_gpu
from ui.review import ALL_COLLECTIONS, collection_choices

STRATEGIES = {
    "uncertain": "uncertain — P(sludge) nearest the threshold",
    "disagreement": "disagreement — labelers or model disagree",
    "unlabeled": "unlabeled — never labelled, oldest first",
    "random": "random — unbiased spot checks",
    "label-issue": "label issue — the label the model and the rest of its video find least likely (cleanlab)",
    "label-issue-model": "label issue, model only — for raw labels given per video (cleanlab)",
}

KEY_HELP = (
    '<div class="sl-keyhelp" data-testid="key-legend"><kbd>y</kbd> sludge (then a layout) · <kbd>n</kbd> not sludge · '
    + " · ".join(f"<kbd>{i}</kbd> <b>{name}</b> = {LAYOUT_MEANINGS[name]}" for i, name in enumerate(LAYOUTS, 1))
    + " · <kbd>Enter</kbd> accept the prediction · <kbd>←</kbd> <kbd>→</kbd> move · <kbd>u</kbd> undo your "
    "last write (again: the one before) · <kbd>r</kbd> your last label (sludge and layout) on every frame from "
    "where you set it to this one · <kbd>Esc</kbd> leaves the note box. n, a layout and Enter move on by "
    "themselves; keys wait while the next frame loads.</div>"
)
# The keys' buttons: (elem id, text, key name as the browser reports it).
KEY_BUTTONS = [
    ("key-yes", "Sludge · y", "y"), ("key-no", "Not sludge · n", "n"),
    *[(f"key-layout-{i}", f"{name} · {i}", str(i)) for i, name in enumerate(LAYOUTS, 1)],
    ("key-accept", "Accept · Enter", "Enter"), ("key-prev", "◀ · ←", "ArrowLeft"), ("key-next", "▶ · →", "ArrowRight"),
    ("key-undo", "Undo · u", "u"), ("key-range", "Range · r", "r"),
]
WRITING_KEYS = {"y", "n", "1", "2", "3", "4", "Enter", "u", "r"}
# Frames whose heatmaps are computed ahead, while the labeler looks at the current one.
PREFETCH = 2
# Pictures are drawn on a copy of the frame at most this many pixels on its long side (maps are 16x16 or 24x24).
PICTURE_SIDE = 640
# The frame itself is sent at most this large: sharp at the stage's size on a laptop screen.
FRAME_SIDE = 960


class PictureCache:
    """The Label tab's drawn heatmaps and masks by (model version, frame id), newest kept (thread-safe LRU).

    >>> cache = PictureCache(maxsize=1)
    >>> cache.put(("m", 1), {"heatmap": "a"}); cache.put(("m", 2), {"heatmap": "b"})
    >>> cache.get(("m", 1)), cache.get(("m", 2))
    (None, {'heatmap': 'b'})
    """

    def __init__(self, maxsize: int = 128):
        self.maxsize = maxsize
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)


def encode_picture(image: Image.Image, quality: int = 82) -> str:
    """A picture as a data URL (WebP), to place in the page's HTML without a file.

    >>> encode_picture(Image.new("RGB", (4, 4))).startswith("data:image/webp;base64,")
    True
    """
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", quality=quality, method=2)
    return "data:image/webp;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def shrink(frame: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """A copy of the frame at most `side` pixels on its long side, and the scale applied (1.0: the frame itself).

    >>> small, scale = shrink(np.zeros((720, 1280, 3), np.uint8), 640)
    >>> small.shape, scale
    ((360, 640, 3), 0.5)
    """
    height, width = frame.shape[:2]
    scale = min(1.0, side / max(height, width))
    if scale == 1.0:
        return frame, 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR)), scale


def draw_label_pictures(frame: np.ndarray, explanation) -> dict:
    """What the Label tab shows of one frame, as data URLs: the frame, its question-aware heatmap and its token
    mask (the maps drawn on a copy at most PICTURE_SIDE pixels on its long side).

    >>> from types import SimpleNamespace
    >>> e = SimpleNamespace(heatmaps={"question": np.eye(4)}, mask=np.eye(4, dtype=bool), grid=(4, 4),
    ...                     region=(0, 0, 1280, 720))
    >>> sorted(draw_label_pictures(np.zeros((720, 1280, 3), np.uint8), e))
    ['frame', 'heatmap', 'mask']
    """
    small, scale = shrink(frame, PICTURE_SIDE)
    region = tuple(int(round(v * scale)) for v in explanation.region)
    return {"frame": encode_picture(Image.fromarray(shrink(frame, FRAME_SIDE)[0]), quality=88),
            "heatmap": encode_picture(render_heatmap(small, explanation.heatmaps["question"], region=region)),
            "mask": encode_picture(render_mask(small, explanation.mask, explanation.grid, region=region))}


def format_identity(identity) -> str:
    """Who is signed in, and what that allows."""
    if identity is None:
        return "Not signed in: you can browse the queue, but writing labels needs a labeler or reviewer."
    if not identity.can_write:
        return f"Signed in as **{identity.describe()}**: viewers can look, not write labels."
    return f"Signed in as **{identity.describe()}**."


def build_identity_panel(services, identity: gr.State, demo: gr.Blocks) -> gr.Markdown:
    """The sign-in row: Hugging Face OAuth on a Space, the password form locally, or the dev-mode banner."""
    auth = services.settings.auth
    with gr.Row(equal_height=True):
        status = gr.Markdown(format_identity(None), elem_id="identity")
        sign_out = gr.Button("Sign out", size="sm", visible=False, elem_id="logout-button", scale=0, min_width=110)
    dev = make_dev_identity(auth)
    if auth.oauth:
        gr.LoginButton(size="sm")

        def from_oauth(profile: gr.OAuthProfile | None):
            if profile is None:
                return None, format_identity(None)
            me = register_identity(services.db, make_oauth_identity(auth, profile.username))
            return me, format_identity(me)

        demo.load(from_oauth, None, [identity, status], api_visibility="private")
    elif dev is not None:
        def as_dev():
            return dev, format_identity(dev)

        demo.load(as_dev, None, [identity, status], api_visibility="private")
    elif auth.users:
        with gr.Row(equal_height=True) as form:
            user = gr.Textbox(label="User", scale=2, elem_id="login-user")
            password = gr.Textbox(label="Password", type="password", scale=2, elem_id="login-password")
            sign_in = gr.Button("Sign in", variant="primary", scale=1, elem_id="login-button")

        def login(name, secret):
            try:
                me = authenticate(auth, name, secret)
            except AuthError as err:
                raise gr.Error(str(err), title="Not signed in") from err
            return me, format_identity(me), "", gr.update(visible=False), gr.update(visible=True)

        def logout():
            return None, format_identity(None), gr.update(visible=True), gr.update(visible=False)

        login_outputs = [identity, status, password, form, sign_out]
        sign_in.click(login, [user, password], login_outputs, api_visibility="private", queue=False)
        password.submit(login, [user, password], login_outputs, api_visibility="private", queue=False)
        sign_out.click(logout, None, [identity, status, form, sign_out], api_visibility="private", queue=False)
    else:
        gr.Markdown("No accounts are configured, so nobody can write labels here. Set `SLUDGELENS_USERS` "
                    "(`name:password:role,...`) or, on a laptop, `SLUDGELENS_DEV_USER=name:labeler`.")
    return status


def build_label_tab(services, identity: gr.State, demo: gr.Blocks, status: gr.Markdown) -> None:
    """The Label tab's components and events, inside the caller's gr.Tab."""
    settings = services.settings
    db = services.db
    threshold = settings.engine.threshold
    session = gr.State(None)
    pictures = PictureCache()
    # One lock per labeler: their keys run one at a time, in order, while other labelers' keys run beside them.
    locks: dict[str, threading.Lock] = {}
    locks_guard = threading.Lock()

    def lock_for(name: str) -> threading.Lock:
        with locks_guard:
            return locks.setdefault(name, threading.Lock())

    # Every answer of the tab carries a new tick, so the page knows the answer to its key has arrived.
    ticks = itertools.count(1)

    build_identity_panel(services, identity, demo)
    with gr.Row(equal_height=True, elem_id="label-queue-row"):
        strategy = gr.Dropdown([(v, k) for k, v in STRATEGIES.items()], value="uncertain", label="Queue",
                               scale=3, elem_id="strategy")
        collection = gr.Dropdown(collection_choices(db), value=ALL_COLLECTIONS, label="Collection", scale=2,
                                 elem_id="label-collection")
        size = gr.Slider(5, 100, value=20, step=5, label="Frames fetched at a time", scale=2,
                         info="the next ones load by themselves as you go", elem_id="batch-size")
        load = gr.Button("Load queue", variant="primary", scale=1, elem_id="load-queue")
    # The frame on screen, as the server last showed it: every key names it (see LabelSession.press).
    on_screen = gr.Textbox(visible="hidden", elem_id="label-on-screen")
    with gr.Column(elem_id="label-workspace"):
        with gr.Row(equal_height=False, elem_id="label-main"):
            with gr.Column(scale=5, min_width=280, elem_id="label-stage-column"):
                stage = gr.HTML(format_label_stage(None, 0), elem_id="label-stage")
            with gr.Column(scale=6, min_width=300, elem_id="label-side"):
                context = gr.HTML(format_label_context("", [], None), elem_id="label-context")
                explain = gr.HTML(format_label_explain(None, None, "no frame yet"), elem_id="label-explain")
            with gr.Column(scale=4, min_width=260, elem_id="label-info"):
                progress = gr.HTML("", elem_id="label-progress")
                message = gr.HTML(elem_id="label-message")
                conflict = gr.HTML(elem_id="label-conflict")
                with gr.Row(visible=False) as conflict_row:
                    retry = gr.Button("Retry my change", variant="primary", elem_id="retry-change", size="sm")
                    drop = gr.Button("Drop it", elem_id="drop-change", size="sm")
                facts = gr.HTML(format_label_facts(None, threshold), elem_id="label-facts")
                note = gr.Textbox(label="Note (saved with your next label; Esc leaves the box)", lines=2,
                                  elem_id="label-note")
        with gr.Row(elem_classes=["sl-keybar"], elem_id="label-keys"):
            buttons = {key: gr.Button(text, elem_id=elem_id, size="sm",
                                      variant="primary" if key == "y" else "secondary")
                       for elem_id, text, key in KEY_BUTTONS}
        gr.HTML(KEY_HELP, elem_id="label-legend")

    # ------------------------------------------------------------ callbacks

    def model_key() -> str | None:
        current = services.models.current
        return current.identity.id if current is not None and current.identity is not None else None

    def render(s: LabelSession | None, note_update=None):
        item = s.current if s else None
        key = model_key()
        cached = pictures.get((key, item["frame_id"])) if item is not None and key else None
        if s is None:
            text, tone, pending = "", "info", None
        else:
            text, tone, pending = s.message, s.tone, s.pending
        # A refused change is explained by the conflict box alone.
        shown_message = "" if pending is not None else format_message(text, tone)
        # Frames whose pictures are not ready are fetched ahead by the browser, so they show without waiting.
        upcoming = [u for u in (s.upcoming(PREFETCH) if s else []) if pictures.get((key, u["frame_id"])) is None]
        return (
            s,
            "" if item is None else str(item["frame_id"]),
            format_label_stage(item, next(ticks), upcoming, cached["frame"] if cached else None),
            format_label_context(s.video_name if s else "", s.neighbours() if s else [], item),
            format_label_explain(item["frame_id"] if item else None, cached,
                                 "" if item else "no frame on screen"),
            format_label_progress(s.progress(), store.count_unlabeled(db, s.collection), s.strategy) if s else "",
            shown_message,
            format_conflict(pending),
            gr.update(visible=pending is not None),
            format_label_facts(item, threshold),
            gr.skip() if note_update is None else note_update,
        )

    outputs = [session, on_screen, stage, context, explain, progress, message, conflict, conflict_row, facts, note]

    def load_queue(me, chosen, n, s: LabelSession | None, group=ALL_COLLECTIONS):
        if me is None:
            raise gr.Error("Sign in first: the queue hands frames to a named labeler.", title="Not signed in")
        register_identity(db, me)
        if s is None or s.labeler != me.name:
            # One session per labeler and browser tab: reloading the queue keeps the undo stack.
            s = LabelSession(me.name, threshold=threshold, lease_s=settings.queue_lease_s)
        try:
            s.collection = group or None
            s.load(db, chosen, n=int(n), model_id=services.default_model_id)
        except store.StoreError as err:
            raise gr.Error(str(err), title="No queue") from err
        return render(s)

    def press(key: str):
        def run(s: LabelSession | None, me, text, frame_on_screen):
            if s is None:
                out = list(render(None))
                out[6] = format_message("Load the queue first: sign in, pick a strategy and press Load queue.",
                                        "warn")
                return tuple(out)
            on = int(frame_on_screen) if str(frame_on_screen or "").strip().isdigit() else None
            if key in WRITING_KEYS:
                try:
                    require_writer(me)
                except AuthError as err:
                    s.say(f"Not saved: {err}", "error")
                    return render(s)
            with lock_for(s.labeler):
                try:
                    s.press(db, key, on_screen=on, note=text or "")
                except (store.PermissionDeniedError, store.InvalidLabelError, store.NotFoundError) as err:
                    s.say(f"Not saved: {err}", "error")
                wrote = key in WRITING_KEYS - {"u"} and s.tone == "ok"
                return render(s, "" if wrote else None)

        return run

    def resolve(action: str):
        def run(s: LabelSession | None, me):
            if s is None:
                return render(None)
            try:
                require_writer(me)
                s.retry_pending(db) if action == "retry" else s.discard_pending()
            except AuthError as err:
                s.say(f"Not saved: {err}", "error")
            except (store.PermissionDeniedError, store.InvalidLabelError, store.NotFoundError) as err:
                s.say(f"Not saved: {err}", "error")
            return render(s)

        return run

    def compute(lm, frame_ids: list[int], background: bool = False) -> None:
        for frame_id, (frame, e) in zip(frame_ids, explain_queue_frames(lm, db, frame_ids, background)):
            pictures.put((lm.identity.id, frame_id), draw_label_pictures(frame, e))

    @on_gpu
    def heatmaps(s: LabelSession | None):
        if s is None or s.current is None:
            yield format_label_explain(None, None, "no frame on screen"), gr.skip()
            return
        try:
            # The model on screen in the header (the one last chosen), else the configured default.
            lm = services.models.current or services.models.get()
            key = lm.identity.id
            while True:
                # Keys run beside this event: show the frame that is current when the pictures are ready.
                item = s.current
                if item is None:
                    yield format_label_explain(None, None, "no frame on screen"), format_model_status(services)
                    return
                if pictures.get((key, item["frame_id"])) is None:
                    compute(lm, [item["frame_id"]])
                if s.current is item:
                    break
            yield format_label_explain(item["frame_id"], pictures.get((key, item["frame_id"]))), \
                format_model_status(services)
            # While the labeler looks at this frame: the next frames' pictures, so they arrive with the frame.
            todo = [u["frame_id"] for u in s.upcoming(PREFETCH) if pictures.get((key, u["frame_id"])) is None]
            if todo:
                compute(lm, todo, background=True)
        except ModelLoadError as err:
            yield (format_label_explain(s.current["frame_id"] if s.current else None, None, f"No heatmap: {err}"),
                   format_model_status(services, error=str(err)))
        except store.StoreError as err:
            yield format_label_explain(None, None, f"No heatmap: {err}"), gr.skip()

    # ------------------------------------------------------------ events
    # Key events run one at a time, in order; each names the frame it was pressed for.

    def then_heatmaps(event):
        event.then(heatmaps, [session], [explain, status], api_visibility="private",
                   **MODEL_QUEUE, trigger_mode="always_last", show_progress="hidden")

    then_heatmaps(load.click(load_queue, [identity, strategy, size, session, collection], outputs,
                             api_visibility="private"))
    collection.focus(lambda: gr.update(choices=collection_choices(db)), None, collection, api_visibility="private",
                     queue=False)
    for key, button in buttons.items():
        # Off the queue: a key's answer is a few milliseconds of store work, and the queue's round trips would
        # double the time to the next frame. One labeler's keys run one at a time (their lock), in order.
        then_heatmaps(button.click(press(key), [session, identity, note, on_screen], outputs,
                                   api_visibility="private", queue=False, trigger_mode="multiple",
                                   show_progress="hidden"))
    for button, action in ((retry, "retry"), (drop, "drop")):
        then_heatmaps(button.click(resolve(action), [session, identity], outputs, api_visibility="private",
                                   concurrency_limit=1, concurrency_id="label", show_progress="hidden"))
