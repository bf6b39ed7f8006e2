"""The Blocks app: header with the model selector, then the Analyze, Label, Review and Export tabs.

    demo = build_demo(services)
    log_refusals(demo)                       # an expected refusal is one log line, not a traceback
    demo.launch(**launch_options(services))
"""

from __future__ import annotations

import functools
import inspect
import logging
from pathlib import Path

import gradio as gr

from annotations import StoreError
from annotations.accounts import AuthError
from core.engine import ModelLoadError
from core.video import VideoError
from ui.analyze import build_analyze_tab
from ui.api import build_api
from ui.export import build_export_tab
from ui.format import format_model_status
from ui.gpu import MODEL_QUEUE
from ui.label import build_label_tab
from ui.review import build_review_tab

STATIC = Path(__file__).resolve().parent / "static"
TABS = ("Analyze", "Label", "Review", "Export")
# What a person did wrong or cannot do (a bad file, a model that is not on offer, a refused write, a frame
# asked for before the queue is loaded), as opposed to a fault of the app.
EXPECTED_ERRORS = (gr.Error, VideoError, ModelLoadError, StoreError, AuthError)

log = logging.getLogger(__name__)


def build_demo(services) -> gr.Blocks:
    """The whole app for these services; launch it with ``demo.launch(**launch_options(services))``."""
    with gr.Blocks(title="sludgelens") as demo:
        identity = gr.State(None)
        with gr.Row(equal_height=True, elem_classes=["sl-header"]):
            with gr.Column(scale=3):
                gr.HTML("<h1>sludgelens</h1><p>See and correct what a vision-language classifier thinks of "
                        "short-form video. <b>Sludge</b> = two or more unrelated streams in one frame: stacked "
                        "(vertical), side by side (horizontal), picture-in-picture (pip) or a collage (other).</p>")
            with gr.Column(scale=2, min_width=320):
                model = gr.Dropdown(services.models.choices(), value=services.models.default_key, label="Model",
                                    elem_id="model-select", allow_custom_value=False)
                status = gr.Markdown(format_model_status(services), elem_id="model-status")
        with gr.Tabs():
            with gr.Tab("Analyze", id="analyze"):
                build_analyze_tab(services, model, status)
            with gr.Tab("Label", id="label"):
                build_label_tab(services, identity, demo, status)
            with gr.Tab("Review", id="review") as review_tab:
                review_refresh, review_in, review_out = build_review_tab(services, identity)
            with gr.Tab("Export", id="export") as export_tab:
                export_refresh, export_in, export_out = build_export_tab(services, identity)
        build_api(services)

        def choose_model(source):
            try:
                services.models.get(source)
            except ModelLoadError as err:
                gr.Warning(str(err), title="Model not available")
                current = services.models.current
                return gr.update(value=current.identity.source if current else services.models.default_key), \
                    format_model_status(services, error=str(err))
            return gr.skip(), format_model_status(services)

        model.input(choose_model, model, [model, status], api_visibility="private", **MODEL_QUEUE)
        demo.load(lambda: format_model_status(services), None, status, api_visibility="private", queue=False)
        # Checkpoints the fine-tuning scripts write while the app runs show up the next time the list opens.
        model.focus(lambda: gr.update(choices=services.models.choices()), None, model, api_visibility="private",
                    queue=False)
        review_tab.select(review_refresh, review_in, review_out, api_visibility="private")
        export_tab.select(export_refresh, export_in, export_out, api_visibility="private")
    return demo


def launch_options(services) -> dict:
    """What ``launch`` needs besides the server address: theme, CSS, the keyboard/timeline script, limits,
    and the folders whose files the app may serve (frames, examples, exports)."""
    settings = services.settings
    return {
        "theme": gr.themes.Soft(primary_hue="orange", secondary_hue="blue", neutral_hue="slate"),
        "css": (STATIC / "app.css").read_text(encoding="utf-8"),
        "head": f"<script>{(STATIC / 'app.js').read_text(encoding='utf-8')}</script>",
        "max_file_size": settings.video.max_bytes,
        "allowed_paths": [str(settings.media_dir), str(settings.examples_dir), str(settings.export_dir)],
        "show_error": True,
        # Server-side rendering off: gradio 6.31 with SSR on lets a forged Host header bypass the app's auth
        # where a Hugging Face token is saved locally (a published advisory, fixed in 6.32). A Space turns SSR
        # on by default (GRADIO_SSR_MODE), so it is switched off here explicitly.
        "ssr_mode": False,
    }


def log_refusals(demo: gr.Blocks) -> gr.Blocks:
    """Make every event of the app report an expected refusal (:data:`EXPECTED_ERRORS`) as one log line.

    Gradio prints a traceback (``traceback.print_exc()`` in ``gradio/queueing.py`` and ``gradio/routes.py``)
    for any exception an event raises, unless it is a ``gr.Error`` whose ``print_exception`` is False. So
    each event function is wrapped: an expected error is logged as one warning line and re-raised as a
    ``gr.Error`` with ``print_exception=False`` (the person sees the same message); anything else, a fault
    of the app, passes through untouched and keeps its traceback. Call it once, before ``launch``.

    >>> demo = log_refusals(gr.Blocks())
    """
    for block_fn in demo.fns.values():
        fn = block_fn.fn
        # A generator streams its outputs; the app has none, and wrapping one would hide that it is one.
        if fn is None or getattr(fn, "_logs_refusals", False) or block_fn.types_generator:
            continue
        block_fn.fn = _logging_refusals(fn, block_fn.api_name or block_fn.name)
    return demo


def _refusal(err: Exception, where: str) -> gr.Error:
    """The error to show for an expected one, logged as one line."""
    if isinstance(err, gr.Error):
        shown = err
    else:
        shown = gr.Error(str(err), title="Not possible")
    shown.print_exception = False
    message = " ".join(str(shown.message).split())
    cause = err.__cause__ if isinstance(err, gr.Error) and err.__cause__ is not None else err
    # An invisible error only stops a chain of events (an upload box that was cleared): not worth a line.
    level = logging.WARNING if getattr(shown, "visible", True) else logging.DEBUG
    log.log(level, "refused %s: %s (%s)", where, message, type(cause).__name__)
    return shown


def _logging_refusals(fn, where: str):
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def run_async(*args, **kwargs):
            try:
                return await fn(*args, **kwargs)
            except EXPECTED_ERRORS as err:
                shown = _refusal(err, where)
                if shown is err:
                    raise
                raise shown from err

        run_async._logs_refusals = True
        return run_async

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EXPECTED_ERRORS as err:
            shown = _refusal(err, where)
            if shown is err:
                raise
            raise shown from err

    run._logs_refusals = True
    return run
