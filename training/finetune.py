"""Fine-tune a vqwen-family checkpoint with LoRA on a training export of the annotation store.

Reads top to bottom: seed -> model -> data -> train -> eval -> save. The recipe is the vqwen card's
stage 2: LoRA (r 16, alpha 32, dropout 0.15) on the language model's q/k/v/o/gate/up/down projections,
the vision->LM projector (BLIP-2 ``language_projection``, LLaVA ``multi_modal_projector``) trained fully
at its own, lower learning rate, a cosine schedule with 3 % warmup, an evaluation every k steps and the
step with the lowest eval loss kept. The vision tower (and BLIP-2's Q-Former) stay frozen, so their
output per frame is computed once and reused by every epoch.

``--adapt`` can also adapt the bridge between the vision tower and the LM: LoRA on the projector instead of
training it whole (``projector-lora``), on the Q-Former's attention (``qformer``, BLIP-2) or on the last
``--vision-blocks`` blocks of the vision tower (``vision``). The frozen part below the lowest adapted one is
still computed once per frame (``FeatureBank``); the adapted rest runs in every step.

Under ``data/checkpoints/<name>/`` it writes:

    config.json, model.safetensors, processor files   the merged checkpoint (merge_and_unload), loaded by
                                                      the app and ``python -m core`` like any model
    adapter/                                          the LoRA adapter and projector (PeftModel format)
    README.md                                         a model card with the eval table
    report/eval.json, report/eval.md                  the card's table on the held-out split, before/after
    report/finetune.json, report/train_log.jsonl      config + lineage, the loss log

and registers the new version in the store, with its lineage (export snapshot, base model, config,
metrics) and its predictions on the held-out frames, so the Review tab can set it beside the base.

    python -m training.finetune --export data/exports/run1 --name lora-run1
    python -m training.finetune --config finetune.json --device cuda --batch-size 16 --grad-accum 8
    python -m training.finetune --export data/exports/run1 --name bridge-run1 --adapt lm projector qformer
"""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

import annotations as store
from core.config import (
    EMBEDDED_BLIP2,
    REPO_ROOT,
    EngineConfig,
    ModelSpec,
    load_settings,
)
from core.engine import LoadedModel, load_model, prepare_pixels
from core.families import ADAPT_PARTS, LM_LORA_TARGETS, FeatureStage, ModelFamily, feature_stage
from core.identity import ModelIdentity
from training.cli import parse_config
from training.evaluate import (
    evaluate_records,
    format_markdown,
    load_image,
    read_export,
    write_report,
)
from training.tasks import (
    CARD_TASK_MIX,
    answer_loss,
    build_training_rows,
    pick_task,
    task_of,
)

LORA_TARGETS = LM_LORA_TARGETS
# The card's recipe: LoRA on the language model, the projector trained whole.
CARD_ADAPT = ("lm", "projector")
# The parts trained with LoRA (peft needs at least one); "projector" trains whole, as a peft modules_to_save.
LORA_PARTS = ("lm", "projector-lora", "qformer", "vision")


@dataclass
class FinetuneConfig:
    """One fine-tuning run. Defaults are the vqwen card's stage-2 recipe; each field says why."""

    # Folder written by annotations.export_training_set (training.jsonl + manifest.json).
    export: str = ""
    # The checkpoint to adapt: a local folder or a hub id. The embedded model works offline.
    base: str = str(EMBEDDED_BLIP2)
    base_revision: str | None = None
    # Folder name of the new version under out_dir; "" names it after the base and the export snapshot.
    name: str = ""
    # The app lists the folders under data/checkpoints as fine-tuned model versions.
    out_dir: str = str(REPO_ROOT / "data" / "checkpoints")
    seed: int = 0
    # "auto" picks cuda, then mps, then cpu; bf16 on cuda, fp32 elsewhere (as core.engine loads models).
    device: str = "auto"
    # CPU threads for torch; 0 keeps torch's default.
    threads: int = 0

    # --- data
    # One random task per frame per epoch, in the card's proportions; tasks a frame cannot answer (layout
    # of a non-sludge frame, describe without a description) are skipped and the rest renormalised.
    task_mix: dict = field(default_factory=lambda: dict(CARD_TASK_MIX))
    # The card draws one task per frame; more rows per frame reuse its vision pass at no extra cost.
    tasks_per_frame: int = 1
    # Which sludge labels to learn from: a person's correction, imported raw ground truth, or a model's
    # own pseudo-label (leave "model" out to train on human labels only).
    provenance: tuple[str, ...] = ("corrected", "raw", "model")
    # The export splits by video, so no video's frames are both trained on and evaluated on.
    train_split: str = "train"
    eval_split: str = "val"
    test_split: str = "test"

    # --- LoRA on the language model
    lora_r: int = 16
    lora_alpha: int = 32
    # 0.15 as on the card: the fine-tuning sets are small (thousands of frames) and easy to overfit.
    lora_dropout: float = 0.15
    # Matched only under the language model, because the vision tower and Q-Former of some classes have
    # layers with the same names (CLIP's q_proj / k_proj / v_proj).
    lora_targets: tuple[str, ...] = LORA_TARGETS

    # --- what adapts
    # The card's recipe is "lm" (LoRA on the language model, above) and "projector" (the projector trained
    # whole at projector_lr). The other parts adapt the bridge, for footage the frozen vision side reads badly:
    # "projector-lora" LoRA on the projector's Linear layers instead of training it whole (fewer weights to
    # overfit a small set); "qformer" (BLIP-2 only) LoRA on the Q-Former's self- and cross-attention
    # query/key/value/output, to re-weight which patches the image tokens gather; "vision" LoRA on the
    # attention and MLP of the tower's last vision_blocks blocks, for visual cues the frozen tower misses.
    # All LoRA parts share lora_r/alpha/dropout and lr. The frozen part below the lowest adapted one is what
    # the feature cache holds; each part lower down makes every step run more of the model.
    adapt: tuple[str, ...] = CARD_ADAPT
    # With "vision": how many of the tower's last blocks (the last ones its features are read from) adapt.
    # Two re-shape the top features at a modest cost; each further block runs in every step.
    vision_blocks: int = 2

    # --- optimisation
    # The LoRA matrices start at zero and need the larger step; the projector is already aligned (stage 1)
    # and only needs nudging, so it moves ten times slower.
    lr: float = 2e-4
    projector_lr: float = 2e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    # The card trains 10 epochs at a global batch of 128 (batch_size x grad_accum); max_steps > 0 overrides.
    epochs: float = 10.0
    max_steps: int = 0
    # Frames per forward; raise it on a GPU until memory is full, and lower grad_accum to keep 128.
    batch_size: int = 16
    grad_accum: int = 8
    max_grad_norm: float = 1.0
    # Eval loss every this many optimizer steps; the step with the lowest one is what gets saved.
    eval_every: int = 25
    log_every: int = 5
    # The frozen vision output of every frame is kept in host memory when it fits in this many GB; above it,
    # it is recomputed every step. By default that is the projector's input (BLIP-2: 32 x 768 per frame,
    # ~50 KB in bf16); with "qformer" or "vision" adapted it is a hidden state of the tower (BLIP-2 ViT-g:
    # 257 x 1408, ~0.7 MB; LLaVA's CLIP-L/336: 577 x 1024, ~1.2 MB per frame).
    cache_vision_gb: float = 8.0
    eval_batch_size: int = 16
    progress: bool = True

    # --- the store
    # Register the new version (and the base's and its predictions on the held-out frames) in this store;
    # "" = the app's store (SLUDGELENS_DB or data/sludgelens.db).
    db: str = ""
    media: str = ""
    register: bool = True

    def __post_init__(self):
        # A JSON file may give a list, a caller one string ("lm,qformer" or "lm qformer"); the checks that
        # need no model run at once, so a bad combination fails before anything loads.
        if isinstance(self.adapt, str):
            self.adapt = tuple(part for part in re.split(r"[,\s]+", self.adapt) if part)
        self.adapt = tuple(self.adapt)
        check_adapt(self.adapt, self.vision_blocks)


def check_adapt(parts: Sequence[str], vision_blocks: int = 2, family: ModelFamily | None = None,
                model=None) -> None:
    """Refuse a combination of ``--adapt`` parts that cannot train, with the reason; with a family (and its
    model), also a part the family does not have and more vision blocks than its tower has.

    >>> check_adapt(("lm", "projector"))
    >>> check_adapt(("projector", "projector-lora"))
    Traceback (most recent call last):
    ...
    ValueError: --adapt projector trains the projector whole and projector-lora puts LoRA on it; choose one
    """
    unknown = [p for p in parts if p not in ADAPT_PARTS]
    if unknown:
        raise ValueError(f"--adapt {' '.join(unknown)}: unknown part; choose from {', '.join(ADAPT_PARTS)}")
    if len(set(parts)) != len(parts):
        raise ValueError(f"--adapt {' '.join(parts)}: a part is named twice")
    if "projector" in parts and "projector-lora" in parts:
        raise ValueError("--adapt projector trains the projector whole and projector-lora puts LoRA on it; "
                         "choose one")
    if not set(parts) & set(LORA_PARTS):
        raise ValueError(f"--adapt {' '.join(parts) or '(nothing)'}: name at least one LoRA part "
                         f"({', '.join(LORA_PARTS)}); the projector alone is not a LoRA run")
    if "vision" in parts and vision_blocks < 1:
        raise ValueError(f"--vision-blocks {vision_blocks}: adapting the vision tower needs at least one block")
    if family is not None:
        for part in parts:
            family.check_part(part)
            if part != "projector" and model is not None:
                family.adapter_targets(model, part, vision_blocks)


@dataclass(frozen=True)
class FrameLabels:
    """The labels of one exported frame, in the shape the task mix reads (like synthetic.FrameTruth)."""

    sludge: bool
    layout: str
    description: str
    explanation: str

    @classmethod
    def of(cls, record: dict) -> "FrameLabels":
        return cls(bool(record["sludge"]), record.get("layout") or "none", record.get("description") or "",
                   record.get("explanation") or "")


# ---------------------------------------------------------------- the model, split where its frozen part ends


def frozen_features(lm: LoadedModel, pixels: torch.Tensor, stage: FeatureStage = FeatureStage()) -> torch.Tensor:
    """The output of the frozen part of the vision side, cut at `stage` as the model's family
    (``lm.family.frozen_features``) cuts it: by default the projector's input (BLIP-2: Q-Former queries;
    LLaVA: selected patch features), else a hidden state of the vision tower.

    >>> frozen_features(lm, prepare_pixels(lm, frames)).shape  # doctest: +SKIP
    torch.Size([4, 32, 96])
    >>> frozen_features(lm, prepare_pixels(lm, frames), FeatureStage("qformer")).shape  # doctest: +SKIP
    torch.Size([4, 257, 128])
    """
    with torch.no_grad():
        return lm.family.frozen_features(lm.model, pixels, stage)


def project(lm: LoadedModel, features: torch.Tensor, stage: FeatureStage = FeatureStage()) -> torch.Tensor:
    """Frozen features of `stage` -> the image tokens the LM reads: the rest of the vision side
    (``lm.family.finish_features``; nothing at the default stage), then the projector.

    ``project(lm, frozen_features(lm, pixels, stage), stage)`` equals ``lm.family.encode(lm.model, pixels).embeds``.

    >>> project(lm, frozen_features(lm, pixels)).shape  # doctest: +SKIP
    torch.Size([4, 32, 128])
    """
    features = lm.family.finish_features(lm.model, features.to(lm.device), stage)
    projector = lm.model.get_submodule(lm.family.projector)
    # Under peft a projector trained whole holds the frozen original and the trainable copy: feed the copy's
    # dtype. A LoRA layer runs its frozen base weight on the input (and casts for its own matrices).
    weights = [(n, p) for n, p in projector.named_parameters() if "lora_" not in n]
    params = [p for _, p in weights if p.requires_grad] or [p for _, p in weights]
    return projector(features.to(params[0].device, params[0].dtype))


def lora_target_pattern(lm: LoadedModel, targets: Sequence[str]) -> str:
    """A regex peft matches against full module names: the target projections of the language model only.

    >>> lora_target_pattern(lm, ["q_proj", "v_proj"])  # doctest: +SKIP
    '^language_model\\\\..*\\\\.(q_proj|v_proj)$'
    """
    return lm.family.adapter_targets(lm.model, "lm", lm_targets=targets)


def adapter_pattern(lm: LoadedModel, cfg: FinetuneConfig) -> str:
    """One regex for peft's ``target_modules``: the family's LoRA targets of every adapted LoRA part.

    >>> adapter_pattern(lm, FinetuneConfig(adapt=("lm", "qformer")))  # doctest: +SKIP
    '^language_model\\\\..*\\\\.(q_proj|...|down_proj)$|^qformer\\\\.encoder...$'
    """
    return "|".join(lm.family.adapter_targets(lm.model, part, cfg.vision_blocks, cfg.lora_targets)
                    for part in cfg.adapt if part in LORA_PARTS)


def attach_lora(lm: LoadedModel, cfg: FinetuneConfig):
    """Wrap the model with LoRA on the adapted parts (``cfg.adapt``; the card's: the LM) and, with "projector",
    a trainable copy of the projector; returns the PeftModel.

    The adapter is injected into ``lm.model``'s own modules, so the app's forward functions train it.
    Trainable weights are kept in fp32 (bf16 compute for the frozen rest on a GPU).

    >>> peft_model = attach_lora(lm, FinetuneConfig())  # doctest: +SKIP
    >>> peft_model.print_trainable_parameters()  # doctest: +SKIP
    """
    from peft import LoraConfig, get_peft_model

    check_adapt(cfg.adapt, cfg.vision_blocks, lm.family, lm.model)
    config = LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=adapter_pattern(lm, cfg),
        modules_to_save=[lm.family.projector.rsplit(".", 1)[-1]] if "projector" in cfg.adapt else None,
        bias="none",
    )
    peft_model = get_peft_model(lm.model, config)
    for param in peft_model.parameters():
        if param.requires_grad:
            param.data = param.data.float()
    return peft_model


def set_train_mode(lm: LoadedModel, training: bool, parts: Sequence[str] = CARD_ADAPT, vision_blocks: int = 2) -> None:
    """Dropout on in the adapted parts only (``lm.family.trained_modules``: the LM and projector, the adapted
    layers of the Q-Former and vision tower); the frozen rest stays in eval, as when its output was cached.

    >>> set_train_mode(lm, True, ("lm", "qformer"))  # doctest: +SKIP
    """
    lm.model.eval()
    if training:
        for name in lm.family.trained_modules(lm.model, parts, vision_blocks):
            lm.model.get_submodule(name).train()


# ---------------------------------------------------------------- data


class FeatureBank:
    """Frozen features per frame image at one stage (the output of the last frozen part), computed once and
    kept when they fit in ``limit_gb``.

    Keys are the image's sha256 (or its path), so two runs over the same export and stage share one bank.

    >>> bank = FeatureBank(lm, limit_gb=8.0)  # doctest: +SKIP
    >>> bank.get(records[:4]).shape  # doctest: +SKIP
    torch.Size([4, 32, 96])
    >>> FeatureBank(lm, stage=FeatureStage("vision", 2)).get(records[:4]).shape  # doctest: +SKIP
    torch.Size([4, 257, 128])
    """

    def __init__(self, lm: LoadedModel, limit_gb: float = 8.0, batch_size: int = 16,
                 stage: FeatureStage = FeatureStage()):
        self.lm, self.limit_bytes, self.batch_size, self.stage = lm, limit_gb * 2**30, batch_size, stage
        self.cache: dict[str, torch.Tensor] = {}
        self.keep = True

    def use(self, lm: LoadedModel, stage: FeatureStage) -> None:
        """Serve `lm` (a fresh load of the same base) at `stage`; what was kept at another stage is dropped."""
        self.lm = lm
        if stage != self.stage:
            self.stage, self.keep = stage, True
            self.cache.clear()

    @staticmethod
    def key(record: dict) -> str:
        return record.get("image_sha256") or record["image"]

    def fill(self, records: Sequence[dict], progress: bool = False) -> None:
        """Compute and keep the features of every record, or stop keeping them once they would not fit."""
        todo = list({self.key(r): r for r in records if self.key(r) not in self.cache}.values())
        bar = tqdm(total=len(todo), desc=f"cache {self.stage.describe()}", disable=not progress, leave=False)
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            feats = self._compute(chunk)
            per_frame = feats[0].numel() * feats.element_size()
            if per_frame * (len(self.cache) + len(todo) - start) > self.limit_bytes:
                self.keep = False
                self.cache.clear()
                bar.close()
                return
            for record, feat in zip(chunk, feats):
                self.cache[self.key(record)] = feat.cpu()
            bar.update(len(chunk))
        bar.close()

    def _compute(self, records: Sequence[dict]) -> torch.Tensor:
        pixels = prepare_pixels(self.lm, [load_image(r["image"]) for r in records])
        return frozen_features(self.lm, pixels, self.stage)

    def get(self, records: Sequence[dict]) -> torch.Tensor:
        """Features of these records at the bank's stage, (B, T, H), on the model's device."""
        if self.keep and all(self.key(r) in self.cache for r in records):
            return torch.stack([self.cache[self.key(r)] for r in records]).to(self.lm.device)
        return self._compute(records)


def make_examples(records: Sequence[dict], mix: dict[str, float], rng: np.random.Generator,
                  tasks_per_frame: int = 1) -> list[tuple[int, str, str]]:
    """(record index, question, answer) rows: `tasks_per_frame` distinct tasks per frame from the mix.

    >>> make_examples([{"sludge": False, "layout": "none"}], {"classify": 1.0}, np.random.default_rng(0))
    [(0, 'Is this sludge content? Answer yes or no.', 'no')]
    """
    rows = []
    for i, record in enumerate(records):
        labels, used = FrameLabels.of(record), set()
        for _ in range(tasks_per_frame):
            remaining = {t: w for t, w in mix.items() if t not in used}
            if not remaining:
                break
            qa = pick_task(rng, labels, remaining)
            used.add(task_of(qa))
            rows.append((i, *qa))
    return rows


def batch_loss(lm: LoadedModel, bank: FeatureBank, records: Sequence[dict],
               rows: Sequence[tuple[int, str, str]]) -> tuple[torch.Tensor, int]:
    """Mean answer-token loss of some example rows, and how many answer tokens it averages over."""
    frames = sorted({i for i, _, _ in rows})
    where = {i: k for k, i in enumerate(frames)}
    visual = project(lm, bank.get([records[i] for i in frames]), bank.stage)
    ids, att, labels = build_training_rows(lm, [(q, a) for _, q, a in rows])
    rows_to_frame = torch.tensor([where[i] for i, _, _ in rows], device=lm.device)
    loss = answer_loss(lm, visual, rows_to_frame, ids.to(lm.device), att.to(lm.device), labels.to(lm.device))
    return loss, int((labels[:, 1:] != -100).sum())


def answer_tokens(lm: LoadedModel, rows: Sequence[tuple[int, str, str]]) -> int:
    """How many tokens the loss of these rows averages over: each answer plus its end token."""
    tok = lm.tokenizer
    return sum(len(tok.encode(answer, add_special_tokens=False)) + 1 for _, _, answer in rows)


def eval_loss(lm: LoadedModel, bank: FeatureBank, records: Sequence[dict], rows: Sequence[tuple[int, str, str]],
              batch_size: int) -> float | None:
    """Answer-token-weighted mean loss over fixed eval rows, without dropout; None when there are none."""
    if not rows:
        return None
    set_train_mode(lm, False)
    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            loss, n = batch_loss(lm, bank, records, rows[start:start + batch_size])
            total, tokens = total + loss.item() * n, tokens + n
    return total / max(tokens, 1)


# ---------------------------------------------------------------- train


@dataclass
class TrainResult:
    """What a training run did: steps, the loss log, the eval losses and which step was kept."""

    steps: int
    losses: list[float]
    eval_losses: dict[int, float]
    best_step: int | None
    best_eval_loss: float | None
    seconds: float


def _batches(records: Sequence[dict], cfg: FinetuneConfig, rng: np.random.Generator) -> Iterator[list]:
    """Endless micro-batches of example rows; each epoch reshuffles frames and redraws their tasks."""
    while True:
        order = rng.permutation(len(records))
        for start in range(0, len(order), cfg.batch_size):
            picked = [int(i) for i in order[start:start + cfg.batch_size]]
            rows = make_examples([records[i] for i in picked], cfg.task_mix, rng, cfg.tasks_per_frame)
            yield [(picked[i], q, a) for i, q, a in rows]


def total_steps(n_frames: int, cfg: FinetuneConfig) -> int:
    """Optimizer steps of a run: max_steps, else epochs x ceil(frames / (batch_size x grad_accum)).

    >>> total_steps(8487, FinetuneConfig(batch_size=16, grad_accum=8))  # the card: 10 epochs of 67 steps
    670
    """
    if cfg.max_steps > 0:
        return cfg.max_steps
    per_epoch = math.ceil(n_frames / (cfg.batch_size * cfg.grad_accum))
    return max(1, math.ceil(cfg.epochs * per_epoch))


def train(lm: LoadedModel, peft_model, bank: FeatureBank, train_records: Sequence[dict],
          eval_records: Sequence[dict], cfg: FinetuneConfig, log_path: Path | None = None) -> TrainResult:
    """AdamW (every LoRA at ``lr``, a projector trained whole at ``projector_lr``), cosine with warmup, gradient
    accumulation, eval loss every ``eval_every`` steps; the trainable weights of the best eval step are restored
    at the end.

    >>> result = train(lm, peft_model, bank, train_records, eval_records, cfg)  # doctest: +SKIP
    >>> result.best_step, result.losses[0] > result.losses[-1]  # doctest: +SKIP
    (50, True)
    """
    from transformers import get_cosine_schedule_with_warmup

    if not train_records:
        raise ValueError("no training frames: the export's train split is empty after the provenance filter")
    rng = np.random.default_rng(cfg.seed)
    projector_name = lm.family.projector.rsplit(".", 1)[-1]
    named = [(n, p) for n, p in peft_model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if "lora_" in n], "lr": cfg.lr},
        {"params": [p for n, p in named if "lora_" not in n and projector_name in n], "lr": cfg.projector_lr},
    ]
    groups = [g for g in groups if g["params"]]
    if sum(len(g["params"]) for g in groups) != len(named):
        raise RuntimeError("a trainable weight is neither LoRA nor the projector; it would not be optimised")
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, fused=lm.device.type == "cuda")
    steps = total_steps(len(train_records), cfg)
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(cfg.warmup_ratio * steps), steps)
    eval_rows = make_examples(eval_records, cfg.task_mix, np.random.default_rng(cfg.seed + 1), cfg.tasks_per_frame)

    log = open(log_path, "w", encoding="utf-8") if log_path else None
    started = time.time()
    losses: list[float] = []
    evals: dict[int, float] = {}
    best: tuple[float, int, dict] | None = None

    def evaluate_at(step: int) -> None:
        nonlocal best
        value = eval_loss(lm, bank, eval_records, eval_rows, cfg.eval_batch_size)
        if value is None:
            return
        evals[step] = value
        if log:
            log.write(json.dumps({"step": step, "eval_loss": round(value, 6)}) + "\n")
        # Step 0 is the base model: logged for reference, never "the best checkpoint" (as in HF's Trainer).
        if step > 0 and (best is None or value < best[0]):
            best = (value, step, {n: p.detach().clone() for n, p in named})

    evaluate_at(0)
    batches = _batches(train_records, cfg, rng)
    bar = tqdm(total=steps, desc=f"fine-tune {lm.family.name}", disable=not cfg.progress)
    try:
        for step in range(1, steps + 1):
            set_train_mode(lm, True, cfg.adapt, cfg.vision_blocks)
            optimizer.zero_grad(set_to_none=True)
            micro = [next(batches) for _ in range(cfg.grad_accum)]
            counts = [answer_tokens(lm, rows) for rows in micro]
            step_loss, step_tokens = 0.0, sum(counts)
            for rows, n in zip(micro, counts):
                loss, _ = batch_loss(lm, bank, train_records, rows)
                # Token-weighted across micro-batches: the gradient of one batch holding all their rows.
                (loss * n / max(step_tokens, 1)).backward()
                step_loss += loss.item() * n
            torch.nn.utils.clip_grad_norm_([p for _, p in named], cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            losses.append(step_loss / max(step_tokens, 1))
            if log:
                log.write(json.dumps({"step": step, "loss": round(losses[-1], 6),
                                      "lr": scheduler.get_last_lr()[0]}) + "\n")
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if cfg.log_every and step % cfg.log_every == 0:
                tqdm.write(f"step {step}/{steps} loss {np.mean(losses[-cfg.log_every:]):.4f} "
                           f"lr {scheduler.get_last_lr()[0]:.2e} {time.time() - started:.0f}s")
            if step % cfg.eval_every == 0 or step == steps:
                evaluate_at(step)
                if step in evals:
                    tqdm.write(f"step {step} eval loss {evals[step]:.4f}")
    finally:
        bar.close()
        if log:
            log.close()
    set_train_mode(lm, False)
    if best is not None:
        with torch.no_grad():
            for n, p in named:
                p.copy_(best[2][n])
    return TrainResult(steps=steps, losses=losses, eval_losses=evals, best_step=best[1] if best else None,
                       best_eval_loss=best[0] if best else None, seconds=round(time.time() - started, 1))


# ---------------------------------------------------------------- save and register


def save_checkpoint(lm: LoadedModel, peft_model, folder: Path) -> None:
    """The adapter under ``folder/adapter`` (save_pretrained), then the merged model and processor in ``folder``.

    >>> save_checkpoint(lm, peft_model, Path("data/checkpoints/lora-run1"))  # doctest: +SKIP
    """
    folder.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(folder / "adapter")
    merged = peft_model.merge_and_unload()
    merged.to(lm.dtype)
    merged.save_pretrained(folder)
    lm.processor.save_pretrained(folder)
    lm.model = merged


def open_run_store(cfg: FinetuneConfig):
    """The store named by the config, else the app's (SLUDGELENS_DB / data/sludgelens.db)."""
    settings = load_settings()
    db_path = Path(cfg.db) if cfg.db else settings.db_path
    media = Path(cfg.media) if cfg.media else (db_path.parent / "media" if cfg.db else settings.media_dir)
    return store.open_store(db_path, media)


def register_version(db, identity: ModelIdentity, lineage: dict | None = None) -> str:
    """Register a model version under the id the app stores its predictions by (the model's identity).

    >>> lm = load_model("data/checkpoints/lora-run1")  # doctest: +SKIP
    >>> register_version(db, lm.identity, {"base_id": "models/tiny-vqwen-qformer@3fa9"})  # doctest: +SKIP
    'data/checkpoints/lora-run1@a1b2c3d4e5f6'
    """
    return store.register_model(db, identity.id, identity.source, identity.revision, lineage)


def store_predictions(db, model_id: str, predictions: Sequence[dict]) -> int:
    """Store a version's predictions on exported frames that belong to this store; returns how many."""
    rows = [p for p in predictions if p.get("frame_id") is not None]
    if not rows:
        return 0
    store.record_predictions(db, model_id, [p["frame_id"] for p in rows], [p["p_sludge"] for p in rows],
                             [p["layout_scores"] for p in rows])
    return len(rows)


def describe_adapt(cfg: FinetuneConfig) -> list[str]:
    """The adapted parts in words, for the model card.

    >>> describe_adapt(FinetuneConfig(adapt=("projector-lora", "vision")))
    ['LoRA on the projector', 'LoRA on the last 2 vision blocks']
    """
    words = {
        "lm": f"LoRA on the language model ({', '.join(cfg.lora_targets)})",
        "projector": f"the projector trained whole at {cfg.projector_lr}",
        "projector-lora": "LoRA on the projector",
        "qformer": "LoRA on the Q-Former's self- and cross-attention",
        "vision": f"LoRA on the last {cfg.vision_blocks} vision blocks",
    }
    return [words[part] for part in cfg.adapt]


def _model_card(name: str, base: str, manifest: dict, cfg: FinetuneConfig, result: TrainResult, table: str) -> str:
    return f"""---
library_name: transformers
pipeline_tag: image-text-to-text
tags: [sludge, lora, sludgelens]
base_model: {base}
---
# {name}

`{base}` fine-tuned with LoRA on the sludgelens training export `{manifest.get('snapshot_id', '?')}`
({manifest.get('counts', {}).get('records', '?')} frames; sludge labels by provenance:
{manifest.get('counts', {}).get('by_provenance', {})}), then merged (`merge_and_unload`). The adapter alone is
in `adapter/` (load it with `PeftModel.from_pretrained(base, "adapter")`).

Recipe: adapted {", ".join(describe_adapt(cfg))}; LoRA r={cfg.lora_r}, alpha={cfg.lora_alpha},
dropout={cfg.lora_dropout} at lr {cfg.lr}; cosine schedule, warmup {cfg.warmup_ratio}; {result.steps} steps of
{cfg.batch_size} x {cfg.grad_accum} frames; task mix {cfg.task_mix}; kept step {result.best_step}
(eval loss {result.best_eval_loss}); {result.seconds:.0f} s.

## Held-out split ({cfg.test_split}), against the exported labels

{table}
Made by `python -m training.finetune`; `report/finetune.json` holds the full config and lineage,
`report/eval.json` the per-frame predictions behind the table.
"""


# ---------------------------------------------------------------- main


@dataclass
class FinetuneResult:
    """Where the new version went and how it did."""

    folder: Path
    model_id: str | None
    base_id: str | None
    before: dict
    after: dict
    train: TrainResult
    manifest: dict


def default_name(cfg: FinetuneConfig, manifest: dict) -> str:
    """"<base folder name>-lora-<snapshot id>", e.g. "tiny-vqwen-qformer-lora-ev812-0a1b2c3d"."""
    snapshot = manifest.get("snapshot_id") or time.strftime("%Y%m%d-%H%M%S")
    return f"{Path(cfg.base).name}-lora-{snapshot[:24]}"


def run(cfg: FinetuneConfig, bank: FeatureBank | None = None, db=None) -> FinetuneResult:
    """The whole run: seed -> model -> data -> train -> eval -> save -> register.

    `bank` reuses frozen vision features across runs on one base (e.g. the learning-loop experiment);
    `db` is an open store to register in (else the config's).

    >>> run(FinetuneConfig(export="data/exports/run1", name="lora-run1")).after["frames"]["accuracy"]  # doctest: +SKIP
    0.953
    """
    # seed
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    # model
    engine = EngineConfig(device=cfg.device, batch_size=cfg.eval_batch_size)
    lm = load_model(ModelSpec(cfg.base, cfg.base_revision), engine)
    # The identity the app stores the base's predictions under, computed when it loaded (before training).
    base_identity = lm.identity
    # Before anything slow: a part this family lacks (qformer on LLaVA) or more vision blocks than it has.
    check_adapt(cfg.adapt, cfg.vision_blocks, lm.family, lm.model)
    stage, targets = feature_stage(cfg.adapt, cfg.vision_blocks), adapter_pattern(lm, cfg)

    # data
    records, manifest = read_export(cfg.export)
    unknown = set(cfg.provenance) - {"corrected", "raw", "model"}
    if unknown:
        raise ValueError(f"unknown provenance {sorted(unknown)}; expected corrected, raw or model")
    records = [r for r in records if r["provenance"] in cfg.provenance]
    by_split = {name: [r for r in records if r["split"] == name] for name in (cfg.train_split, cfg.eval_split,
                                                                              cfg.test_split)}
    train_records, eval_records, test_records = (by_split[cfg.train_split], by_split[cfg.eval_split],
                                                 by_split[cfg.test_split])
    name = cfg.name or default_name(cfg, manifest)
    folder = Path(cfg.out_dir) / name
    if folder.exists() and any(folder.iterdir()):
        # Only a previous run's output is replaced, so a mistyped --name never deletes anything else.
        if not (folder / "report" / "finetune.json").is_file():
            raise FileExistsError(f"{folder} is not empty and holds no fine-tuned checkpoint; choose another --name")
        shutil.rmtree(folder)
    # Reports go in a subfolder: the app's model version id is a digest of the checkpoint's top-level files.
    reports = folder / "report"
    reports.mkdir(parents=True, exist_ok=True)
    print(f"{len(train_records)} train / {len(eval_records)} eval / {len(test_records)} test frames from export "
          f"{manifest.get('snapshot_id', cfg.export)}; base {cfg.base} on {lm.device}; adapting "
          f"{', '.join(cfg.adapt)}, caching {stage.describe()}", flush=True)

    # eval before
    before = evaluate_records(lm, test_records, cfg.eval_batch_size)

    # train
    bank = bank if bank is not None else FeatureBank(lm, cfg.cache_vision_gb, cfg.eval_batch_size, stage)
    bank.use(lm, stage)
    bank.fill(train_records + eval_records, cfg.progress)
    peft_model = attach_lora(lm, cfg)
    result = train(lm, peft_model, bank, train_records, eval_records, cfg, reports / "train_log.jsonl")

    # save, then eval the saved folder through the app's loader
    save_checkpoint(lm, peft_model, folder)
    tuned = load_model(ModelSpec(str(folder)), engine)
    after = evaluate_records(tuned, test_records, cfg.eval_batch_size)
    table = format_markdown({"before": before["metrics"], "after": after["metrics"]})
    write_report(reports, {"before": before, "after": after},
                 {"title": f"{name} on the {cfg.test_split} split of {manifest.get('snapshot_id', cfg.export)}",
                  "export": manifest.get("snapshot_id"), "base": cfg.base})
    lineage = {
        "export_snapshot": manifest.get("snapshot_id"),
        "export_dir": str(Path(cfg.export).resolve()),
        "export_counts": manifest.get("counts"),
        "base": cfg.base,
        "base_revision": cfg.base_revision,
        "config": asdict(cfg),
        "metrics": {"before": before["metrics"], "after": after["metrics"]},
        "best_step": result.best_step,
        "best_eval_loss": result.best_eval_loss,
        "adapter": "adapter",
        # What was adapted and how: the parts, peft's target regex, what the feature cache held.
        "adapted": {"parts": list(cfg.adapt), "vision_blocks": cfg.vision_blocks if "vision" in cfg.adapt else 0,
                    "lora_target_modules": targets, "cached": stage.describe(),
                    "projector": "trained whole" if "projector" in cfg.adapt else
                    "LoRA" if "projector-lora" in cfg.adapt else "frozen"},
    }

    # register
    model_id = base_id = None
    if cfg.register:
        db = db if db is not None else open_run_store(cfg)
        base_id = register_version(db, base_identity)
        model_id = register_version(db, tuned.identity, {**lineage, "base_id": base_id})
        lineage["base_id"] = base_id
        if store.has_export(db, manifest.get("snapshot_id")):
            store_predictions(db, base_id, before["predictions"])
            store_predictions(db, model_id, after["predictions"])
    lineage["model_id"] = model_id
    (reports / "finetune.json").write_text(json.dumps(
        {**lineage, "train": asdict(result)}, indent=2, sort_keys=True, default=str) + "\n")
    (folder / "README.md").write_text(_model_card(name, cfg.base, manifest, cfg, result, table))
    print(table, flush=True)
    print(f"saved {folder}" + (f", registered as {model_id}" if model_id else ""), flush=True)
    return FinetuneResult(folder=folder, model_id=model_id, base_id=base_id, before=before["metrics"],
                          after=after["metrics"], train=result, manifest=manifest)


def main(argv: list[str] | None = None) -> FinetuneResult:
    cfg = parse_config(FinetuneConfig, argv, prog="python -m training.finetune", description=__doc__.split("\n\n")[0])
    if not cfg.export:
        raise SystemExit("--export is required: a folder written by annotations.export_training_set")
    return run(cfg)


if __name__ == "__main__":
    main()
