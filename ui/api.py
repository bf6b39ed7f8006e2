"""Named API endpoints for gradio_client: analyze a video, correct a label (authenticated), read metrics.

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860")
    result = client.predict(handle_file("clip.mp4"), 16, "", api_name="/analyze")
    event = client.predict(result["frames"][0]["frame_id"], "sludge", "yes", 0, "", "alice", "pw",
                           api_name="/correct_label")
"""

from __future__ import annotations

import gradio as gr

import annotations as store
from annotations.accounts import AuthError
from annotations.analyses import correct_as, record_analysis
from core.engine import ModelLoadError
from core.video import VideoError
from ui.gpu import MODEL_QUEUE, on_gpu


def build_api(services) -> None:
    """Hidden components and the events behind the named endpoints (they show on the app's "Use via API" page)."""
    settings = services.settings
    db = services.db

    with gr.Column(visible=False):
        video_in = gr.File(label="video")
        frames_in = gr.Number(value=settings.num_frames, precision=0, label="num_frames")
        model_in = gr.Textbox(value="", label="model")
        analysis_out = gr.JSON(label="analysis")
        analyze_button = gr.Button()

        correction_in = [
            gr.Number(precision=0, label="frame_id"),
            gr.Textbox(value="sludge", label="field"),
            gr.Textbox(label="value"),
            gr.Number(precision=0, label="seen_revision"),
            gr.Textbox(value="", label="note"),
            gr.Textbox(label="user"),
            gr.Textbox(label="password", type="password"),
        ]
        event_out = gr.JSON(label="event")
        correct_button = gr.Button()

        metrics_in = [gr.Textbox(value="", label="model_id"), gr.Textbox(value="current", label="against")]
        metrics_out = gr.JSON(label="metrics")
        metrics_button = gr.Button()

    # The parameter names below are the API's parameter names (gradio_client keyword arguments).

    @on_gpu
    def analyze(video, num_frames, model):
        """Analyze a video: sample `num_frames` frames, score them, store them; returns the CLI's JSON plus
        each frame's store id (`frame_id`) and `revision`, and `store` ({video_id, model_id}). `model` is a
        selector choice (folder or hub id); empty means the default."""
        if not video:
            raise gr.Error("Send a video file (handle_file(path)).")
        limit = settings.video.max_sampled_frames
        if num_frames is None or not 1 <= int(num_frames) <= limit:
            raise gr.Error(f"num_frames must be between 1 and {limit}.")
        try:
            lm = services.models.get(model or None)
            return record_analysis(lm, db, video, num_frames=int(num_frames), limits=settings.video).to_dict()
        except (VideoError, ModelLoadError) as err:
            raise gr.Error(str(err)) from err

    def correct_label(frame_id, field, value, seen_revision, note, user, password):
        """Correct one label of a stored frame as a configured user (SLUDGELENS_USERS). `field` is sludge,
        layout or description; `value` e.g. "yes" / "no", "pip", or text; `seen_revision` is the frame revision
        you saw (0 for a never-labelled frame). Refused without a valid user and password, for viewers, and
        for a stale revision; a refusal writes nothing. Returns the stored event."""
        try:
            if frame_id is None or seen_revision is None:
                raise store.InvalidLabelError("frame_id and seen_revision are required")
            event = correct_as(db, settings.auth, user, password, int(frame_id), field, value, int(seen_revision),
                               note or "")
        except AuthError as err:
            raise gr.Error(str(err), title="Not authorised") from err
        except store.StoreError as err:
            raise gr.Error(f"{type(err).__name__}: {err}", title="Not saved") from err
        return event.to_dict()

    def metrics(model_id, against):
        """The vqwen card's metrics of a model version (default: the latest) against 'current' labels, 'raw-gt'
        or a labeler, with confusion matrices, per-layout error and Cohen's kappa."""
        try:
            return store.compute_metrics(db, model_id or None, against=against or "current",
                                         threshold=settings.engine.threshold)
        except store.StoreError as err:
            raise gr.Error(str(err)) from err

    analyze_button.click(analyze, [video_in, frames_in, model_in], analysis_out, api_name="analyze",
                         **MODEL_QUEUE)
    correct_button.click(correct_label, correction_in, event_out, api_name="correct_label", concurrency_limit=1,
                         concurrency_id="label")
    metrics_button.click(metrics, metrics_in, metrics_out, api_name="metrics")
