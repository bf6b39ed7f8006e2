"""The Analyze tab: upload -> verdict card, confidence timeline, frame gallery, frame inspector, clip token map."""

from __future__ import annotations

import gradio as gr

from annotations import StoreError
from annotations.analyses import (
    ask_stored_frame,
    build_verdict_card,
    describe_stored_frame,
    explain_stored_clip,
    explain_stored_frame,
    record_analysis,
)
from core import vocabulary
from core.engine import ModelLoadError
from core.explain import render_explanation
from core.video import VideoError
from ui.figures import plot_timeline, plot_token_map
from ui.format import (
    esc,
    format_frame_heading,
    format_limits,
    format_model_status,
    format_verdict,
    make_thumbnail,
)
from ui.gpu import MODEL_QUEUE, on_gpu

# Inspector views: label -> the key of core.explain.render_explanation's pictures.
BASE_VIEWS = {"question-aware": "heatmap:question", "mean": "heatmap:mean", "max over queries": "heatmap:max",
              "32-query grid": "query_grid"}


def list_views(pictures: dict) -> list[str]:
    """The inspector's view names for the pictures an explanation has (BLIP-2 has more than LLaVA).

    >>> list_views({"heatmap:question": 0, "heatmap:layer_0": 0, "mask": 0})
    ['question-aware', 'layer 0']
    """
    names = [label for label, key in BASE_VIEWS.items() if key in pictures]
    names += [f"layer {key.split('_')[-1]}" for key in pictures if key.startswith("heatmap:layer_")]
    return names


def pick_view(view: str) -> str:
    return BASE_VIEWS.get(view) or f"heatmap:layer_{view.split()[-1]}"


def format_faithfulness(e) -> str:
    """The mask's budget and what the model does with it, as Markdown."""
    sel = e.selection
    total = sel.mask.size
    budget = (f"ρ = **{sel.rho:.2f}** ({'auto budget' if sel.auto else 'set by you'}) · "
              f"keeps **{sel.kept}** of {total} tokens")
    f = e.faithfulness
    if f is None:
        return budget
    def delta(p: float) -> str:
        return f"{round(p - f.p_full, 3) + 0.0:+.3f}"

    top, rand = abs(f.p_drop_top - f.p_full), abs(f.p_drop_random - f.p_full)
    if max(top, rand) < 0.005:
        verdict = ("Neither removal moves P by 0.005 or more: this answer does not hinge on these tokens, so "
                   "the map shows attention, not evidence.")
    elif rand < 0.005:
        # A ratio over a denominator this small reads as noise ("300x"): state the two moves instead.
        verdict = (f"Removing the kept tokens moves P by **{top:.3f}**; removing a random same-size set moves it "
                   "by less than 0.005 (a faithful mask moves it more).")
    else:
        verdict = (f"Removing the kept tokens moves P **{f.drop_ratio:.1f}×** as much as removing random ones "
                   "(a faithful mask moves it more).")
    lines = [
        budget, "",
        "| P(sludge) with | value | Δ vs full |", "|---|---:|---:|",
        f"| the whole frame | {f.p_full:.3f} | |",
        f"| only the kept tokens | {f.p_keep_top:.3f} | {delta(f.p_keep_top)} |",
        f"| kept tokens removed | {f.p_drop_top:.3f} | {delta(f.p_drop_top)} |",
        f"| a random same-size set removed | {f.p_drop_random:.3f} | {delta(f.p_drop_random)} |",
        "", verdict,
    ]
    return "\n".join(lines)


def build_analyze_tab(services, model_dropdown: gr.Dropdown, status: gr.Markdown) -> None:
    """The Analyze tab's components and events, inside the caller's gr.Tab."""
    settings = services.settings
    limits = settings.video
    threshold = settings.engine.threshold
    db = services.db

    # The timeline's click bridge (ui/static/app.js writes "position:time" here); outside any hidden column,
    # so it is mounted, and listened to, from the first page load.
    pick = gr.Textbox(visible="hidden", elem_id="timeline-pick")
    analysis = gr.State(None)  # {"result": the analysis JSON, "frame_ids", "model": source}
    explanation = gr.State(None)  # the inspector's current FrameExplanation and pictures
    selected = gr.State(None)  # position of the inspected frame in the analysis

    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300):
            gr.Markdown(f"**Upload a short video** · {format_limits(limits)}", elem_classes=["sl-limits"])
            video = gr.Video(label="Video", sources=["upload"], height=300, elem_id="upload")
            frames = gr.Slider(4, limits.max_sampled_frames, value=settings.num_frames, step=1,
                               label=f"Frames to sample (fast tier, up to {limits.max_sampled_frames})")
            go = gr.Button("Analyze", variant="primary", elem_id="analyze-button")
            if services.examples:
                gr.Examples(examples=[[str(p)] for p in services.examples], inputs=[video],
                            example_labels=[p.stem.replace("_", " ") for p in services.examples],
                            label="Examples (synthetic clips): one click loads and analyzes", examples_per_page=6,
                            api_visibility="private", elem_id="examples")
        with gr.Column(scale=3, min_width=360):
            card = gr.HTML(format_verdict(None), elem_id="verdict-card")
            with gr.Column(visible=False) as results:
                timeline = gr.Plot(label="Confidence timeline: click a point to inspect that frame",
                                   elem_id="timeline", show_label=True)
                gallery = gr.Gallery(label="Sampled frames: click one to inspect it", columns=8, height=236,
                                     buttons=[], allow_preview=False, elem_id="frame-gallery", object_fit="cover")

    # Hidden until a video is analyzed, so a first visit shows the upload and the verdict card only.
    with gr.Column(visible=False) as inspector:
        heading = gr.Markdown("### Frame inspector", elem_id="inspector-heading")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                view = gr.Radio(list(BASE_VIEWS), value="question-aware", label="Heatmap view",
                                elem_id="heatmap-view")
                overlay = gr.Image(label="Where the model looks", type="pil", interactive=False, height=360,
                                   elem_id="heatmap", buttons=["fullscreen", "download"])
                question = gr.Textbox(value=vocabulary.CLASSIFY, label="Question the question-aware map answers",
                                      lines=1, info="press Enter to recompute the map for another question")
            with gr.Column(scale=3):
                rho = gr.Slider(0, 0.5, value=0, step=0.01, label="Token budget ρ (0 = auto)", elem_id="rho")
                mask = gr.Image(label="Token mask: kept patches bright", type="pil",
                                interactive=False, height=360, elem_id="mask", buttons=["fullscreen", "download"])
                faith = gr.Markdown(elem_id="faithfulness")
            with gr.Column(scale=2, min_width=240):
                description = gr.Textbox(label="Description", lines=3, interactive=False, elem_id="description")
                verdict_text = gr.Textbox(label="Explanation", lines=3, interactive=False, elem_id="explanation")
                ask_box = gr.Textbox(label="Ask about this frame", placeholder="What is in the bottom half?",
                                     lines=1, elem_id="ask-box")
                ask_btn = gr.Button("Ask", size="sm")
                answer = gr.Markdown(elem_id="answer")

        with gr.Accordion("Clip-level token map (frames × tokens)", open=False):
            gr.Markdown("One budget over the whole clip: which tokens, and so which frames, carry the evidence. "
                        "Uses the ρ above (0 = auto).")
            clip_btn = gr.Button("Map tokens across the clip", size="sm", elem_id="clip-map-button")
            clip_plot = gr.Plot(show_label=False, elem_id="clip-map")
            clip_md = gr.Markdown()
        with gr.Accordion("Result JSON (the same as the API and `python -m core analyze --json`)", open=False):
            result_json = gr.JSON(show_label=False, elem_id="result-json")

    # ------------------------------------------------------------ callbacks

    @on_gpu
    def run_analyze(path, num_frames, source, progress=gr.Progress()):
        if not path:
            raise gr.Error("Upload a video first (or click an example).", title="No video")
        progress(0.05, desc="Loading the model")
        try:
            lm = services.models.get(source or None)
            progress(0.2, desc=f"Decoding and scoring {int(num_frames)} frames")
            stored = record_analysis(lm, db, path, num_frames=int(num_frames), limits=limits)
        except VideoError as err:
            raise gr.Error(str(err), title="Cannot use this file") from err
        except ModelLoadError as err:
            raise gr.Error(str(err), title="Model not available") from err
        data = stored.to_dict()
        top = max(range(len(data["frames"])), key=lambda i: data["frames"][i]["p_sludge"])
        state = {"result": data, "frame_ids": stored.frame_ids, "model": lm.identity.source}
        video = stored.analysis.video
        thumbs = [(make_thumbnail(f), f"{t:.1f} s") for f, t in zip(video.frames, video.timestamps)]
        return (data, state, format_verdict(build_verdict_card(data)), plot_timeline(data, threshold, top), thumbs,
                top, gr.update(visible=True), gr.update(visible=True), format_model_status(services))

    analyze_outputs = [result_json, analysis, card, timeline, gallery, selected, results, inspector, status]

    @on_gpu
    def inspect(state, position, question_text, budget, view_name):
        if not state or position is None:
            return gr.skip()
        data = state["result"]
        frame_info = data["frames"][int(position)]
        try:
            lm = services.models.get(state["model"])
            frame, e = explain_stored_frame(lm, db, state["frame_ids"][int(position)], question_text,
                                            rho=float(budget) or None)
        except (ModelLoadError, StoreError) as err:
            raise gr.Error(str(err)) from err
        pictures = render_explanation(frame, e)
        choices = list_views(pictures)
        view_name = view_name if view_name in choices else choices[0]
        return (
            {"pictures": pictures, "index": int(position)},
            "### Frame inspector\n" + format_frame_heading(frame_info, len(data["frames"])),
            gr.update(choices=choices, value=view_name),
            pictures[pick_view(view_name)],
            pictures["mask"],
            format_faithfulness(e),
            plot_timeline(data, threshold, int(position)),
        )

    inspect_outputs = [explanation, heading, view, overlay, mask, faith, timeline]

    def show_view(current, view_name):
        if not current or not view_name:
            return gr.skip()
        return current["pictures"].get(pick_view(view_name), gr.skip())

    @on_gpu
    def describe_frame(state, position):
        if not state or position is None:
            return gr.skip(), gr.skip()
        lm = services.models.get(state["model"])
        text = describe_stored_frame(lm, db, state["frame_ids"][int(position)])
        return text["description"], text["explanation"]

    @on_gpu
    def ask_frame(state, position, text):
        if not state or position is None:
            raise gr.Error("Analyze a video and pick a frame first.")
        lm = services.models.get(state["model"])
        try:
            reply = ask_stored_frame(lm, db, state["frame_ids"][int(position)], text)
        except StoreError as err:
            raise gr.Error(str(err)) from err
        return f"**Q:** {esc(text)}\n\n**A:** {esc(reply) or '(no answer)'}"

    @on_gpu
    def clip_map(state, budget):
        if not state:
            raise gr.Error("Analyze a video first.")
        lm = services.models.get(state["model"])
        ce = explain_stored_clip(lm, db, state["frame_ids"], rho=float(budget) or None)
        times = [f["time_s"] for f in state["result"]["frames"]]
        shares = ce.selection.frame_shares
        best = sorted(range(len(shares)), key=lambda i: -shares[i])[:3]
        summary = (f"ρ = **{ce.selection.rho:.2f}** ({'auto' if ce.selection.auto else 'set'}) · keeps "
                   f"**{ce.selection.kept}** of {ce.selection.mask.size} tokens. Most evidence in frames at "
                   + ", ".join(f"{times[i]:.1f} s ({shares[i]:.0%})" for i in best) + ".")
        return plot_token_map(ce.relevance, ce.selection.mask, times), summary

    def picked(text):
        try:
            return int(str(text).split(":")[0])
        except ValueError:
            return gr.skip()

    def from_gallery(evt: gr.SelectData):
        return evt.index

    # ------------------------------------------------------------ events

    def run_on_new_video(path, num_frames, source, progress=gr.Progress()):
        # A cleared upload box changes too; only a new video runs the analysis.
        if not path:
            raise gr.Error("The upload box is empty.", visible=False)
        return run_analyze(path, num_frames, source, progress)

    inspect_inputs = [analysis, selected, question, rho, view]
    for trigger, fn in ((go.click, run_analyze), (video.change, run_on_new_video)):
        (trigger(fn, [video, frames, model_dropdown], analyze_outputs, api_visibility="private",
                 **MODEL_QUEUE, trigger_mode="always_last")
         .success(inspect, inspect_inputs, inspect_outputs, api_visibility="private", **MODEL_QUEUE)
         .success(describe_frame, [analysis, selected], [description, verdict_text], api_visibility="private",
                  **MODEL_QUEUE))
    for event in (pick.change(picked, pick, selected, api_visibility="private", queue=False),
                  gallery.select(from_gallery, None, selected, api_visibility="private", queue=False)):
        (event.then(inspect, inspect_inputs, inspect_outputs, api_visibility="private", **MODEL_QUEUE)
         .success(describe_frame, [analysis, selected], [description, verdict_text], api_visibility="private",
                  **MODEL_QUEUE))
    rho.release(inspect, inspect_inputs, inspect_outputs, api_visibility="private", **MODEL_QUEUE)
    question.submit(inspect, inspect_inputs, inspect_outputs, api_visibility="private", **MODEL_QUEUE)
    view.change(show_view, [explanation, view], overlay, api_visibility="private", queue=False)
    ask_btn.click(ask_frame, [analysis, selected, ask_box], answer, api_visibility="private", **MODEL_QUEUE)
    ask_box.submit(ask_frame, [analysis, selected, ask_box], answer, api_visibility="private", **MODEL_QUEUE)
    clip_btn.click(clip_map, [analysis, rho], [clip_plot, clip_md], api_visibility="private", **MODEL_QUEUE)
