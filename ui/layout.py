"""Build the Gradio Blocks app."""

from __future__ import annotations

import gradio as gr

from core.analyze import analyze_video
from core.engine import ModelLoadError
from core.video import VideoError


def format_verdict(data: dict) -> str:
    v = data["verdict"]
    word = "Sludge" if v["label"] else "Not sludge"
    return (f"## {word}\n{v['majority']:.0%} of {v['frames']} frames vote sludge · mean P(sludge) "
            f"{v['mean_p']:.2f} · dominant layout **{v['layout']}** · model `{data['model']}`")


def build_demo(services) -> gr.Blocks:
    limits = services.settings.video

    def run_analyze(video_path, num_frames):
        if not video_path:
            raise gr.Error("Upload a video first.")
        try:
            data = analyze_video(services.models.get(), video_path, num_frames=int(num_frames), limits=limits).to_dict()
        except (VideoError, ModelLoadError) as err:
            raise gr.Error(str(err)) from err
        rows = [[f["index"], f["time_s"], f["p_sludge"], "sludge" if f["label"] else "-", f["layout"]] for f in data["frames"]]
        return format_verdict(data), rows, data

    with gr.Blocks(title="sludgelens") as demo:
        gr.Markdown("# sludgelens\nUpload a short video: each sampled frame is scored for sludge "
                    f"(two or more unrelated streams at once). Limits: {limits.max_bytes // 2**20} MB, "
                    f"{limits.max_duration_s:.0f} s.")
        with gr.Tab("Analyze"):
            with gr.Row():
                video = gr.Video(label="Video", sources=["upload"])
                with gr.Column():
                    frames = gr.Slider(4, 64, value=services.settings.num_frames, step=1, label="Frames to sample")
                    go = gr.Button("Analyze", variant="primary")
            verdict = gr.Markdown()
            table = gr.Dataframe(headers=["frame", "time (s)", "P(sludge)", "label", "layout"], interactive=False)
            result = gr.JSON(label="Result (JSON)")
        go.click(run_analyze, [video, frames], [verdict, table, result], api_name="analyze")
    return demo
