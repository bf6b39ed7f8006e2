"""The Blocks app: header with the model selector, then the Analyze, Label, Review and Export tabs."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from core.engine import ModelLoadError
from ui.analyze import build_analyze_tab
from ui.api import build_api
from ui.export import build_export_tab
from ui.format import format_model_status
from ui.gpu import MODEL_QUEUE
from ui.label import build_label_tab
from ui.review import build_review_tab

STATIC = Path(__file__).resolve().parent / "static"
TABS = ("Analyze", "Label", "Review", "Export")


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
    }
