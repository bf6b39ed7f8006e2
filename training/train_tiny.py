"""Train the embedded default models from scratch on synthetic sludge frames.

Reads top to bottom: seed -> tokenizer -> model -> data -> train -> eval -> save. Both stock classes
(Blip2ForConditionalGeneration and LlavaForConditionalGeneration, each with a Qwen3 decoder) learn the
vqwen card's task mix: classify yes/no, layout, a short grounded description, coupled classify+explain,
and refusal of "which show/game/channel" questions. Each frame's vision pass feeds two LM rows (two
tasks), which halves the vision cost per supervised answer.

    python -m training.train_tiny                      # both models into models/, ~10 min on 2 CPU cores
    python -m training.train_tiny --kinds blip2 --steps 300 --out /tmp/tiny
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from core import vocabulary
from core.config import EngineConfig, ModelSpec
from core.engine import LoadedModel, score_frames
from core.families import FAMILIES, TinyConfig, VisualTokens, find_family
from training import synthetic
from training.tasks import (
    answer_loss,
    build_training_rows,
    explain_answer,
    pick_task,
    task_of,
)
from training.tiny_models import build_tokenizer


@dataclass
class TrainTinyConfig:
    """How the embedded models are trained. Each model card gives the exact command of its checkpoint."""

    seed: int = 0
    # Model families to train, by name (core.families).
    kinds: tuple[str, ...] = ("blip2", "llava")
    # Where each family's model is written; empty means the embedded-model folders under models/.
    out: str = ""
    # Task-mix stage: 24 frames x 2 tasks per step, after the vision stage below.
    steps: int = 500
    batch_size: int = 24
    # From-scratch transformers this small train stably at 1e-3 with warmup; cosine decay to 5 %.
    lr: float = 1e-3
    warmup_share: float = 0.05
    weight_decay: float = 0.05
    # Task mix per LM row. The vqwen card's is 25/15/20/35/5 (classify/layout/describe/explain/refuse);
    # a model trained from scratch needs more direct yes/no and layout signal, so those get more weight.
    task_mix: dict[str, float] = field(
        default_factory=lambda: {"classify": 0.35, "layout": 0.25, "describe": 0.1, "explain": 0.25, "refuse": 0.05}
    )
    # Held-out frames for the model card: fresh seeds, plus photos the training pool never shows.
    eval_frames: int = 400
    vocab_size: int = 1024
    # Weight of an auxiliary 5-way layout head (none + the four layouts) on the mean of the projected image
    # tokens. It gives the vision side a direct gradient from step one, instead of only through the
    # answer token of a language model that is itself still learning; the head is not saved.
    aux_weight: float = 1.0
    # Vision-stage steps (no language model in the loop: twice as fast per step) and the weight of its
    # per-patch stream-border loss.
    vision_steps: int = 1500
    dense_weight: float = 1.0
    threads: int = 2
    log_every: int = 50


# ---------------------------------------------------------------- data


def build_corpus(seed: int, n: int = 3000) -> list[str]:
    """Every string the models will read or write, for training the tokenizer."""
    rng = np.random.default_rng(seed)
    texts = [vocabulary.CLASSIFY, vocabulary.LAYOUT, vocabulary.DESCRIBE, vocabulary.EXPLAIN, vocabulary.REFUSAL]
    texts += list(vocabulary.IDENTITY_QUESTIONS)
    texts += [w for w in vocabulary.YES_WORDS + vocabulary.NO_WORDS] * 50
    texts += [f"{w} {w.capitalize()}" for w in vocabulary.LAYOUTS] * 50
    for _ in range(n):
        _, truth = synthetic.make_frame(rng, size=(64, 36))
        texts += [truth.description, explain_answer(truth)]
    return texts


# ---------------------------------------------------------------- eval


def evaluate(lm: LoadedModel, seed: int, n: int, pool: str) -> dict:
    """Sludge accuracy over all frames and layout accuracy over sludge frames, through the app's scorer."""
    frames, truths = synthetic.make_frames(seed, n, pool=pool)
    scores = score_frames(lm, frames, batch_size=16)
    sludge_ok = [s.label == t.sludge for s, t in zip(scores, truths)]
    layout_pairs = [(s, t) for s, t in zip(scores, truths) if t.sludge]
    layout_ok = [max(s.layout_scores, key=s.layout_scores.get) == t.layout for s, t in layout_pairs]
    distractors = [ok for ok, t in zip(sludge_ok, truths) if t.distractor]
    by_layout = {}
    for name in (vocabulary.NO_LAYOUT,) + vocabulary.LAYOUTS:
        hits = [ok for ok, t in zip(sludge_ok, truths) if t.layout == name]
        if hits:
            by_layout[name] = {"frames": len(hits), "sludge_accuracy": round(float(np.mean(hits)), 4)}
    return {
        "frames": n,
        "sludge_accuracy": round(float(np.mean(sludge_ok)), 4),
        "layout_accuracy": round(float(np.mean(layout_ok)), 4) if layout_ok else None,
        "distractor_accuracy": round(float(np.mean(distractors)), 4) if distractors else None,
        "sludge_accuracy_by_layout": by_layout,
    }


# ---------------------------------------------------------------- train one family


def boundary_map(spec, grid: int) -> torch.Tensor:
    """Per patch of a grid x grid frame: 1 where a patch touches a border between two different streams.

    Read from the frame's layout (its tiles), not from pixels: a black band or a sharp horizon inside one
    stream is no border, which is exactly what the vision side must learn to tell apart.
    """
    ids = np.zeros((grid, grid), np.int64)
    centres = (np.arange(grid) + 0.5) / grid
    for tile in spec.tiles:
        x0, y0, x1, y1 = tile.box
        ids[np.ix_((centres >= y0) & (centres < y1), (centres >= x0) & (centres < x1))] = tile.stream + 1
    edge = np.zeros_like(ids, dtype=bool)
    dy, dx = ids[1:] != ids[:-1], ids[:, 1:] != ids[:, :-1]
    edge[1:] |= dy
    edge[:-1] |= dy
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    if len(spec.streams) < 2:
        edge[:] = False
    return torch.from_numpy(edge.reshape(-1).astype(np.int64))


def _cosine(steps: int, warmup_share: float):
    warm = max(1, int(warmup_share * steps))

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, steps - warm)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    return lr_at


def _optimizer(params: list[tuple[str, torch.nn.Parameter]], cfg: TrainTinyConfig, steps: int):
    decay = [p for n, p in params if p.ndim >= 2 and "embed" not in n]
    rest = [p for n, p in params if not (p.ndim >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}], lr=cfg.lr
    )
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, _cosine(steps, cfg.warmup_share))


def train_family(kind: str, tok, cfg: TrainTinyConfig, tiny: TinyConfig = TinyConfig()) -> tuple[LoadedModel, dict]:
    """Build a fresh model of the family named `kind`, train it (vision stage, then the task mix), evaluate it."""
    family = find_family(kind)
    torch.manual_seed(cfg.seed)
    model, processor = family.build_tiny(tok, tiny)
    lm = LoadedModel(
        model=model, processor=processor, family=family, spec=ModelSpec(f"tiny-{kind}"),
        device=torch.device("cpu"), dtype=torch.float32, config=EngineConfig(),
    )
    aux_classes = (vocabulary.NO_LAYOUT,) + vocabulary.LAYOUTS
    width = model.get_input_embeddings().embedding_dim
    aux_head = torch.nn.Linear(width, len(aux_classes))
    rng = np.random.default_rng(cfg.seed + 1)
    model.train()
    started = time.time()

    def aux_loss(visual: VisualTokens, specs, hits: list[float]) -> torch.Tensor:
        target = torch.tensor([aux_classes.index(sp.truth.layout) for sp in specs])
        logits = aux_head(visual.embeds.mean(1))
        hits.append((logits.argmax(-1) == target).float().mean().item())
        return torch.nn.functional.cross_entropy(logits, target)

    # Stage 1: the vision side alone. A from-scratch ViT learns "two streams" slowly from one answer token;
    # a layout head on the pooled image tokens and a per-patch stream-border head teach it in minutes.
    dense_head = torch.nn.Linear(family.patch_width(model), 2)
    vision_params = [(n, p) for n, p in model.named_parameters() if not n.startswith((family.language_model, "lm_head"))]
    heads = [("aux.weight", aux_head.weight), ("aux.bias", aux_head.bias),
             ("dense.weight", dense_head.weight), ("dense.bias", dense_head.bias)]
    opt, sched = _optimizer(vision_params + heads, cfg, cfg.vision_steps)
    hits: list[float] = []
    for step in range(cfg.vision_steps):
        specs, frames = _draw_batch(rng, cfg.batch_size)
        pixels = processor.image_processor(images=frames, return_tensors="pt")["pixel_values"]
        visual = family.encode(model, pixels)
        patches = family.patch_states(visual)
        grid = int(round(patches.shape[1] ** 0.5))
        borders = torch.stack([boundary_map(sp, grid) for sp in specs])
        dense = torch.nn.functional.cross_entropy(
            dense_head(patches).reshape(-1, 2), borders.reshape(-1), weight=torch.tensor([1.0, 4.0])
        )
        loss = aux_loss(visual, specs, hits) + cfg.dense_weight * dense
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in vision_params + heads], 1.0)
        opt.step()
        sched.step()
        if (step + 1) % cfg.log_every == 0:
            print(f"[{kind}] vision step {step + 1}/{cfg.vision_steps} loss {loss.item():.3f} "
                  f"layout acc {np.mean(hits[-cfg.log_every:]):.2f} {time.time() - started:.0f}s", flush=True)

    # Stage 2: the whole model on the task mix, the layout head still attached.
    params = list(model.named_parameters()) + heads[:2]
    opt, sched = _optimizer(params, cfg, cfg.steps)
    losses, hits = [], []
    for step in range(cfg.steps):
        specs, frames = _draw_batch(rng, cfg.batch_size)
        truths = [sp.truth for sp in specs]
        pixels = processor.image_processor(images=frames, return_tensors="pt")["pixel_values"]
        qa, rows = [], []
        for i, truth in enumerate(truths):
            first = pick_task(rng, truth, cfg.task_mix)
            qa += [first, pick_task(rng, truth, cfg.task_mix, exclude=task_of(first))]
            rows += [i, i]
        ids, att, labels = build_training_rows(lm, qa)
        visual = family.encode(model, pixels)
        loss = answer_loss(lm, visual.embeds, torch.tensor(rows), ids, att, labels)
        loss = loss + cfg.aux_weight * aux_loss(visual, specs, hits)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (step + 1) % cfg.log_every == 0 or step == cfg.steps - 1:
            print(f"[{kind}] step {step + 1}/{cfg.steps} loss {np.mean(losses[-cfg.log_every:]):.4f} "
                  f"layout acc {np.mean(hits[-cfg.log_every:]):.2f} lr {sched.get_last_lr()[0]:.2e} "
                  f"{time.time() - started:.0f}s", flush=True)
    model.eval()
    train_s = time.time() - started
    figures = {
        "train_seconds": round(train_s, 1),
        "final_loss": round(float(np.mean(losses[-cfg.log_every:])), 4),
        "heldout_synthetic": evaluate(lm, seed=10_000 + cfg.seed, n=cfg.eval_frames, pool="train"),
        "heldout_real_photos": evaluate(lm, seed=20_000 + cfg.seed, n=cfg.eval_frames, pool="holdout"),
    }
    print(f"[{kind}] {json.dumps(figures)}", flush=True)
    return lm, figures


def _draw_batch(rng: np.random.Generator, n: int):
    """n random synthetic frame specs and their pixels (train pool, ~half sludge)."""
    specs = [synthetic.draw_frame_spec(rng) for _ in range(n)]
    return specs, [synthetic.render_frame(sp) for sp in specs]


# ---------------------------------------------------------------- save


def save_checkpoint(lm: LoadedModel, folder: Path, kind: str, cfg: TrainTinyConfig, tiny: TinyConfig, figures: dict) -> None:
    """Write weights, processor (tokenizer + chat template) and a model card stating how it was made."""
    folder.mkdir(parents=True, exist_ok=True)
    lm.model.save_pretrained(folder)
    lm.processor.save_pretrained(folder)
    size_mb = sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / 1e6
    params = sum(p.numel() for p in lm.model.parameters())
    (folder / "training.json").write_text(json.dumps(
        {"config": asdict(cfg), "tiny": asdict(tiny), "figures": figures, "parameters": params}, indent=2, default=str
    ) + "\n")
    (folder / "README.md").write_text(_model_card(kind, cfg, tiny, figures, params, size_mb))


def _model_card(kind: str, cfg: TrainTinyConfig, tiny: TinyConfig, figures: dict, params: int, size_mb: float) -> str:
    family = find_family(kind)
    card = family.describe_tiny(tiny)
    cls = family.model_class.__name__
    syn, real = figures["heldout_synthetic"], figures["heldout_real_photos"]
    role, image_px, shape = card.role, card.image_size, card.shape
    by_layout = ", ".join(f"{name} {v['sludge_accuracy']:.0%} (n={v['frames']})"
                          for name, v in syn.get("sludge_accuracy_by_layout", {}).items())
    return f"""---
library_name: transformers
pipeline_tag: image-text-to-text
license: apache-2.0
tags: [sludge, tiny, synthetic]
---
# {card.heading}: tiny {cls}

A real `{cls}` checkpoint with a Qwen3 decoder, at tiny widths ({params / 1e6:.2f} M parameters,
{size_mb:.1f} MB on disk). {role}. It loads through the same loader as the vqwen
checkpoints and keeps their shapes of computation: {shape}.

## How it was made

Trained from scratch, with no pretrained weights, by

    python -m training.train_tiny --kinds {kind} --vision-steps {cfg.vision_steps} --steps {cfg.steps} --batch-size {cfg.batch_size}

on synthetic sludge frames (`training/synthetic.py`): scikit-image's bundled photos and procedural
textures composited as vertical stacks, side-by-side, picture-in-picture and collages, against single
streams with caption bars, letterboxing, borders and split-looking distractors. Two stages (seed
{cfg.seed}, AdamW lr {cfg.lr}, cosine): {cfg.vision_steps} steps of {cfg.batch_size} frames on the vision side
alone (a 5-way layout head on the pooled image tokens plus a per-patch stream-border head, both dropped
afterwards), then {cfg.steps} steps of {cfg.batch_size} frames x 2 tasks on the whole model with the task mix
{cfg.task_mix}; {figures['train_seconds']:.0f} s on 2 CPU cores, final loss {figures['final_loss']}. The
tokenizer is our own byte-level BPE ({cfg.vocab_size} tokens) with a Qwen-style chat template holding the
vqwen prompt ("{vocabulary.CLASSIFY}").

## Measured accuracy

Scored through `core.engine.score_frames` (P(yes) from the yes/no logits, threshold 0.5):

| held-out set ({syn['frames']} frames each) | sludge accuracy | layout accuracy (sludge frames) | distractors |
|---|---|---|---|
| fresh synthetic seed, training photo pool | {syn['sludge_accuracy']:.1%} | {syn['layout_accuracy']:.1%} | {syn['distractor_accuracy']:.1%} |
| photos never seen in training | {real['sludge_accuracy']:.1%} | {real['layout_accuracy']:.1%} | {real['distractor_accuracy']:.1%} |

Sludge accuracy by the frame's true layout (fresh synthetic seed): {by_layout}.

The goal for the embedded model is >= 95 % sludge and >= 85 % layout accuracy on fresh synthetic
frames; the figures above say how far this checkpoint is from it. A vision tower trained from scratch
learns slowly on two CPU cores: more vision-stage steps (`--vision-steps`) raise layout accuracy first.
Small picture-in-picture insets (one or two {tiny.patch_size} px patches at {image_px} px) and split-looking single scenes are
the hardest frames for a 4-layer, 128-wide tower; a wider tower (the 25 MB budget allows about three
times the parameters) is the next lever.

## Limits

A demonstration model: it knows composited layouts, not the content of real short-form video. Its
descriptions come from a small template vocabulary. Use the vqwen checkpoints for real judgements.
"""


# ---------------------------------------------------------------- main


def parse_config(argv: list[str] | None = None) -> TrainTinyConfig:
    """CLI flags (one per config field) or --config FILE.json."""
    parser = argparse.ArgumentParser(prog="python -m training.train_tiny", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="JSON file with TrainTinyConfig fields")
    for f in fields(TrainTinyConfig):
        if f.name == "task_mix":
            parser.add_argument("--task-mix", type=json.loads, help="JSON object, e.g. '{\"classify\": 0.5, ...}'")
        elif f.name == "kinds":
            parser.add_argument("--kinds", nargs="+", choices=sorted(family.name for family in FAMILIES.values()))
        else:
            parser.add_argument("--" + f.name.replace("_", "-"), type=type(f.default))
    args = vars(parser.parse_args(argv))
    values = json.loads(Path(args.pop("config")).read_text()) if args.get("config") else {}
    values.update({k: v for k, v in args.items() if v is not None and k != "config"})
    if "kinds" in values:
        values["kinds"] = tuple(values["kinds"])
    return TrainTinyConfig(**values)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(argv)
    torch.set_num_threads(cfg.threads)
    tiny = TinyConfig(vocab_size=cfg.vocab_size)
    tok = build_tokenizer(build_corpus(cfg.seed), cfg.vocab_size)
    for kind in cfg.kinds:
        lm, figures = train_family(kind, tok, cfg, tiny)
        embedded = find_family(kind).embedded
        folder = Path(cfg.out) / embedded.name if cfg.out else embedded
        save_checkpoint(lm, folder, kind, cfg, tiny, figures)
        print(f"[{kind}] saved to {folder}", flush=True)


if __name__ == "__main__":
    main()
