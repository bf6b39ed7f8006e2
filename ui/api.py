"""Named API endpoints for gradio_client: analyze a video, correct a label (authenticated), read metrics.

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860")
    result = client.predict(handle_file("clip.mp4"), 16, "", api_name="/analyze")
    result = client.predict(handle_file("clip.mp4"), 16, "some/other-model", "rita", "pw", api_name="/analyze")
    event = client.predict(result["frames"][0]["frame_id"], "sludge", "yes", 0, "", "alice", "pw",
                           api_name="/correct_label")
"""

from __future__ import annotations

import gradio as gr

import annotations as store
from annotations.accounts import AuthError
from annotations.analyses import analyze_upload, correct_as
from annotations.writes import check_id
from core.config import check_frame_count
from core.engine import ModelLoadError
from core.video import VideoError
from ui.gpu import MODEL_QUEUE, on_gpu


def build_api(services) -> None:
    """Hidden components and the events behind the named endpoints (they show on the app's "Use via API" page)."""
    settings = services.settings
    db = services.db

    with gr.Column(visible=False):
        video_in = gr.File(label="video")
        # No rounding here (precision=None): 2.5 frames or a frame id of 1e30 is refused with a message by the
        # checks below, where gradio's own rounding would silently change it or fail with a traceback.
        frames_in = gr.Number(value=settings.num_frames, precision=None, label="num_frames")
        model_in = gr.Textbox(value="", label="model")
        model_user_in = gr.Textbox(value="", label="user")
        model_password_in = gr.Textbox(value="", label="password", type="password")
        analysis_out = gr.JSON(label="analysis")
        analyze_button = gr.Button()

        correction_in = [
            gr.Number(precision=None, label="frame_id"),
            gr.Textbox(value="sludge", label="field"),
            gr.Textbox(label="value"),
            gr.Number(precision=None, label="seen_revision"),
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
    def analyze(video, num_frames, model, user, password):
        """Analyze a video: sample `num_frames` frames (1 to the server's cap, 64 by default), score them,
        store them; returns the CLI's JSON plus each frame's store id (`frame_id`) and `revision`, and `store`
        ({video_id, model_id}). `model` is one of the model selector's keys; empty means the default. Any
        other folder or hub id needs `user` and `password` of a reviewer account."""
        if not video:
            raise gr.Error("Send a video file (handle_file(path)).", title="No video")
        try:
            check_frame_count(num_frames, settings.video)
        except ValueError as err:
            raise gr.Error(f"num_frames: {err}", title="Bad request") from err
        try:
            return analyze_upload(services.models, db, settings.auth, video, num_frames, settings.video,
                                  model or None, user, password).to_dict()
        except VideoError as err:
            raise gr.Error(str(err), title="Cannot use this file") from err
        except ModelLoadError as err:
            raise gr.Error(str(err), title="Model not available") from err
        except AuthError as err:
            raise gr.Error(str(err), title="Not authorised") from err
        except store.StoreError as err:
            raise gr.Error(f"{type(err).__name__}: {err}", title="Not saved") from err

    def correct_label(frame_id, field, value, seen_revision, note, user, password):
        """Correct one label of a stored frame as a configured user (SLUDGELENS_USERS). `field` is sludge,
        layout or description; `value` e.g. "yes" / "no", "pip", or text; `seen_revision` is the frame revision
        you saw (0 for a never-labelled frame). Refused without a valid user and password, for viewers, and
        for a stale revision; a refusal writes nothing. Returns the stored event."""
        try:
            if frame_id is None or seen_revision is None:
                raise store.InvalidLabelError("frame_id and seen_revision are required")
            check_id(frame_id, "frame_id")
            event = correct_as(db, settings.auth, user, password, frame_id, field, value, seen_revision,
                               note or "")
        except AuthError as err:
            raise gr.Error(str(err), title="Not authorised") from err
        except store.StoreError as err:
            raise gr.Error(f"{type(err).__name__}: {err}", title="Not saved") from err
        return event.to_dict()

    def metrics(model_id, against):
        """The vqwen card's metrics of a model version (default: the app's default model version, a setting)
        against 'current' labels, 'raw-gt' or a labeler, with confusion matrices, per-layout error and Cohen's
        kappa."""
        try:
            return store.compute_metrics(db, model_id or services.default_model_id, against=against or "current",
                                         threshold=settings.engine.threshold)
        except store.StoreError as err:
            raise gr.Error(str(err)) from err

    analyze_button.click(analyze, [video_in, frames_in, model_in, model_user_in, model_password_in], analysis_out,
                         api_name="analyze", **MODEL_QUEUE)
    correct_button.click(correct_label, correction_in, event_out, api_name="correct_label", concurrency_limit=1,
                         concurrency_id="label")
    metrics_button.click(metrics, metrics_in, metrics_out, api_name="metrics")
