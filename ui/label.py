"""The Label tab: sign in, a queue by strategy, the frame with the model's answer, heatmap and mask, and keys."""

from __future__ import annotations

import gradio as gr
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
from annotations.analyses import explain_stored_frame
from annotations.labeling import LabelSession
from core.engine import ModelLoadError
from core.explain import render_explanation
from core.vocabulary import LAYOUT_MEANINGS, LAYOUTS
from ui.format import (
    format_conflict,
    format_label_facts,
    format_message,
    format_model_status,
    format_progress,
)
from ui.gpu import MODEL_QUEUE, on_gpu

STRATEGIES = {
    "uncertain": "uncertain — P(sludge) nearest the threshold",
    "disagreement": "disagreement — labelers or model disagree",
    "unlabeled": "unlabeled — never labelled, oldest first",
    "random": "random — unbiased spot checks",
}

KEY_HELP = (
    '<div class="sl-keyhelp"><kbd>y</kbd> sludge (then a layout) · <kbd>n</kbd> not sludge · '
    + " ".join(f"<kbd>{i}</kbd> {name} ({LAYOUT_MEANINGS[name]})" for i, name in enumerate(LAYOUTS, 1))
    + " · "
    "<kbd>Enter</kbd> accept the prediction · <kbd>←</kbd> <kbd>→</kbd> move · <kbd>u</kbd> undo · "
    "<kbd>r</kbd> apply the last label from where you set it to this frame. n, a layout and Enter move on "
    "by themselves. Keys work while no text box has the cursor.</div>"
)


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
    shown = gr.State(None)  # frame id whose heatmap is on screen

    build_identity_panel(services, identity, demo)
    with gr.Row(equal_height=True):
        strategy = gr.Dropdown([(v, k) for k, v in STRATEGIES.items()], value="uncertain", label="Queue",
                               scale=3, elem_id="strategy")
        size = gr.Slider(5, 100, value=20, step=5, label="Frames per batch", scale=2)
        load = gr.Button("Load queue", variant="primary", scale=1, elem_id="load-queue")
    progress = gr.Markdown("", elem_id="label-progress")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            frame = gr.Image(label="Frame", type="pil", interactive=False, height=380, elem_id="label-frame")
        with gr.Column(scale=2):
            heat = gr.Image(label="Heatmap (question-aware)", type="pil", interactive=False, height=180,
                            elem_id="label-heatmap")
            mask = gr.Image(label="Token mask (auto budget)", type="pil", interactive=False, height=180,
                            elem_id="label-mask")
        with gr.Column(scale=2, min_width=260):
            facts = gr.HTML(format_label_facts(None, threshold))
            note = gr.Textbox(label="Note (saved with your next label)", lines=2, elem_id="label-note")
    with gr.Row(elem_classes=["sl-keybar"]):
        yes = gr.Button("Sludge · y", variant="primary", elem_id="key-yes", size="sm")
        no = gr.Button("Not sludge · n", elem_id="key-no", size="sm")
        layout_buttons = [gr.Button(f"{name} · {i + 1}", elem_id=f"key-layout-{i + 1}", size="sm")
                          for i, name in enumerate(LAYOUTS)]
        accept = gr.Button("Accept prediction · Enter", elem_id="key-accept", size="sm")
    with gr.Row(elem_classes=["sl-keybar"]):
        prev = gr.Button("◀ Previous · ←", elem_id="key-prev", size="sm")
        nxt = gr.Button("Next · → ▶", elem_id="key-next", size="sm")
        undo = gr.Button("Undo · u", elem_id="key-undo", size="sm")
        apply_range = gr.Button("Range · r", elem_id="key-range", size="sm")
    gr.HTML(KEY_HELP)
    message = gr.HTML(elem_id="label-message")
    conflict = gr.HTML(elem_id="label-conflict")
    with gr.Row(visible=False) as conflict_row:
        retry = gr.Button("Retry my change", variant="primary", elem_id="retry-change")
        drop = gr.Button("Drop it", elem_id="drop-change")

    # ------------------------------------------------------------ callbacks

    def render(s: LabelSession):
        item = s.current
        image = None
        if item:
            with Image.open(item["image"]) as stored:
                image = stored.convert("RGB")
        kind = "error" if s.message.startswith("Not ") else (
            "ok" if s.message.startswith(("Saved", "Undone")) else "info")
        # A refused change is explained by the conflict box alone.
        message = "" if s.pending is not None else format_message(s.message, kind)
        return (
            s, image, format_label_facts(item, threshold), message, format_conflict(s.pending),
            gr.update(visible=s.pending is not None), format_progress(s.progress(), store.count_unlabeled(db)),
        )

    outputs = [session, frame, facts, message, conflict, conflict_row, progress]

    def load_queue(me, chosen, n):
        if me is None:
            raise gr.Error("Sign in first: the queue hands frames to a named labeler.", title="Not signed in")
        register_identity(db, me)
        s = LabelSession(me.name, threshold=threshold, lease_s=settings.queue_lease_s)
        return render(s.load(db, chosen, n=int(n)))

    def act(action: str, value=None):
        def run(s: LabelSession | None, me, text):
            try:
                if action in ("prev", "next"):
                    if s is None:
                        return gr.skip()
                    return render(s.move(db, -1 if action == "prev" else 1))
                require_writer(me)
                if s is None or s.current is None:
                    raise gr.Error("Load the queue first.", title="No frame")
                if action == "label":
                    field, val = value
                    s.label(db, field, val, note=text or "")
                elif action == "accept":
                    s.accept_prediction(db, note=text or "")
                elif action == "undo":
                    s.undo_last(db)
                elif action == "range":
                    s.apply_range(db, note=text or "")
                elif action == "retry":
                    s.retry_pending(db)
                elif action == "drop":
                    s.discard_pending()
            except AuthError as err:
                raise gr.Error(str(err), title="Cannot write labels") from err
            except (store.PermissionDeniedError, store.InvalidLabelError, store.NotFoundError) as err:
                raise gr.Error(str(err), title="Not saved") from err
            return render(s)

        return run

    @on_gpu
    def heatmap(s: LabelSession | None, last):
        item = s.current if s else None
        if item is None:
            return None, None, None, gr.skip()
        if item["frame_id"] == last:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        try:
            # The model on screen in the header (the one last chosen), else the configured default.
            lm = services.models.current or services.models.get()
            image, e = explain_stored_frame(lm, db, item["frame_id"])
        except ModelLoadError as err:
            gr.Warning(str(err))
            return None, None, item["frame_id"], format_model_status(services, error=str(err))
        pictures = render_explanation(image, e)
        return pictures["heatmap:question"], pictures["mask"], item["frame_id"], format_model_status(services)

    # ------------------------------------------------------------ events
    # Label events run one at a time (trigger_mode multiple: every key press counts, in order).

    def wire(button, fn, writes: bool):
        event = button.click(fn, [session, identity, note], outputs, api_visibility="private",
                             concurrency_limit=1, concurrency_id="label", trigger_mode="multiple",
                             show_progress="hidden")
        if writes:
            event = event.success(lambda: "", None, note, api_visibility="private", queue=False)
        event.then(heatmap, [session, shown], [heat, mask, shown, status], api_visibility="private",
                   **MODEL_QUEUE, trigger_mode="always_last", show_progress="minimal")

    load.click(load_queue, [identity, strategy, size], outputs, api_visibility="private").then(
        heatmap, [session, shown], [heat, mask, shown, status], api_visibility="private", **MODEL_QUEUE)
    wire(yes, act("label", ("sludge", True)), True)
    wire(no, act("label", ("sludge", False)), True)
    for button, name in zip(layout_buttons, LAYOUTS):
        wire(button, act("label", ("layout", name)), True)
    wire(accept, act("accept"), True)
    wire(prev, act("prev"), False)
    wire(nxt, act("next"), False)
    wire(undo, act("undo"), False)
    wire(apply_range, act("range"), True)
    wire(retry, act("retry"), False)
    wire(drop, act("drop"), False)
