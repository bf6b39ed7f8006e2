"""The Review tab: metrics per model version, confusion plots, two versions on the holdout, accept / reject."""

from __future__ import annotations

import gradio as gr

import annotations as store
from annotations.accounts import AuthError, require_reviewer
from annotations.labeling import show_value
from annotations.review import compare_models, list_truth_sources, score_holdout
from core.engine import ModelLoadError
from ui.figures import plot_comparison, plot_confusion, plot_layout_errors
from ui.format import esc, format_message, format_metrics
from ui.gpu import MODEL_QUEUE, on_gpu

REVIEW_HEADERS = ["event", "frame", "field", "old", "new", "labeler", "note", "when"]
SPLIT_LABELS = {"test": "test split (fixed holdout)", "val": "validation split", "train": "train split",
                "all": "all labelled frames"}
# The collection dropdowns' value for "every collection" (a dropdown value cannot be None).
ALL_COLLECTIONS = ""


def collection_choices(db) -> list[tuple[str, str]]:
    """The collection dropdowns' choices: every collection of the store with its size, after "all collections".

    >>> collection_choices(db)  # doctest: +SKIP
    [('all collections', ''), ('crawl-2024 · 1,700 videos', 'crawl-2024'), ('uploads · 1 video', 'uploads')]
    """
    sizes = store.count_collection_videos(db)
    return [("all collections", ALL_COLLECTIONS)] + [
        (f"{name} · {n:,} video{'s' if n != 1 else ''}", name) for name, n in sizes.items()]


def format_comparison(cmp: dict) -> str:
    """The side-by-side table of two versions on the holdout."""
    if cmp["frames"] == 0:
        return (f"No frames to compare: the {cmp['split']} split has {cmp['holdout']} labelled frames and both "
                "versions must have scored them. Press **Score the holdout** with each version first, or pick "
                "'all labelled frames' (a video lands in the test split by a hash of its id, about 1 in 10).")
    a, b = cmp["models"]

    def pct(x):
        return "–" if x is None else f"{x:.1%}"

    def delta(key):
        return "–" if a[key] is None or b[key] is None else f"{(b[key] - a[key]) * 100:+.1f} pt"

    where = f" in collection **{esc(cmp['collection'])}**" if cmp.get("collection") else ""
    rows = [f"On **{cmp['frames']}** labelled frames of the {esc(cmp['split'])} split{where}, against "
            f"{esc(cmp['against'])} labels:", "",
            f"| metric | A: `{esc(a['model_id'])}` | B: `{esc(b['model_id'])}` | B − A |", "|---|---:|---:|---:|"]
    for key in ("accuracy", "precision", "recall", "f1", "layout_accuracy"):
        rows.append(f"| {key.replace('_', ' ')} | {pct(a[key])} | {pct(b[key])} | {delta(key)} |")
    rows += ["", f"The versions disagree on **{len(cmp['disagreements'])}** frames (listed below)."]
    return "\n".join(rows)


def build_review_tab(services, identity: gr.State):
    """The Review tab's components and events, inside the caller's gr.Tab.

    Returns (refresh function, its inputs, its outputs) so that opening the tab can refresh it.
    """
    db = services.db
    threshold = services.settings.engine.threshold

    gr.Markdown("Scores of each model version against the labels, in the layout of the vqwen model card. "
                "Analyze and label some frames first; everything here is computed from the store.")
    with gr.Row(equal_height=False):
        model = gr.Dropdown([], label="Model version", scale=3, elem_id="review-model", allow_custom_value=False)
        against = gr.Dropdown(["current", store.RAW_GT], value="current", label="Against", scale=2,
                              info="current labels, raw imported ground truth, or one labeler")
        group = gr.Dropdown(collection_choices(db), value=ALL_COLLECTIONS, label="Collection", scale=2,
                            elem_id="review-collection", info="the metrics and the comparison count its videos only")
        refresh = gr.Button("Refresh", scale=1, size="sm", elem_id="review-refresh")
    table = gr.Markdown("Press **Refresh** to compute the metrics.", elem_id="metrics-table")
    with gr.Row():
        sludge_plot = gr.Plot(show_label=False, elem_id="confusion-sludge")
        layout_plot = gr.Plot(show_label=False, elem_id="confusion-layout")
        errors_plot = gr.Plot(show_label=False, elem_id="per-layout-errors")

    gr.Markdown("### Two versions side by side on a fixed holdout")
    with gr.Row(equal_height=False):
        model_a = gr.Dropdown([], label="A (e.g. the current model)", scale=3)
        model_b = gr.Dropdown([], label="B (e.g. the new checkpoint)", scale=3)
        split = gr.Dropdown([(v, k) for k, v in SPLIT_LABELS.items()], value="test", label="Holdout", scale=2)
        compare = gr.Button("Compare", variant="primary", scale=1, size="sm", elem_id="compare-button")
    with gr.Accordion("Score the holdout with a model from the selector", open=False):
        gr.Markdown("A new checkpoint has no predictions yet: this runs it on the holdout's stored frames "
                    "(frames it already scored are skipped) so it can be compared.")
        with gr.Row(equal_height=False):
            scorer = gr.Dropdown(services.models.choices(), value=services.models.default_key,
                                 label="Model to run", scale=4)
            score_btn = gr.Button("Score the holdout", scale=1)
        score_msg = gr.HTML()
    compare_md = gr.Markdown()
    compare_plot = gr.Plot(show_label=False, visible=False)
    disagreements = gr.Dataframe(headers=["frame", "truth", "P(sludge) A", "P(sludge) B"], interactive=False,
                                 label="Frames where A and B disagree", max_height=260, visible=False)

    gr.Markdown("### Reviews")
    gr.Markdown("Label changes nobody has reviewed yet, oldest first. Click a row, then accept or reject it "
                "(rejecting restores the value before the change). Needs a reviewer, signed in on the Label tab.")
    pending = gr.Dataframe(headers=REVIEW_HEADERS, interactive=False, max_height=320, elem_id="pending-reviews")
    with gr.Row(equal_height=False):
        event_id = gr.Number(None, label="Event", precision=0, scale=1, elem_id="review-event")
        review_note = gr.Textbox(label="Note", scale=4)
        accept = gr.Button("Accept", variant="primary", scale=1, size="sm", elem_id="review-accept")
        reject = gr.Button("Reject", variant="stop", scale=1, size="sm", elem_id="review-reject")
    review_msg = gr.HTML()

    # ------------------------------------------------------------ callbacks

    def list_pending_rows():
        return [[e.id, e.frame_id, e.field, show_value(e.old_value, ""), show_value(e.new_value, ""), e.labeler, e.note,
                 e.created_at[:19].replace("T", " ")] for e in store.pending_reviews(db, limit=200)]

    def refresh_all(chosen, truth, group=ALL_COLLECTIONS):
        versions = store.list_model_versions(db)
        sources = list_truth_sources(db)
        groups = collection_choices(db)
        group = group if group in [value for _, value in groups] else ALL_COLLECTIONS
        shown_group = gr.update(choices=groups, value=group)
        # The default model version is a setting: the newest in the store is only the last one analyzed with.
        default = services.default_model_id if services.default_model_id in versions else None
        chosen = chosen if chosen in versions else (default or (versions[0] if versions else None))
        truth = truth if truth in sources else "current"
        updates = [gr.update(choices=versions, value=chosen), gr.update(choices=sources, value=truth)]
        if chosen is None:
            return (*updates, "No model version has predictions yet: analyze a video on the Analyze tab.",
                    None, None, None, gr.update(choices=versions), gr.update(choices=versions), list_pending_rows(),
                    shown_group)
        metrics = store.compute_metrics(db, chosen, against=truth, threshold=threshold, collection=group or None)
        text = format_metrics(metrics)
        if metrics["frames"]["n"] == 0:
            text = (f"**No labelled frames yet** for `{esc(chosen)}` against {esc(truth)} labels: label some on "
                    "the Label tab (or import ground truth with `python -m annotations import`).\n\n" + text)
        older = versions[1] if len(versions) > 1 else chosen
        return (*updates, text, plot_confusion(metrics["confusion_sludge"], "Sludge (rows truth)"),
                plot_confusion(metrics["confusion_layout"], "Layout (rows truth)"),
                plot_layout_errors(metrics["per_layout"]), gr.update(choices=versions, value=older),
                gr.update(choices=versions, value=chosen), list_pending_rows(), shown_group)

    def run_compare(a, b, truth, which, group=ALL_COLLECTIONS):
        if not a or not b:
            raise gr.Error("Pick two model versions (A and B).")
        try:
            cmp = compare_models(db, a, b, against=truth or "current", split=which, threshold=threshold,
                                 collection=group or None)
        except store.StoreError as err:
            raise gr.Error(str(err)) from err
        rows = [[d["frame_id"], "sludge" if d["truth"] else "not sludge", d["a"], d["b"]] for d in cmp["disagreements"]]
        shown = bool(cmp["frames"])
        return (format_comparison(cmp), gr.update(value=plot_comparison(cmp) if shown else None, visible=shown),
                gr.update(value=rows, visible=shown))

    @on_gpu
    def run_score(source, truth, which, group=ALL_COLLECTIONS):
        try:
            lm = services.models.get(source)
            done = score_holdout(lm, db, against=truth or "current", split=which, collection=group or None)
        except ModelLoadError as err:
            raise gr.Error(str(err), title="Model not available") from err
        except store.StoreError as err:
            raise gr.Error(str(err)) from err
        versions = store.list_model_versions(db)
        return (format_message(f"Scored {done['frames']} holdout frames with {done['model_id']}.", "ok"),
                gr.update(choices=versions), gr.update(choices=versions, value=done["model_id"]))

    def pick_event(rows, evt: gr.SelectData):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return rows.iloc[row, 0] if hasattr(rows, "iloc") else rows[row][0]

    def decide(accepted: bool):
        def run(me, event, text):
            try:
                reviewer = require_reviewer(me)
                if event is None:
                    raise gr.Error("Click a row of the list first (or type its event number).")
                result = store.review_event(db, int(event), reviewer.name, accepted, note=text or "")
            except AuthError as err:
                raise gr.Error(str(err), title="Reviewers only") from err
            except store.StoreError as err:
                raise gr.Error(str(err)) from err
            what = "Accepted" if accepted else "Rejected"
            extra = f"; the value is back to {show_value(result.revert.new_value, empty='')}" if result.revert else ""
            return format_message(f"{what} event {result.event_id}{extra}.", "ok"), list_pending_rows(), None, ""
        return run

    # ------------------------------------------------------------ events

    refresh_outputs = [model, against, table, sludge_plot, layout_plot, errors_plot, model_a, model_b, pending,
                       group]
    for trigger in (refresh.click, model.input, against.input, group.input):
        trigger(refresh_all, [model, against, group], refresh_outputs, api_visibility="private")
    compare.click(run_compare, [model_a, model_b, against, split, group], [compare_md, compare_plot, disagreements],
                  api_visibility="private")
    score_btn.click(run_score, [scorer, against, split, group], [score_msg, model_a, model_b],
                    api_visibility="private", **MODEL_QUEUE)
    scorer.focus(lambda: gr.update(choices=services.models.choices()), None, scorer, api_visibility="private",
                 queue=False)
    pending.select(pick_event, pending, event_id, api_visibility="private", queue=False)
    accept.click(decide(True), [identity, event_id, review_note], [review_msg, pending, event_id, review_note],
                 api_visibility="private")
    reject.click(decide(False), [identity, event_id, review_note], [review_msg, pending, event_id, review_note],
                 api_visibility="private")
    return refresh_all, [model, against, group], refresh_outputs
