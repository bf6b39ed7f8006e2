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
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from core import vocabulary
from core.config import EngineConfig, ModelSpec
from core.engine import LoadedModel, score_frames
from core.families import FAMILIES, TinyConfig, VisualTokens, find_family
from core.identity import REAL_FOOTAGE_RECORD, TRAINING_RECORD
from training import imagery, synthetic
from training.model_card import write_model_card
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
    # Tell the two directions of a stream border apart in the per-patch loss (a seam between rows of a
    # stack, a seam between columns of a side-by-side split) instead of one "border here" class. Without
    # it the tower is taught where borders are but not which way they run, and the layout head must tell
    # stacked from side by side on its own, the layouts the embedded models confuse most.
    dense_orientation: bool = False
    threads: int = 2
    log_every: int = 50
    # Where frames come from: "real-train" composes the pictures of whole installed packages
    # (training.imagery), the held-out packages never; "train" is scikit-image's photos only.
    pool: str = "real-train"
    # Balanced batches: every stream of a composite is also shown alone, so content cannot predict the
    # label (the failure of a model that calls every unfamiliar picture sludge).
    balanced: bool = True
    # Share of each sludge layout among composites; empty means training.synthetic's (vertical stacks the
    # most often, as in short-form video). Even shares teach the rarer side-by-side split as often.
    layout_weights: dict[str, float] = field(default_factory=dict)
    # Share of each kind of stream in a real pool ("picture", "footage", "game", "procedural"); empty means
    # training.synthetic's (pictures the most often). More "footage" shows more stills of real video, whose
    # camera noise and compression a model that has seen mostly photos confuses with a seam.
    source_mix: dict[str, float] = field(default_factory=dict)
    # Two habits of the renderer, dialled down (training.synthetic.StreamStyle): the share of stacks and
    # splits with a game as their last stream (scaled: 1 keeps the renderer's, 0 puts games in any tile
    # alike) and the share of streams left ungraded (no seam-long colour break). A model that leans on them
    # reads two photos or two videos pasted plainly one above the other as a collage or as one scene.
    game_last_scale: float = 1.0
    ungraded_share: float = 0.0
    # Share of the vision stage's frames turned about their diagonal (rows become columns: a stack becomes a
    # side-by-side split, and every stream's content lies on its side). A tower that must find the same seams
    # in content it has never seen that way up leans less on how familiar packages look; the task-mix stage
    # never turns a frame, since its descriptions say which stream is on top.
    transpose_share: float = 0.0
    # Share of frames, in both stages, recoloured as a whole (training.synthetic.recolour_frame: channels
    # swapped, hues turned, or grey). Held-out packages miss layout mostly where their look is unfamiliar;
    # recolouring every stream alike adds no seam and leaves the seams as the cue. Measured on the shipped
    # default: held-out layout moved by about a point (EMBEDDED_MODELS.md).
    recolour_share: float = 0.0
    # Frame sizes (height, width) and their shares: portrait short-form and landscape footage alike.
    sizes: tuple[tuple[int, int], ...] = ((384, 216), (216, 384))
    size_weights: tuple[float, ...] = (0.65, 0.35)
    # LM rows per sludge frame and per single-stream frame: balanced batches hold about 1 sludge frame in
    # 3, so sludge frames answer more questions to keep yes and no equally taught.
    sludge_rows: int = 3
    single_rows: int = 1
    # Weight of the "none" class in the layout head, for the same reason.
    none_weight: float = 0.45
    # Continue from a saved checkpoint of the family (its weights and tokenizer) instead of from scratch;
    # "embedded" means each family's embedded checkpoint under models/.
    init_from: str = ""
    # Vision layers of the tower. From scratch, the tower is built this deep. From `init_from`, the tower
    # is grown to it: new layers start as exact identities (their output projections zeroed), so the
    # grown model computes what the checkpoint did and training deepens it. 0 keeps TinyConfig's depth
    # (from scratch) or the checkpoint's.
    vision_layers: int = 0
    # Processes rendering frames while the model trains (0 = render in the training process).
    loader_workers: int = 1
    # Keep the vision tower as the checkpoint has it and train only what reads it (Q-Former or projector,
    # LM): the vision stage is skipped and the task-mix stage leaves the tower's weights alone, with no
    # backward pass through it. For a tower whose features tell more than the model's answer does
    # (bench.bench_probe compares them): the steps go to reading them, and the features the explanations'
    # heatmaps are read from stay as they were.
    freeze_vision: bool = False


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


def evaluate_heldout(lm: LoadedModel, seed: int, n: int, pool: str) -> dict:
    """The card's two held-out rows: fresh seeds of the training pool, and the pool held out from it."""
    return {"heldout_synthetic": evaluate(lm, seed=10_000 + seed, n=n, pool=pool),
            "heldout_real_photos": evaluate(lm, seed=20_000 + seed, n=n, pool=synthetic.find_heldout_pool(pool))}


# ---------------------------------------------------------------- train one family


def boundary_map(spec, grid: int, oriented: bool = False) -> torch.Tensor:
    """Per patch of a grid x grid frame: 1 where a patch touches a border between two different streams.

    Read from the frame's layout (its tiles), not from pixels: a black band or a sharp horizon inside one
    stream is no border, which is exactly what the vision side must learn to tell apart. ``oriented`` gives
    two maps, (2, grid * grid): patches on a seam between rows (the stream above or below is another
    stream), then patches on a seam between columns (the stream left or right is another stream). There a
    letterbox bar's edge is no seam: a side-by-side split in a letterboxed band has column seams only.

    >>> from training.synthetic import FrameSpec, Tile
    >>> stacked = FrameSpec(truth=None, streams=(None, None), tiles=(Tile(0, (0, 0, 1, .5)), Tile(1, (0, .5, 1, 1))))
    >>> boundary_map(stacked, 4).reshape(4, 4).tolist()
    [[0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]]
    >>> rows, columns = boundary_map(stacked, 4, oriented=True).reshape(2, 4, 4)
    >>> int(rows.sum()), int(columns.sum())
    (8, 0)
    """
    ids = np.zeros((grid, grid), np.int64)
    centres = (np.arange(grid) + 0.5) / grid
    for tile in spec.tiles:
        x0, y0, x1, y1 = tile.box
        ids[np.ix_((centres >= y0) & (centres < y1), (centres >= x0) & (centres < x1))] = tile.stream + 1
    across_rows, across_columns = np.zeros_like(ids, dtype=bool), np.zeros_like(ids, dtype=bool)
    dy, dx = ids[1:] != ids[:-1], ids[:, 1:] != ids[:, :-1]
    if oriented:  # both sides must be streams: the background (id 0) is bars and gutters
        dy &= (ids[1:] > 0) & (ids[:-1] > 0)
        dx &= (ids[:, 1:] > 0) & (ids[:, :-1] > 0)
    across_rows[1:] |= dy
    across_rows[:-1] |= dy
    across_columns[:, 1:] |= dx
    across_columns[:, :-1] |= dx
    maps = np.stack([across_rows, across_columns]) if oriented else (across_rows | across_columns)[None]
    if len(spec.streams) < 2:
        maps[:] = False
    flat = maps.reshape(len(maps), grid * grid).astype(np.int64)
    return torch.from_numpy(flat if oriented else flat[0])


# What a frame turned about its diagonal shows: stacks and side-by-side splits trade places.
TRANSPOSED_LAYOUT = {"vertical": "horizontal", "horizontal": "vertical"}


def transpose_frame(frame):
    """The frame (an (H, W, C) array or tensor, as the batch loader hands it over) turned about its diagonal:
    row r becomes column r (a portrait frame becomes a landscape one).

    >>> transpose_frame(np.arange(6).reshape(2, 3, 1))[..., 0].tolist()
    [[0, 3], [1, 4], [2, 5]]
    >>> transpose_frame(torch.zeros(2, 3, 3)).shape
    torch.Size([3, 2, 3])
    """
    if torch.is_tensor(frame):
        return frame.permute(1, 0, 2).contiguous()
    return np.ascontiguousarray(frame.transpose(1, 0, 2))


def transpose_borders(borders: torch.Tensor, grid: int) -> torch.Tensor:
    """boundary_map's maps for the frame turned about its diagonal: each map turned with it, and the seams
    between rows and those between columns (the oriented maps) trading places.

    >>> from training.synthetic import FrameSpec, Tile
    >>> stacked = FrameSpec(truth=None, streams=(None, None), tiles=(Tile(0, (0, 0, 1, .5)), Tile(1, (0, .5, 1, 1))))
    >>> split = FrameSpec(truth=None, streams=(None, None), tiles=(Tile(0, (0, 0, .5, 1)), Tile(1, (.5, 0, 1, 1))))
    >>> bool((transpose_borders(boundary_map(stacked, 4, True), 4) == boundary_map(split, 4, True)).all())
    True
    >>> bool((transpose_borders(boundary_map(stacked, 4), 4) == boundary_map(split, 4)).all())
    True
    """
    maps = borders.reshape(-1, grid, grid).transpose(1, 2)
    if len(maps) == 2:
        maps = maps.flip(0)
    return maps.reshape(borders.shape)


def find_vision_layers(model) -> tuple[str, torch.nn.ModuleList]:
    """The vision tower's list of encoder layers, by name (both families name it "...encoder.layers")."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and name.endswith("encoder.layers") and "vision" in name:
            return name, module
    raise ValueError("no vision encoder layers found in the model")


def find_vision_tower(model) -> torch.nn.Module:
    """The whole vision tower (embeddings, encoder, norms): the module that holds the encoder layers."""
    name, _ = find_vision_layers(model)
    return model.get_submodule(name.removesuffix(".encoder.layers"))


def grow_vision_tower(model, layers: int) -> int:
    """Deepen the vision tower to `layers` encoder layers with identity blocks: each new layer is a copy of
    its neighbour whose residual-writing projections (attention output, MLP fc2) are zeroed, so the model's
    outputs are unchanged until training moves them. New layers go just below the layer whose output the
    model reads (LLaVA reads the second-to-last; BLIP-2 the last). Returns how many layers were added.
    """
    import copy

    _, stack = find_vision_layers(model)
    added = layers - len(stack)
    if added < 0:
        raise ValueError(f"cannot shrink the vision tower from {len(stack)} to {layers} layers")
    feature_layer = getattr(model.config, "vision_feature_layer", -1)
    feature_layer = feature_layer if isinstance(feature_layer, int) else -1
    at = len(stack) + feature_layer + 1
    for _ in range(added):
        block = copy.deepcopy(stack[at - 1])
        for name, module in block.named_modules():
            if isinstance(module, torch.nn.Linear) and name.endswith(("projection", "out_proj", "fc2")):
                torch.nn.init.zeros_(module.weight)
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)
        stack.insert(at, block)
    model.config.vision_config.num_hidden_layers = len(stack)
    return added


def load_initial(family, cfg: TrainTinyConfig):
    """The checkpoint to continue from (weights, tokenizer, chat template), grown to cfg.vision_layers."""
    from transformers import AutoProcessor

    folder = family.embedded if cfg.init_from == "embedded" else Path(cfg.init_from)
    model = family.model_class.from_pretrained(folder, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(folder)
    if cfg.vision_layers:
        grow_vision_tower(model, cfg.vision_layers)
    return model, processor


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
    if cfg.init_from:
        model, processor = load_initial(family, cfg)
    else:
        model, processor = family.build_tiny(tok, tiny)
    lm = LoadedModel(
        model=model, processor=processor, family=family, spec=ModelSpec(f"tiny-{kind}"),
        device=torch.device("cpu"), dtype=torch.float32, config=EngineConfig(),
    )
    aux_classes = (vocabulary.NO_LAYOUT,) + vocabulary.LAYOUTS
    width = model.get_input_embeddings().embedding_dim
    aux_head = torch.nn.Linear(width, len(aux_classes))
    class_weight = torch.tensor([cfg.none_weight] + [1.0] * len(vocabulary.LAYOUTS))
    rng = np.random.default_rng(cfg.seed + 1)
    model.train()
    started = time.time()

    def aux_loss(visual: VisualTokens, layouts: list[str], hits: list[float]) -> torch.Tensor:
        target = torch.tensor([aux_classes.index(layout) for layout in layouts])
        logits = aux_head(visual.embeds.mean(1))
        hits.append((logits.argmax(-1) == target).float().mean().item())
        return torch.nn.functional.cross_entropy(logits, target, weight=class_weight)

    if cfg.freeze_vision:
        find_vision_tower(model).requires_grad_(False).eval()

    # Stage 1: the vision side alone. A from-scratch ViT learns "two streams" slowly from one answer token;
    # a layout head on the pooled image tokens and a per-patch stream-border head teach it in minutes.
    seam_maps = 2 if cfg.dense_orientation else 1
    dense_head = torch.nn.Linear(family.patch_width(model), 2 * seam_maps)
    vision_params = [(n, p) for n, p in model.named_parameters() if not n.startswith((family.language_model, "lm_head"))]
    heads = [("aux.weight", aux_head.weight), ("aux.bias", aux_head.bias),
             ("dense.weight", dense_head.weight), ("dense.bias", dense_head.bias)]
    opt, sched = _optimizer(vision_params + heads, cfg, cfg.vision_steps)
    hits: list[float] = []
    batches = stream_batches(cfg.seed + 1, cfg)
    for step in range(0 if cfg.freeze_vision else cfg.vision_steps):
        specs, frames = next(batches)
        # Drawn only when asked for, so that a recipe without it draws the same numbers as before it existed.
        turned = rng.random(len(frames)) < cfg.transpose_share if cfg.transpose_share else [False] * len(frames)
        frames = [transpose_frame(f) if t else f for f, t in zip(frames, turned)]
        pixels = processor.image_processor(images=frames, return_tensors="pt")["pixel_values"]
        visual = family.encode(model, pixels)
        patches = family.patch_states(visual)
        grid = int(round(patches.shape[1] ** 0.5))
        borders = [boundary_map(sp, grid, cfg.dense_orientation) for sp in specs]
        borders = torch.stack([transpose_borders(b, grid) if t else b for b, t in zip(borders, turned)])
        layouts = [sp.truth.layout for sp in specs]
        layouts = [TRANSPOSED_LAYOUT.get(name, name) if t else name for name, t in zip(layouts, turned)]
        logits = dense_head(patches).reshape(len(specs), -1, seam_maps, 2).transpose(1, 2)  # (B, maps, P, 2)
        dense = torch.nn.functional.cross_entropy(
            logits.reshape(-1, 2), borders.reshape(-1), weight=torch.tensor([1.0, 4.0])
        ) * seam_maps  # each map's loss at the weight one map had
        loss = aux_loss(visual, layouts, hits) + cfg.dense_weight * dense
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in vision_params + heads], 1.0)
        opt.step()
        sched.step()
        if (step + 1) % cfg.log_every == 0:
            print(f"[{kind}] vision step {step + 1}/{cfg.vision_steps} loss {loss.item():.3f} "
                  f"layout acc {np.mean(hits[-cfg.log_every:]):.2f} {time.time() - started:.0f}s", flush=True)

    # Stage 2: the whole model on the task mix, the layout head still attached.
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad] + heads[:2]
    opt, sched = _optimizer(params, cfg, cfg.steps)
    losses, hits = [], []
    for step in range(cfg.steps):
        specs, frames = next(batches)
        truths = [sp.truth for sp in specs]
        pixels = processor.image_processor(images=frames, return_tensors="pt")["pixel_values"]
        qa, rows = [], []
        for i, truth in enumerate(truths):
            count = cfg.sludge_rows if truth.sludge else cfg.single_rows
            asked: list[str] = []
            for _ in range(count):
                try:
                    pair = pick_task(rng, truth, cfg.task_mix, exclude=asked[-1] if asked else None)
                except ValueError:
                    break
                asked.append(task_of(pair))
                qa.append(pair)
                rows.append(i)
        ids, att, labels = build_training_rows(lm, qa)
        visual = family.encode(model, pixels)
        loss = answer_loss(lm, visual.embeds, torch.tensor(rows), ids, att, labels)
        loss = loss + cfg.aux_weight * aux_loss(visual, [t.layout for t in truths], hits)
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
        **evaluate_heldout(lm, cfg.seed, cfg.eval_frames, cfg.pool),
    }
    print(f"[{kind}] {json.dumps(figures)}", flush=True)
    return lm, figures


def style_of(cfg: TrainTinyConfig) -> synthetic.StreamStyle:
    """The streams' look the config asks for (StreamStyle refuses it out of range).

    >>> style_of(TrainTinyConfig(ungraded_share=0.5)).ungraded_share
    0.5
    """
    return synthetic.StreamStyle(game_last_scale=cfg.game_last_scale, ungraded_share=cfg.ungraded_share)


def draw_batch(rng: np.random.Generator, n: int, cfg: TrainTinyConfig):
    """n frame specs and their pixels: balanced (see TrainTinyConfig.balanced) and degraded alike, or
    independent frames of the pool (about half sludge); either way each frame's size is drawn from cfg.sizes."""
    if cfg.balanced:
        pairs = synthetic.draw_balanced_specs(rng, n, cfg.pool, cfg.sizes, cfg.size_weights, cfg.layout_weights,
                                              cfg.source_mix or None, style_of(cfg))
    else:
        weights = np.array(cfg.size_weights, dtype=np.float64)
        picks = rng.choice(len(cfg.sizes), size=n, p=weights / weights.sum())
        pairs = [(synthetic.draw_frame_spec(rng, synthetic.pick_layout(rng, 0.5, cfg.layout_weights), cfg.sizes[k],
                                            cfg.pool, source_mix=cfg.source_mix or None, style=style_of(cfg)),
                  cfg.sizes[k]) for k in picks]
    specs = [spec for spec, _ in pairs]
    frames = [synthetic.render_frame(spec, size) for spec, size in pairs]
    if cfg.pool in synthetic.REAL_POOLS:
        frames = [synthetic.degrade_frame(rng, frame) for frame in frames]
    if cfg.recolour_share:
        frames = [synthetic.recolour_frame(rng, frame) if rng.random() < cfg.recolour_share else frame
                  for frame in frames]
    return specs, frames


class BatchStream(torch.utils.data.IterableDataset):
    """Endless training batches drawn from one seed, rendered in a worker process while the model trains."""

    def __init__(self, seed: int, cfg: TrainTinyConfig):
        self.seed, self.cfg = seed, cfg

    def __iter__(self):
        rng = np.random.default_rng(self.seed)
        while True:
            yield draw_batch(rng, self.cfg.batch_size, self.cfg)


def stream_batches(seed: int, cfg: TrainTinyConfig):
    """An iterator of (specs, frames) batches, rendered by `cfg.loader_workers` processes."""
    if cfg.loader_workers <= 0:
        return iter(BatchStream(seed, cfg))
    loader = torch.utils.data.DataLoader(BatchStream(seed, cfg), batch_size=None, num_workers=1,
                                         prefetch_factor=4, persistent_workers=False)
    return iter(loader)


# ---------------------------------------------------------------- save


def command_of(cfg: TrainTinyConfig) -> str:
    """The command line that trains `cfg`: every field that differs from the default, as its flag.

    >>> command_of(TrainTinyConfig(kinds=("blip2",), steps=10))
    'python -m training.train_tiny --kinds blip2 --steps 10'
    """
    default = TrainTinyConfig()
    parts = ["python -m training.train_tiny"]
    for f in fields(TrainTinyConfig):
        value = getattr(cfg, f.name)
        if value == getattr(default, f.name) or f.name in ("out", "threads", "log_every"):
            continue
        if f.name == "kinds":
            text = " ".join(value)
        elif isinstance(value, (tuple, dict)):
            text = "'" + json.dumps(value) + "'"
        else:
            text = str(value).lower() if isinstance(value, bool) else str(value)
        parts.append(f"--{f.name.replace('_', '-')} {text}")
    return " ".join(parts)


def lineage_of(cfg: TrainTinyConfig, family) -> list[str]:
    """The steps that made a checkpoint: those of the one it continued from (`init_from`), then this one."""
    history: list[str] = []
    if cfg.init_from:
        folder = family.embedded if cfg.init_from == "embedded" else Path(cfg.init_from)
        record = folder / TRAINING_RECORD
        previous = json.loads(record.read_text()) if record.is_file() else {}
        history = list(previous.get("history") or [])
        if not history and previous:
            c = previous["config"]
            history = [(f"`python -m training.train_tiny --kinds {family.name} --vision-steps {c['vision_steps']} "
                        f"--steps {c['steps']} --batch-size {c['batch_size']} --pool train` (from scratch: "
                        f"scikit-image's photos and procedural textures, portrait 448x252 frames only, "
                        f"{c.get('vision_layers', 4)} vision layers; "
                        f"{previous['figures']['train_seconds']:.0f} s)")]
    grown = f", vision tower grown to {cfg.vision_layers} layers (new layers start as identities)" \
        if cfg.vision_layers and cfg.init_from else (f", {cfg.vision_layers} vision layers" if cfg.vision_layers else "")
    start = "continued from the checkpoint above" if cfg.init_from else "from scratch"
    return history + [f"`{command_of(cfg)}` ({start}{grown}; pool {cfg.pool})"]


def save_checkpoint(lm: LoadedModel, folder: Path, kind: str, cfg: TrainTinyConfig, tiny: TinyConfig,
                    figures: dict) -> None:
    """Write weights, processor (tokenizer + chat template), training.json and the model card."""
    folder.mkdir(parents=True, exist_ok=True)
    lm.model.save_pretrained(folder)
    lm.processor.save_pretrained(folder)
    stale = folder / REAL_FOOTAGE_RECORD  # measured on the weights this folder held before
    if stale.is_file():
        stale.unlink()
    family = find_family(kind)
    _, stack = find_vision_layers(lm.model)
    layers = {"llava_vision_layers" if family.name == "llava" else "vision_layers": len(stack)}
    tiny = replace(tiny, **layers)
    params = sum(p.numel() for p in lm.model.parameters())
    (folder / TRAINING_RECORD).write_text(json.dumps(
        {"config": asdict(cfg), "tiny": asdict(tiny), "figures": figures, "parameters": params,
         "command": command_of(cfg), "history": lineage_of(cfg, family), "sources": imagery.describe_pools()},
        indent=2, default=str) + "\n")
    write_model_card(folder, kind)


# ---------------------------------------------------------------- main


def parse_config(argv: list[str] | None = None) -> TrainTinyConfig:
    """CLI flags (one per config field) or --config FILE.json."""
    parser = argparse.ArgumentParser(prog="python -m training.train_tiny", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="JSON file with TrainTinyConfig fields")
    for f in fields(TrainTinyConfig):
        if f.name == "task_mix":
            parser.add_argument("--task-mix", type=json.loads, help="JSON object, e.g. '{\"classify\": 0.5, ...}'")
        elif f.name == "layout_weights":
            parser.add_argument("--layout-weights", type=json.loads,
                                help="JSON object, e.g. '{\"vertical\": 0.25, ...}'")
        elif f.name == "source_mix":
            parser.add_argument("--source-mix", type=json.loads,
                                help="JSON object, e.g. '{\"picture\": 0.4, \"footage\": 0.35, ...}'")
        elif f.name == "kinds":
            parser.add_argument("--kinds", nargs="+", choices=sorted(family.name for family in FAMILIES.values()))
        elif isinstance(f.default, tuple):
            parser.add_argument("--" + f.name.replace("_", "-"), type=json.loads, help="JSON list")
        elif isinstance(f.default, bool):
            parser.add_argument("--" + f.name.replace("_", "-"), type=lambda v: v.lower() in ("1", "true", "yes"))
        else:
            parser.add_argument("--" + f.name.replace("_", "-"), type=type(f.default))
    args = vars(parser.parse_args(argv))
    values = json.loads(Path(args.pop("config")).read_text()) if args.get("config") else {}
    values.update({k: v for k, v in args.items() if v is not None and k != "config"})
    for name in ("kinds", "size_weights"):
        if name in values:
            values[name] = tuple(values[name])
    if "sizes" in values:
        values["sizes"] = tuple(tuple(size) for size in values["sizes"])
    return TrainTinyConfig(**values)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(argv)
    try:
        # A pool with a package missing is refused before minutes of training, not at the first frame drawn,
        # and so is its held-out twin the evaluation draws from.
        for pool in (cfg.pool, synthetic.find_heldout_pool(cfg.pool)):
            synthetic.pool_sources(pool)
    except ValueError as error:
        raise SystemExit(f"python -m training.train_tiny: {error}") from None
    torch.set_num_threads(cfg.threads)
    tiny = TinyConfig(vocab_size=cfg.vocab_size)
    if cfg.vision_layers and not cfg.init_from:
        tiny = replace(tiny, vision_layers=cfg.vision_layers, llava_vision_layers=cfg.vision_layers)
    tok = None if cfg.init_from else build_tokenizer(build_corpus(cfg.seed), cfg.vocab_size)
    for kind in cfg.kinds:
        lm, figures = train_family(kind, tok, cfg, tiny)
        embedded = find_family(kind).embedded
        folder = Path(cfg.out) / embedded.name if cfg.out else embedded
        save_checkpoint(lm, folder, kind, cfg, tiny, figures)
        print(f"[{kind}] saved to {folder}", flush=True)


if __name__ == "__main__":
    main()
