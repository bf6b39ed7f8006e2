"""The embedded models' cards, written from what was measured: training.json (how the checkpoint was
trained and its held-out synthetic figures) and real_footage.json (bench/bench_real_video.py's figures),
both beside the weights.

    python -m training.model_card models/tiny-vqwen-qformer models/tiny-vqwen-llava
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from core import vocabulary
from core.families import TinyConfig, find_family
from core.identity import REAL_FOOTAGE_RECORD, TRAINING_RECORD
from training import imagery, synthetic
from training.real_footage import format_shares


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _sources_table(rows: list[dict]) -> str:
    lines = ["| pool | source | package | kind | pictures | licence |", "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['pool']} | {row['source']} | {row['origin']}: `{row['package']}` | {row['kind']} | "
                     f"{row['images']} | {row['licence']} |")
    return "\n".join(lines)


def _orientations(cfg: dict) -> str:
    """ "portrait and landscape" or "portrait only", from the frame sizes (height, width) the step drew."""
    sizes = cfg.get("sizes") or [(448, 252)]  # the size every frame had before sizes were a setting
    kinds = {synthetic.name_orientation(size) for size in sizes}
    return "portrait and landscape" if len(kinds) == 2 else f"{kinds.pop()} only"


def _frames_section(cfg: dict, sources: list[dict]) -> str:
    """What the last training step's frames were made of: its pool, whether batches were content-balanced,
    and the orientations it drew."""
    pool, balanced = cfg.get("pool", "train"), cfg.get("balanced", False)
    real = pool in synthetic.REAL_POOLS
    if real:
        head = ("**Frames.** Composed from real pictures of whole installed packages, split by package into a "
                "training\npool and a held-out pool that are never mixed (`python -m training.imagery` lists what "
                f"is installed):\n\n{_sources_table(sources)}\n\n")
    else:
        head = (f"**Frames.** Composed from scikit-image's bundled photos ({len(synthetic.TRAIN_PHOTOS)} of them; "
                f"{len(synthetic.HOLDOUT_PHOTOS)} more are kept\nfor held-out checks) and procedural scenes drawn "
                "by `training/synthetic.py` (textures, landscapes, buildings, chats,\ngames). The real-footage "
                "check below uses only the held-out packages of `python -m training.imagery`:\n\n"
                f"{_sources_table([row for row in sources if row['pool'] == 'holdout'])}\n\n")
    body = ("Sludge frames put two to four streams in one frame (stacked top/bottom, side by side, "
            "picture-in-picture,\ncollages; sometimes two crops of one picture); single-stream frames show one, "
            "sometimes with strong straight\nedges that are not a split ("
            + ("a horizon, a skyline, an app's interface bars, a black band, mirrored halves, a\nthick border). "
               if real else
               "a horizon, a black band, mirrored halves, a zoomed inset of\nthe same picture, a thick border). "))
    if balanced:
        body += ("Content cannot predict the label: every stream of a composite is also shown alone in the same\n"
                 "batch (another crop and jitter), so each picture appears as often alone as inside composites, "
                 "and every\nframe gets the same augmentations")
    else:
        body += ("Frames are drawn independently, about half of them sludge, and every frame gets the same\n"
                 "augmentations")
    body += (" (crop scale and pan, colour, blur, captions, borders, letterbox, an app's\ninterface"
             + (", lower resolution, JPEG artefacts" if real else "")
             + f"), in {_orientations(cfg)}."
             + (" Game streams are drawn as block scenes from a game's own textures." if real else ""))
    if cfg.get("layout_weights"):
        body += f" Composites' layouts were drawn with these shares: {_list_shares(cfg['layout_weights'])}."
    if cfg.get("source_mix"):
        body += f" Streams were drawn by kind with these shares: {_list_shares(cfg['source_mix'])}."
    return head + body


def _list_shares(shares: dict[str, float]) -> str:
    """'vertical 0.5, horizontal 0.5' for {"vertical": 0.5, "horizontal": 0.5}."""
    return ", ".join(f"{name} {share:g}" for name, share in shares.items())


def _average_words(averaged: dict | None) -> str:
    """The sentence a card gets when its weights are an average of checkpoints (training.average_checkpoints)."""
    if not averaged:
        return ""
    return (f" The weights are then the uniform average of {averaged['checkpoints']} checkpoints (the last step "
            "above),\nwhich costs no training; the figures below are measured on the averaged weights.")


def _border_words(cfg: dict) -> str:
    """How the last step's stream-border head was taught: one border class, or seams by direction."""
    if cfg.get("dense_orientation"):
        return (" that tells seams between rows (a stack) from seams between columns (a side-by-side split), "
                "letterbox edges being no seam")
    return ""


def _stages_words(cfg: dict) -> str:
    """What the last step trained, in order: the vision stage and the whole model, or only what reads a kept tower."""
    if cfg.get("freeze_vision"):
        return ("The vision tower kept exactly as the checkpoint before had it; only what reads it (Q-Former\n"
                "or projector, and the LM, with a 5-way layout head on the pooled image tokens, dropped afterwards)\n"
                "trained, on the task mix")
    return (f"Vision side alone first (a 5-way layout head on the pooled image tokens plus a per-patch\n"
            f"stream-border head{_border_words(cfg)}, both dropped afterwards), then the whole model on the task mix")


def _rows_sentence(cfg: dict) -> str:
    """How many task-mix questions each frame answered in the last step, and why."""
    sludge, single = cfg.get("sludge_rows", 1), cfg.get("single_rows", 1)
    rows = (f"Each sludge frame answered {sludge} question{'s' * (sludge != 1)} and each single frame "
            f"{single}")
    if cfg.get("balanced", False):
        return rows + " (balanced batches hold about one sludge frame in three)."
    return rows + "."


def _heldout_name(cfg: dict) -> str:
    """What the second held-out row of the card was drawn from (``train_tiny.evaluate``'s held-out pool)."""
    if synthetic.find_heldout_pool(cfg.get("pool", "train")) == "real-holdout":
        return "held-out packages only"
    return f"scikit-image's {len(synthetic.HOLDOUT_PHOTOS)} held-out photos"


def _real_section(real: dict | None, folder: Path) -> str:
    if not real:
        return ("Not measured yet for this checkpoint: run `python -m bench.bench_real_video --model "
                f"{folder.as_posix()} --json {folder.as_posix()}/{REAL_FOOTAGE_RECORD}` and regenerate this card.")
    f, ex = real["figures"], real["examples"]
    by = format_shares(f["video_accuracy_by_layout"])
    wrong = [row["example"] for row in ex["rows"] if not row["right"]]
    singles = sum(row["truth"] == "none" for row in f["rows"])
    sources = format_shares(f.get("single_not_sludge_by_source", {}))
    by_source = (f"\n\nSingle-scene frames called not sludge, by where the clip's pictures come from "
                 f"({singles} clips, so a rough guide): {sources}.") if sources else ""
    shapes = f.get("layout_accuracy_by_shape") or {}
    by_shape = ("\n\nLayout accuracy by layout, portrait / landscape frames:\n" + ", ".join(
        f"{kind} {_pct(s.get('portrait'))} / {_pct(s.get('landscape'))}" for kind, s in shapes.items()) + ".") \
        if shapes else ""
    parts = f.get("by_composer") or {}
    by_composer = ("\n\nBy composer (video level / single scenes / sludge frames / layout): " + "; ".join(
        f"{name} {_pct(p['video_accuracy'])} / {_pct(p['single_frames_not_sludge'])} / "
        f"{_pct(p['sludge_frames_found'])} / {_pct(p['layout_accuracy'])}" for name, p in parts.items()) + ".") \
        if parts else ""
    words = {"renderer": "by the training renderer (none of its procedural scenes; captions, dividers, letterbox, "
                         "colour jitter)",
             "plain": "by plain compositing (pictures cropped, slowly zoomed and panned, pasted)",
             "footage": "by the same compositing of real videos as they play (camera footage and an animated short)"}
    present = [name for name in words if name in parts] or ["renderer"]
    share = {1: "all", 2: "half", 3: "a third"}.get(len(present), "some")
    made = ",\n".join(f"{share} {words[name]}" for name in present)
    return f"""Clips composed only from the held-out packages (other photographers, illustrators, another game's
textures, other videos),
{made},
moving, at 1080x1920 and 1280x720, H.264-encoded with PyAV, decoded and sampled (16 frames)
by the app's own path; {f['clips']} clips, single scenes and each sludge layout alike
(`{real.get('command', 'python -m bench.bench_real_video')}`):

| figure | measured | goal |
|---|---|---|
| video-level accuracy | {_pct(f['video_accuracy'])} | >= 90 % |
| single-scene frames called not sludge | {_pct(f['single_frames_not_sludge'])} | >= 85 % |
| sludge frames found | {_pct(f['sludge_frames_found'])} | >= 90 % |
| layout accuracy (sludge frames) | {_pct(f['layout_accuracy'])} | >= 80 % |
| the app's 5 bundled examples right at video level | {ex['right']}/{ex['examples']} | 5/5 |

Video-level accuracy by truth: {by}.{(' Wrong examples: ' + ', '.join(wrong) + '.') if wrong else ''}\
{by_composer}{by_source}{by_shape}"""


def render_model_card(folder: Path, kind: str) -> str:
    """The card's text for the checkpoint in `folder` (a family named `kind`), from its measured files."""
    record = json.loads((folder / TRAINING_RECORD).read_text())
    cfg, figures, params = record["config"], record["figures"], record["parameters"]
    tiny = TinyConfig(**{f.name: record["tiny"][f.name] for f in fields(TinyConfig) if f.name in record["tiny"]})
    real_path = folder / REAL_FOOTAGE_RECORD
    real = json.loads(real_path.read_text()) if real_path.is_file() else None
    family = find_family(kind)
    card = family.describe_tiny(tiny)
    cls = family.model_class.__name__
    size_mb = sum(p.stat().st_size for p in folder.iterdir() if p.is_file() and p.suffix == ".safetensors") / 1e6
    syn, held = figures["heldout_synthetic"], figures["heldout_real_photos"]
    by_layout = ", ".join(f"{name} {v['sludge_accuracy']:.0%} (n={v['frames']})"
                          for name, v in syn.get("sludge_accuracy_by_layout", {}).items())
    sources = record.get("sources") or imagery.describe_pools()
    flags = record.get("command") or f"python -m training.train_tiny --kinds {kind}"
    history = record.get("history", [])
    averaged = record.get("averaged")
    lineage = "\n".join(f"{i + 1}. {step}" for i, step in enumerate(history)) or "1. " + flags
    return f"""---
library_name: transformers
pipeline_tag: image-text-to-text
license: apache-2.0
tags: [sludge, tiny]
---
# {card.heading}: tiny {cls}

A real `{cls}` checkpoint with a Qwen3 decoder, at tiny widths ({params / 1e6:.2f} M parameters,
{size_mb:.1f} MB of weights; the budget is 25 MB). {card.role}. It loads through the same loader as the
vqwen checkpoints and keeps their shapes of computation: {card.shape}.

## How it was made

Trained by our own script (`training/train_tiny.py`), with no pretrained weights from anywhere, in these
steps:

{lineage}

The last {'training ' if averaged else ''}step, in full: `{flags}`; {figures['train_seconds']:.0f} s on 2 CPU cores,
final loss {figures['final_loss']}.{_average_words(averaged)}

{_frames_section(cfg, sources)}

**Stages.** {_stages_words(cfg)}
{cfg['task_mix']}.
{_rows_sentence(cfg)} The tokenizer is our own byte-level BPE ({cfg['vocab_size']}
tokens) with a Qwen-style chat template holding the vqwen prompt ("{vocabulary.CLASSIFY}").

## Measured accuracy

### Real footage it never saw

{_real_section(real, folder)}

### Held-out frames

Scored through `core.engine.score_frames` (P(yes) from the yes/no logits, threshold 0.5), {syn['frames']}
frames each:

| held-out set | sludge accuracy | layout accuracy (sludge frames) | distractors |
|---|---|---|---|
| fresh seed, training pool ({cfg.get('pool', 'train')}) | {_pct(syn['sludge_accuracy'])} | {_pct(syn['layout_accuracy'])} | {_pct(syn['distractor_accuracy'])} |
| {_heldout_name(cfg)} | {_pct(held['sludge_accuracy'])} | {_pct(held['layout_accuracy'])} | {_pct(held['distractor_accuracy'])} |

Sludge accuracy by the frame's true layout (fresh seed, training pool): {by_layout}.

## Limits

A demonstration model: it knows composited layouts, not the content of short-form video, and its
descriptions come from a small template vocabulary ("a photo", "a game scene"). Small picture-in-picture
insets (one or two {tiny.patch_size} px patches at {card.image_size} px) are its hardest frames. Use the
vqwen checkpoints for real judgements.
"""


def write_model_card(folder: str | Path, kind: str | None = None) -> Path:
    """Rewrite README.md in a checkpoint folder from its measured files; `kind` defaults to its config's.

    >>> write_model_card("models/tiny-vqwen-qformer")  # doctest: +SKIP
    PosixPath('models/tiny-vqwen-qformer/README.md')
    """
    folder = Path(folder)
    if kind is None:
        kind = json.loads((folder / "config.json").read_text())["model_type"]
    path = folder / "README.md"
    path.write_text(render_model_card(folder, kind))
    return path


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(prog="python -m training.model_card", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="checkpoint folders holding training.json")
    args = parser.parse_args(argv)
    paths = [write_model_card(folder) for folder in args.folders]
    for path in paths:
        print(path)
    return paths


if __name__ == "__main__":
    main()
