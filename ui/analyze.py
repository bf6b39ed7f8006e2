"""The Analyze tab: upload -> verdict card, confidence timeline, frame gallery, frame inspector, clip token map."""

from __future__ import annotations

import gradio as gr

import annotations as store
from annotations import StoreError
from annotations.accounts import AuthError
from annotations.analyses import (
    analyze_upload,
    ask_stored_frame,
    build_verdict_card,
    describe_stored_frame,
    explain_stored_clip,
    explain_stored_frame,
    open_stored_video,
)
from annotations.exports import EXPLANATIONS
from core import vocabulary
from core.config import check_frame_count
from core.engine import ModelLoadError
from core.explain import render_explanation
from core.video import VideoError
from ui.figures import plot_timeline, plot_token_map
from ui.format import (
    MASK_KEY,
    esc,
    format_colour_scale,
    format_frame_heading,
    format_limits,
    format_model_status,
    format_model_words,
    format_time_label,
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


# Words of the questions the model is taught to refuse: who made or what is shown (a show, game, channel...).
IDENTITY_WORDS = ("which show", "what show", "name of", "name the", "who made", "who is", "which channel",
                  "what channel", "streamer", "which game", "what game", "movie", "series", "which account",
                  "uploaded", "posted", "creator", "brand", "what song", "which song")


def is_identity_question(question: str) -> bool:
    """Whether a question asks who made or what exactly is shown (the model refuses those on purpose).

    >>> is_identity_question("Which channel posted this?"), is_identity_question("What is in the bottom half?")
    (True, False)
    """
    lowered = question.lower()
    return any(word in lowered for word in IDENTITY_WORDS)


def format_answer(question: str, reply: str) -> str:
    """The Ask box's answer: the model's reply, except its identity refusal given to an ordinary question,
    which the small model says to questions it was not trained on; then the page says so plainly.

    >>> format_answer("What is in the top half?", vocabulary.REFUSAL).startswith("**Q:**")
    True
    >>> "cannot answer free questions" in format_answer("What is in the top half?", vocabulary.REFUSAL)
    True
    """
    text = f"**Q:** {esc(question)}\n\n"
    if reply.strip() == vocabulary.REFUSAL and not is_identity_question(question):
        return text + ("**A:** *The embedded model cannot answer free questions: it was trained to classify a "
                       "frame, name its layout, describe it and explain its verdict, and it refuses questions "
                       "about who made or what exactly is shown. See the description and explanation above.*")
    return text + f"**A:** {esc(reply) or '(no answer)'} *(generated text)*"


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


def list_stored_videos(db, text: str = "") -> list[tuple[str, str]]:
    """The stored-video picker's choices: (name · collection · frames · when, video id), newest first, only
    names containing `text`.

    >>> list_stored_videos(db, "split")[0]  # doctest: +SKIP
    ('vertical_split.mp4 · uploads · 16 frames · 2025-01-31 12:00', '9f86d081884c7d65...')
    """
    try:
        videos = store.find_videos(db, text or "", limit=100)
    except StoreError:
        return []
    return [(f"{v['name']} · {v['collection']} · {v['frames']} frames · {v['created_at'][:16].replace('T', ' ')}",
             v["id"]) for v in videos]


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
                               label=f"Frames to sample (fast tier, up to {limits.max_sampled_frames})",
                               info="fast tier: every sampled frame is scored in one batched pass; the "
                                    "inspector below (slow tier) explains one frame at a time")
            go = gr.Button("Analyze", variant="primary", elem_id="analyze-button")
            if services.examples:
                gr.Examples(examples=[[str(p)] for p in services.examples], inputs=[video],
                            example_labels=[p.stem.replace("_", " ") for p in services.examples],
                            label="Examples (synthetic clips): one click loads and analyzes", examples_per_page=6,
                            api_visibility="private", elem_id="examples")
            stored_video = gr.Dropdown(list_stored_videos(db), value=None, label="Or open a stored video",
                                       info="newest first; type part of a name to search the store",
                                       elem_id="stored-video")
        with gr.Column(scale=3, min_width=360):
            card = gr.HTML(format_verdict(None), elem_id="verdict-card")
            with gr.Column(visible=False) as results:
                timeline = gr.Plot(label="Confidence timeline: click a point to inspect that frame",
                                   elem_id="timeline", show_label=True)
                # Whole frames, never cropped to squares: picture-in-picture insets sit in the corners.
                gallery = gr.Gallery(label="Sampled frames: click one to inspect it", columns=8, height="auto",
                                     buttons=[], allow_preview=False, elem_id="frame-gallery", object_fit="contain")

    # Hidden until a video is analyzed, so a first visit shows the upload and the verdict card only.
    with gr.Column(visible=False) as inspector:
        heading = gr.Markdown("### Frame inspector", elem_id="inspector-heading")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                view = gr.Radio(list(BASE_VIEWS), value="question-aware", label="Heatmap view",
                                elem_id="heatmap-view",
                                info="question-aware: how much the answer to the question below attends to each "
                                     "patch; mean / max: over the visual queries; layer: one cross-attention "
                                     "layer; grid: each query on its own")
                # No label tag over the picture: picture-in-picture insets sit in its corners.
                overlay = gr.Image(label="Where the model looks", show_label=False, type="pil", interactive=False,
                                   height=360, elem_id="heatmap", buttons=["fullscreen", "download"])
                gr.HTML(format_colour_scale("where the model looks: attention, as a share of this frame's peak"),
                        elem_id="heatmap-scale")
                question = gr.Textbox(value=vocabulary.CLASSIFY, label="Question the question-aware map answers",
                                      lines=1, info="press Enter to recompute the map for another question")
            with gr.Column(scale=3):
                rho = gr.Slider(0, 0.5, value=0, step=0.01, label="Token budget ρ (0 = auto)", elem_id="rho",
                                info="ρ: the share of visual tokens the mask keeps, the most relevant first; "
                                     "0 picks the budget from the map itself (shown below). Enter applies a typed "
                                     "value")
                mask = gr.Image(label="Token mask: kept patches bright", show_label=False, type="pil",
                                interactive=False, height=360, elem_id="mask", buttons=["fullscreen", "download"])
                gr.HTML(MASK_KEY, elem_id="mask-key")
                faith = gr.Markdown(elem_id="faithfulness")
            with gr.Column(scale=2, min_width=240):
                # The verdict of the scores, and the model's generated text only where it says the same.
                verdict_text = gr.HTML(elem_id="explanation")
                description = gr.HTML(elem_id="description")
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
        try:
            num_frames = check_frame_count(num_frames, limits)
        except ValueError as err:
            raise gr.Error(str(err).capitalize() + ".", title="Frames to sample") from err
        progress(0.05, desc=f"Checking the file, then decoding and scoring {num_frames} frames")
        try:
            # The file is checked before any model loads; only the selector's keys load (no account here).
            stored = analyze_upload(services.models, db, settings.auth, path, num_frames, limits, source or None)
        except VideoError as err:
            raise gr.Error(str(err), title="Cannot use this file") from err
        except (ModelLoadError, AuthError) as err:
            raise gr.Error(str(err), title="Model not available") from err
        except StoreError as err:
            raise gr.Error(str(err), title="Not stored") from err
        return show_analysis(stored, services.models.current)

    def show_analysis(stored, lm):
        data = stored.to_dict()
        top = max(range(len(data["frames"])), key=lambda i: data["frames"][i]["p_sludge"])
        state = {"result": data, "frame_ids": stored.frame_ids, "model": lm.identity.source}
        video = stored.analysis.video
        thumbs = [(make_thumbnail(f), format_time_label(i, t)) for i, (f, t) in enumerate(zip(video.frames,
                                                                                               video.timestamps))]
        return (data, state, format_verdict(build_verdict_card(data)), plot_timeline(data, threshold, top), thumbs,
                top, gr.update(visible=True), gr.update(visible=True), format_model_status(services))

    @on_gpu
    def open_stored(video_id, source, progress=gr.Progress()):
        if not video_id:
            raise gr.Error("Pick a stored video first.", title="No video")
        progress(0.05, desc="Loading the model")
        try:
            lm = services.models.get(source or None)
            progress(0.2, desc="Reading the stored frames (and scoring any this model has not scored)")
            stored = open_stored_video(lm, db, video_id)
        except ModelLoadError as err:
            raise gr.Error(str(err), title="Model not available") from err
        except StoreError as err:
            raise gr.Error(str(err), title="Cannot open this video") from err
        return show_analysis(stored, lm)

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
        return format_model_words(state["result"]["frames"][int(position)], text["description"],
                                  text["explanation"], EXPLANATIONS)

    @on_gpu
    def ask_frame(state, position, text):
        if not state or position is None:
            raise gr.Error("Analyze a video and pick a frame first.")
        lm = services.models.get(state["model"])
        try:
            reply = ask_stored_frame(lm, db, state["frame_ids"][int(position)], text)
        except StoreError as err:
            raise gr.Error(str(err)) from err
        return format_answer(text, reply)

    @on_gpu
    def clip_map(state, budget):
        if not state:
            raise gr.Error("Analyze a video first.")
        lm = services.models.get(state["model"])
        ce = explain_stored_clip(lm, db, state["frame_ids"], rho=float(budget) or None)
        rows = [format_time_label(i, f["time_s"]) for i, f in enumerate(state["result"]["frames"])]
        shares = ce.selection.frame_shares
        best = sorted(range(len(shares)), key=lambda i: -shares[i])[:3]
        summary = (f"ρ = **{ce.selection.rho:.2f}** ({'auto' if ce.selection.auto else 'set'}) · keeps "
                   f"**{ce.selection.kept}** of {ce.selection.mask.size} tokens. Most evidence in frames "
                   + ", ".join(f"{rows[i]} ({shares[i]:.0%})" for i in best) + ".")
        return plot_token_map(ce.relevance, ce.selection.mask, rows=rows), summary

    def opening(state, position):
        # At once, before the slow tier: the heading names the frame being opened, the timeline marks it.
        if not state or position is None:
            return gr.skip(), gr.skip()
        data = state["result"]
        return ("### Frame inspector\n" + format_frame_heading(data["frames"][position], len(data["frames"]))
                + " · *computing its heatmap…*", plot_timeline(data, threshold, position))

    def picked(text, state):
        try:
            position = int(str(text).split(":")[0])
        except ValueError:
            return gr.skip(), gr.skip(), gr.skip()
        return (position, *opening(state, position))

    def from_gallery(state, evt: gr.SelectData):
        return (evt.index, *opening(state, evt.index))

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
    for event in (pick.change(picked, [pick, analysis], [selected, heading, timeline], api_visibility="private",
                              queue=False),
                  gallery.select(from_gallery, analysis, [selected, heading, timeline], api_visibility="private",
                                 queue=False)):
        (event.then(inspect, inspect_inputs, inspect_outputs, api_visibility="private", **MODEL_QUEUE)
         .success(describe_frame, [analysis, selected], [description, verdict_text], api_visibility="private",
                  **MODEL_QUEUE))
    rho.release(inspect, inspect_inputs, inspect_outputs, api_visibility="private", **MODEL_QUEUE)
    question.submit(inspect, inspect_inputs, inspect_outputs, api_visibility="private", **MODEL_QUEUE)
    view.change(show_view, [explanation, view], overlay, api_visibility="private", queue=False)
    ask_btn.click(ask_frame, [analysis, selected, ask_box], answer, api_visibility="private", **MODEL_QUEUE)
    ask_box.submit(ask_frame, [analysis, selected, ask_box], answer, api_visibility="private", **MODEL_QUEUE)
    clip_btn.click(clip_map, [analysis, rho], [clip_plot, clip_md], api_visibility="private", **MODEL_QUEUE)
    stored_video.focus(lambda: gr.update(choices=list_stored_videos(db)), None, stored_video,
                       api_visibility="private", queue=False)
    def search_stored(key: gr.KeyUpData):
        return gr.update(choices=list_stored_videos(db, key.input_value))

    stored_video.key_up(search_stored, None, stored_video, api_visibility="private", queue=False)
    (stored_video.input(open_stored, [stored_video, model_dropdown], analyze_outputs, api_visibility="private",
                        **MODEL_QUEUE, trigger_mode="always_last")
     .success(inspect, inspect_inputs, inspect_outputs, api_visibility="private", **MODEL_QUEUE)
     .success(describe_frame, [analysis, selected], [description, verdict_text], api_visibility="private",
              **MODEL_QUEUE))
