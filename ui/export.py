"""The Export tab: every export format of the store with its manifest, a zip to download, a push to the Hub."""

from __future__ import annotations

import gradio as gr

import annotations as store
from annotations.accounts import AuthError, require_writer
from annotations.analyses import export_zip
from ui.format import esc, format_message

KINDS = {
    "training": "Training JSONL — training.jsonl for the fine-tuning scripts (images copied)",
    "imagefolder": "Imagefolder — train/validation/test folders with metadata.jsonl, for datasets.load_dataset",
    "label-studio": "Label Studio — tasks.json: labels as annotations, our predictions as pre-annotations; "
                    "label_config.xml",
}


def format_counts(manifest: dict) -> str:
    """A one-paragraph summary of an export's manifest."""
    counts = manifest["counts"]
    parts = [f"**{manifest['kind']}** export `{esc(manifest['snapshot_id'])}`"]
    if "records" in counts:
        parts.append(f"{counts['records']} frames from {counts['videos']} videos "
                     f"({counts.get('sludge', 0)} sludge)")
        parts.append("splits " + ", ".join(f"{k} {v}" for k, v in counts.get("by_split", {}).items()))
        parts.append("provenance " + ", ".join(f"{k} {v}" for k, v in counts.get("by_provenance", {}).items()))
        if counts.get("skipped_unlabelled"):
            parts.append(f"{counts['skipped_unlabelled']} unlabelled frames left out")
        pseudo = manifest.get("pseudo_labels") or {}
        if pseudo.get("included"):
            parts.append(f"**{pseudo['records']} model pseudo-labels** from `{esc(pseudo['model_id'])}` "
                         "(provenance `model`)")
        else:
            parts.append("no model pseudo-labels: human and imported labels only")
    else:
        parts.append(", ".join(f"{k} {v}" for k, v in counts.items()))
    parts.append(f"{len(manifest['files'])} files, each with its sha256 in manifest.json")
    return " · ".join(parts)


def build_export_tab(services, identity: gr.State):
    """The Export tab's components and events, inside the caller's gr.Tab.

    Returns (refresh function, its inputs, its outputs) so that opening the tab can refresh it.
    """
    settings = services.settings
    db = services.db
    target = settings.export_target

    gr.Markdown("Export the current labels (people's corrections over imported ground truth) in a reproducible "
                "format: the same store gives byte-identical files, and `manifest.json` records the snapshot id, "
                "counts, provenance, the split rule and a hash of every file. Splits are by video, and every "
                "collection of 3 or more videos has a validation and a test video.")
    with gr.Row(equal_height=False):
        kind = gr.Radio([(v, k) for k, v in KINDS.items()], value="training", label="Format", scale=4,
                        elem_id="export-kind")
        with gr.Column(scale=2):
            model = gr.Dropdown([], label="Model version", elem_id="export-model",
                                info="its scores are the Label Studio pre-annotations (and the pseudo-labels, if "
                                     "asked for)")
            pseudo = gr.Checkbox(False, label="Add the model's pseudo-labels for frames nobody labelled",
                                 elem_id="export-pseudo",
                                 info="off: human and imported labels only; on: unlabelled frames get the model's "
                                      "answer, marked provenance 'model' in the records and the manifest")
    run = gr.Button("Export", variant="primary", elem_id="export-button")
    summary = gr.Markdown(elem_id="export-summary")
    with gr.Row(equal_height=False, visible=False) as results:
        download = gr.File(label="Download (zip)", interactive=False, elem_id="export-zip", scale=1)
        manifest_json = gr.JSON(label="manifest.json", scale=2, elem_id="export-manifest")
    export_folder = gr.State(None)
    with gr.Group():
        if target:
            gr.Markdown(f"**Push to the Hub:** the last export goes to `{esc(target)}` under "
                        "`exports/<snapshot id>` (needs a signed-in labeler or reviewer).")
        else:
            gr.Markdown("**Push to the Hub** is off: set `SLUDGELENS_EXPORT_TARGET` (e.g. "
                        "`hf://datasets/you/sludge-labels`, with `HF_TOKEN` as a Space secret) to enable it.")
        push = gr.Button("Push the last export", visible=bool(target), elem_id="push-button")
        push_msg = gr.HTML()

    def refresh(chosen):
        versions = store.list_model_versions(db)
        default = services.default_model_id if services.default_model_id in versions else None
        return gr.update(choices=versions, value=chosen if chosen in versions else default)

    def run_export(which, model_id, with_pseudo):
        if not store.list_videos(db):
            raise gr.Error("The store has no frames yet: analyze a video first.", title="Nothing to export")
        try:
            manifest, folder, archive = export_zip(db, which, settings.export_dir,
                                                   model_id or services.default_model_id,
                                                   store.ExportConfig(threshold=settings.engine.threshold,
                                                                      include_model_labels=bool(with_pseudo)))
        except store.StoreError as err:
            raise gr.Error(str(err), title="Export failed") from err
        return format_counts(manifest), str(archive), manifest, str(folder), "", gr.update(visible=True)

    def run_push(me, folder):
        try:
            require_writer(me)
        except AuthError as err:
            raise gr.Error(str(err), title="Sign in to push") from err
        if not folder:
            raise gr.Error("Export first, then push that export.")
        try:
            where = store.push_export_to_hub(folder, target)
        except (store.StoreError, OSError) as err:
            raise gr.Error(f"Push failed: {err}", title="Push failed") from err
        return format_message(f"Pushed to {where}", "ok")

    run.click(run_export, [kind, model, pseudo], [summary, download, manifest_json, export_folder, push_msg, results],
              api_visibility="private")
    push.click(run_push, [identity, export_folder], push_msg, api_visibility="private")
    return refresh, [model], [model]
