"""Explanations that are tested against the model: heatmaps, question-aware relevance, token masks, faithfulness.

Two tiers (the skim-then-focus idea of SlowFast-style video models):

* fast tier — :func:`core.engine.score_frames` scores every sampled frame (up to 64) in batched passes and
  keeps only a :class:`~core.engine.FrameScore` per frame, which is all the timeline draws;
* slow tier — :func:`explain_frames` runs on the few frames a person opens: maps, relevance, a token mask,
  and the mask's faithfulness.

The slow tier makes one vision pass per frame. Its Q-Former keeps its cross-attention (it runs eager), the
LM forward that produces P(full) is the one whose answer-position attention is read (a registered attention
function records q·k of the last position in a few LM layers and hands the rest to the LM's own kernel,
SDPA), and every masked re-score reuses the stored vision states (BLIP-2: only the Q-Former and the LM
rerun; LLaVA: only the LM). What differs between the two classes lives in their family modules
(:mod:`core.families.blip2`, :mod:`core.families.llava`).

Maps (``FrameExplanation.heatmaps``, each over the patch grid):

* BLIP-2 — Q-Former cross-attention per layer, head and query over the 256 patches (CLS dropped):
  ``mean`` (heads, layers, queries), ``max`` (over queries of the per-query means), ``layer_<i>`` (per
  cross-attention layer), ``per_query`` (32 maps, the BLIPren-style grid) and ``question``; the raw
  (layers, heads, queries, 16, 16) tensor is kept too, and :func:`pick_cross_attention_map` slices any
  layer / head / query out of it;
* LLaVA — attention of the answer position onto the image tokens (``question``, ``layer_<i>``).

Relevance methods (the ``question`` map and the ranking a mask is cut from):

* ``"attention"`` (the default): BLIP-2 composes the LM's attention from the answer position onto the 32
  query slots (mean over heads and the last ``lm_layers`` layers) with the last Q-Former cross-attention
  layer (mean over heads; the slots' final states come out of it): ``r[p] = sum_q a[q] * C[q, p]``, the
  share of the answer's attention that reaches patch p through the query slots (composing with the mean
  over all cross-attention layers instead ranks worse on ``bench/bench_faithfulness.py``, in both the drop
  ratio and keep-top). LLaVA reads the answer position's attention onto its image tokens.
  It is the default because it comes from the scoring pass itself (no backward, no extra forward; maps add
  ~4 % to scoring in ``bench/bench_explain.py`` against ~55 % for the gradient mode), works for every
  question, and its masks are nearly as faithful: on the embedded BLIP-2 model, ``bench/bench_faithfulness.py``
  measures drop-top / drop-random 11.0x (gradient 14.8x) and keep-top within 0.1 of P(full) on 75 % of
  frames (gradient 77 %).
* ``"gradient"``: gradient x attention, Grad-CAM style — backprop log P(the answer given) to the Q-Former
  cross-attention probabilities and keep ``relu(grad * attn)`` summed over layers and queries, mean over
  heads. For LLaVA, gradient x input on the image-token embeddings.

Budget rule (QTSplus-style selection, training-free): for relevance ``r`` over M tokens, the budget
``rho`` is the smallest share of tokens whose relevance holds ``ExplainConfig.mass`` (half) of the total,
clamped to ``[rho_min, rho_max] = [0.05, 0.5]``; a peaked map gives a small budget, a flat one a large
budget. ``n = ceil(rho * M)``; the top-n tokens are kept in their original order (ties broken by
position). A rho set by the user overrides the rule. Over a clip (:func:`select_clip_tokens`) the same rule
runs on M = frames x tokens, so the mask also says which frames carry the evidence.

Faithfulness (measured every time a mask is made): P(full); P(keep-top) with only the kept tokens;
P(drop-top) with the kept tokens removed; P(drop-random) with a random same-size set removed (seeded per
frame) and P(keep-random) with only that set kept; and a deletion curve — P after deleting the top / a
random ``rho`` share for each ``ExplainConfig.curve_rhos``. BLIP-2 masks patches through the Q-Former's
``encoder_attention_mask`` (CLS kept); LLaVA removes the dropped image tokens from the LM sequence, which
really shortens it.
P is P(yes) for the yes/no questions, else the probability of the answer the full frame got.

    >>> lm = load_model(ModelSpec("models/tiny-vqwen-qformer"))                          # doctest: +SKIP
    >>> frames, _ = synthetic.make_frames(seed=5, n=6, pool="holdout", sludge_share=1.0)  # doctest: +SKIP
    >>> [e] = explain_frames(lm, frames, [0])                                             # doctest: +SKIP
    >>> e.p_full, e.rho, e.faithfulness.p_drop_top, e.faithfulness.p_drop_random          # doctest: +SKIP
    (0.97, 0.16, 0.86, 0.97)
    >>> render_heatmap(frames[0], e.heatmaps["question"], region=e.region).size           # doctest: +SKIP
    (252, 448)
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import repeat_kv
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from core import vocabulary
from core.engine import (
    FrameScore,
    LoadedModel,
    build_rows,
    encode_frames,
    layout_probs,
    p_yes,
    run_answer_pass,
    summarise_logits,
)
from core.families import VisualTokens
from core.render import (
    Region,
    normalise_heatmap,
    render_heatmap,
    render_mask,
    render_query_grid,
)

__all__ = [
    "ExplainConfig", "Selection", "ClipSelection", "Faithfulness", "FrameExplanation", "ClipExplanation",
    "METHODS", "explain_frames", "explain_clip", "choose_budget", "select_tokens",
    "select_clip_tokens", "draw_random_mask", "rescore_masked", "capture_answer_attention",
    "pick_cross_attention_map", "model_view_region", "render_explanation",
    "render_heatmap", "render_mask", "render_query_grid", "normalise_heatmap",
]

METHODS = ("attention", "gradient")
YES_NO_QUESTIONS = (vocabulary.CLASSIFY, vocabulary.EXPLAIN)
# The random stream of a clip-level comparison mask; per-frame masks use the frame index (0..63).
CLIP_RANDOM_INDEX = 1 << 30


@dataclass(frozen=True)
class ExplainConfig:
    """How relevance, budgets and faithfulness are computed."""

    # Budget rule: keep the smallest share of tokens holding this share of the relevance mass. Half the
    # mass is the usual "where most of the evidence is" cut; the clamp below bounds it either way.
    mass: float = 0.5
    # QTSplus's retention bounds: never fewer than 5 % of the tokens (a mask of a handful of patches says
    # little), never more than half (a mask keeping most of the frame explains nothing).
    rho_min: float = 0.05
    rho_max: float = 0.5
    # Shares deleted for the deletion curve: dense where masks usually are, up to the clamp's top.
    curve_rhos: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5)
    # The answer-position attention is averaged over the last this-many LM layers: late layers are where
    # the answer is read off the image slots; reading every layer of a 36-layer LM mostly adds noise.
    lm_layers: int = 4
    # Frames per slow-tier pass; masked re-scores go in chunks of `rescore_batch` rows.
    batch_size: int = 8
    rescore_batch: int = 32


@dataclass(frozen=True)
class Selection:
    """A token mask over one frame's M visual tokens."""

    mask: np.ndarray  # (M,) bool, True = kept
    rho: float  # the budget used
    auto: bool  # True when the budget rule chose rho, False when the caller set it
    kept: int  # n = ceil(rho * M)

    @property
    def kept_indices(self) -> np.ndarray:
        """Indices of the kept tokens, in their original order."""
        return np.flatnonzero(self.mask)

    def to_dict(self) -> dict:
        return {"rho": round(self.rho, 4), "auto": self.auto, "kept": self.kept, "mask": self.mask.astype(int).tolist()}


@dataclass(frozen=True)
class ClipSelection:
    """A token mask over a clip's frames x tokens: which tokens, and so which frames, carry the evidence."""

    mask: np.ndarray  # (F, M) bool
    rho: float
    auto: bool
    kept: int

    @property
    def frame_shares(self) -> np.ndarray:
        """Share of the kept tokens that falls in each frame (sums to 1)."""
        per = self.mask.sum(axis=1).astype(np.float64)
        return per / max(per.sum(), 1.0)

    def to_dict(self) -> dict:
        return {
            "rho": round(self.rho, 4), "auto": self.auto, "kept": self.kept,
            "frame_shares": [round(float(x), 4) for x in self.frame_shares],
            "mask": self.mask.astype(int).tolist(),
        }


@dataclass(frozen=True)
class Faithfulness:
    """What the model does when the mask is applied: the test that a map is more than decoration."""

    p_full: float
    p_keep_top: float
    p_drop_top: float
    p_drop_random: float
    # The sufficiency baseline: only the random set dropped above is kept. A keep-top that drifts further
    # from P(full) than this says the evidence is spread over the frame rather than in the top tokens.
    p_keep_random: float
    # Deletion curve: [{"rho": share deleted, "p_drop_top": ..., "p_drop_random": ...}, ...], rho ascending.
    curve: list[dict] = field(default_factory=list)

    @property
    def drop_ratio(self) -> float:
        """|dP drop-top| / |dP drop-random| (inf when the random drop changes nothing)."""
        top, rand = abs(self.p_full - self.p_drop_top), abs(self.p_full - self.p_drop_random)
        return top / rand if rand > 0 else (math.inf if top > 0 else 1.0)

    def to_dict(self) -> dict:
        return {
            "p_full": round(self.p_full, 6), "p_keep_top": round(self.p_keep_top, 6),
            "p_drop_top": round(self.p_drop_top, 6), "p_drop_random": round(self.p_drop_random, 6),
            "p_keep_random": round(self.p_keep_random, 6),
            "curve": [{k: round(v, 6) for k, v in point.items()} for point in self.curve],
        }


@dataclass
class FrameExplanation:
    """Everything the slow tier knows about one frame for one question."""

    index: int  # the frame's position in the clip's sampled frames
    question: str
    method: str
    model_kind: str  # "blip2" or "llava"
    grid: tuple[int, int]  # (rows, cols) of the patch grid the maps live on
    region: Region  # the box of the frame the model sees (left, top, right, bottom), in frame pixels
    p_full: float  # P of the answer on the whole frame (P(yes) for yes/no questions)
    heatmaps: dict[str, np.ndarray]  # view name -> (rows, cols) map, raw values
    per_query: np.ndarray | None  # (32, rows, cols) Q-Former maps per query (BLIP-2), else None
    relevance: np.ndarray  # (M,) the ranking the mask is cut from (== heatmaps["question"].ravel())
    selection: Selection
    faithfulness: Faithfulness | None
    # The frame's P(sludge) and layout from the same LM forward (asked alongside the classify question).
    score: FrameScore | None = None
    # BLIP-2: the raw Q-Former cross-attention, CLS dropped, (layers, heads, queries, rows, cols); the views
    # above are means of it, and pick_cross_attention_map slices any layer / head / query out of it.
    cross_attention: np.ndarray | None = None

    @property
    def mask(self) -> np.ndarray:
        return self.selection.mask

    @property
    def rho(self) -> float:
        return self.selection.rho

    def to_dict(self, include_maps: bool = True, include_cross_attention: bool = False) -> dict:
        """JSON-ready: numbers rounded, arrays as nested lists (maps omitted when `include_maps` is False;
        the raw cross-attention, 65k numbers per frame on the embedded model, only when asked for)."""
        out = {
            "index": self.index, "question": self.question, "method": self.method, "model_kind": self.model_kind,
            "grid": list(self.grid), "region": list(self.region), "p_full": round(self.p_full, 6),
            "selection": self.selection.to_dict(),
            "faithfulness": self.faithfulness.to_dict() if self.faithfulness else None,
            "score": self.score.to_dict() if self.score else None,
        }
        if include_maps:
            out["heatmaps"] = {k: np.round(v, 6).tolist() for k, v in self.heatmaps.items()}
            out["per_query"] = None if self.per_query is None else np.round(self.per_query, 6).tolist()
            out["relevance"] = np.round(self.relevance, 6).tolist()
        if include_cross_attention and self.cross_attention is not None:
            out["cross_attention"] = np.round(self.cross_attention, 6).tolist()
        return out


@dataclass
class ClipExplanation:
    """A clip-level mask over frames x tokens, and what the model does with it per frame."""

    question: str
    method: str
    grid: tuple[int, int]
    relevance: np.ndarray  # (F, M)
    selection: ClipSelection
    p_full: np.ndarray  # (F,)
    p_keep_top: np.ndarray
    p_drop_top: np.ndarray
    p_drop_random: np.ndarray
    p_keep_random: np.ndarray

    def to_dict(self) -> dict:
        def r(a):
            return [round(float(x), 6) for x in a]

        return {
            "question": self.question, "method": self.method, "grid": list(self.grid),
            "selection": self.selection.to_dict(), "p_full": r(self.p_full), "p_keep_top": r(self.p_keep_top),
            "p_drop_top": r(self.p_drop_top), "p_drop_random": r(self.p_drop_random),
            "p_keep_random": r(self.p_keep_random),
            "relevance": np.round(self.relevance, 6).tolist(),
        }


# ---------------------------------------------------------------- token selection (pure)


def choose_budget(relevance, config: ExplainConfig = ExplainConfig()) -> float:
    """The budget rule: smallest share of tokens holding `config.mass` of the relevance, clamped.

    >>> choose_budget(np.r_[np.full(10, 9.0), np.full(90, 0.1)])   # 10 tokens hold 91 % of the mass
    0.06
    >>> choose_budget(np.ones(100))                                  # flat: half the tokens for half the mass
    0.5
    """
    r = np.clip(np.asarray(relevance, dtype=np.float64).ravel(), 0.0, None)
    total = r.sum()
    if r.size == 0 or not np.isfinite(total) or total <= 0:
        return config.rho_max
    cum = np.cumsum(np.sort(r)[::-1])
    n = int(np.searchsorted(cum, config.mass * total - 1e-12 * total)) + 1
    return float(min(max(n / r.size, config.rho_min), config.rho_max))


def _top_mask(relevance: np.ndarray, n: int) -> np.ndarray:
    r = np.nan_to_num(np.asarray(relevance, dtype=np.float64).ravel(), nan=-np.inf)
    mask = np.zeros(r.size, dtype=bool)
    mask[np.argsort(-r, kind="stable")[:n]] = True
    return mask


def _budget(relevance: np.ndarray, rho: float | None, config: ExplainConfig) -> tuple[float, bool, int]:
    auto = rho is None
    rho = choose_budget(relevance, config) if auto else float(rho)
    if not 0.0 < rho <= 1.0:
        raise ValueError(f"rho must be in (0, 1], got {rho}")
    return rho, auto, max(1, math.ceil(rho * relevance.size - 1e-9))


def select_tokens(relevance, rho: float | None = None, config: ExplainConfig = ExplainConfig()) -> Selection:
    """Keep the top-n tokens of one frame, n = ceil(rho * M), rho from the budget rule unless given.

    >>> s = select_tokens(np.array([0.1, 0.7, 0.05, 0.15]), rho=0.5)
    >>> s.mask.tolist(), s.kept
    ([False, True, False, True], 2)
    """
    r = np.asarray(relevance, dtype=np.float64).ravel()
    rho, auto, n = _budget(r, rho, config)
    return Selection(mask=_top_mask(r, n), rho=rho, auto=auto, kept=n)


def select_clip_tokens(relevance, rho: float | None = None, config: ExplainConfig = ExplainConfig()) -> ClipSelection:
    """Token selection over a whole clip: M = frames x tokens, one budget, one top-n.

    Frames whose tokens rank low keep nothing, so the mask also says which frames carry the evidence.

    >>> sel = select_clip_tokens(np.array([[0.0, 0.1], [0.9, 0.8]]), rho=0.5)
    >>> sel.mask.tolist(), sel.frame_shares.tolist()
    ([[False, False], [True, True]], [0.0, 1.0])
    """
    r = np.asarray(relevance, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"clip relevance must be (frames, tokens), got shape {r.shape}")
    rho, auto, n = _budget(r, rho, config)
    return ClipSelection(mask=_top_mask(r, n).reshape(r.shape), rho=rho, auto=auto, kept=n)


def draw_random_mask(size: int, n: int, seed: int, index: int = 0) -> np.ndarray:
    """A random set of n of `size` tokens, reproducible from (seed, index); nested in n for a fixed pair.

    >>> int(draw_random_mask(8, 3, seed=0).sum())
    3
    """
    order = np.random.default_rng([seed, index]).permutation(size)
    mask = np.zeros(size, dtype=bool)
    mask[order[:n]] = True
    return mask


# ---------------------------------------------------------------- reading the LM's attention


def _text_layers(lm: LoadedModel):
    """The decoder layers of the LM: BLIP-2 holds a CausalLM (``.model.layers``), LLaVA a bare decoder."""
    decoder = lm.model.get_decoder()
    return getattr(decoder, "model", decoder).layers


# Prefix of the attention functions registered with transformers' AttentionInterface for the capture; one is
# registered per kernel it hands the attention to, the first time a capture runs on that kernel.
CAPTURE_ATTENTION = "answer_capture_"
_capture_lock = threading.Lock()
# Captures in progress, and per switched text config: (config, its own kernel, captures using it).
_active_captures: list["capture_answer_attention"] = []
_switched_configs: dict[int, list] = {}


def _capture_kernel(kernel: str) -> str:
    """The name of the capturing attention function that hands the attention to `kernel`, registered
    (with `kernel`'s mask function) on first use.

    >>> _capture_kernel("sdpa")
    'answer_capture_sdpa'
    """
    name = CAPTURE_ATTENTION + kernel
    if name not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(name, _make_capture_forward(kernel))
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[kernel])
    return name


def _make_capture_forward(kernel: str):
    """An attention function that shows q and k to the captures in progress, then runs `kernel`."""

    def capture_forward(module, query, key, value, attention_mask, scaling=None, **kwargs):
        for capture in _active_captures:
            capture.record(module, query, key, scaling)
        return ALL_ATTENTION_FUNCTIONS[kernel](module, query, key, value, attention_mask, scaling=scaling, **kwargs)

    return capture_forward


class capture_answer_attention:
    """Record the attention of the last position (the answer) in a few LM layers during a forward.

    Inside the context the LM's attention layers call a function registered with transformers'
    ``AttentionInterface``: it takes the layer's own q and k (after Qwen3's q_norm/k_norm and the rotary
    embedding), keeps q·kᵀ·scaling of the last query position over all keys (grouped-query heads repeated)
    for the chosen layers, and hands the attention itself to the kernel the LM was loaded with (SDPA, which
    returns no weights; an LM loaded eager runs SDPA while captured). The LM's kernel is restored on exit,
    error or not. Padding is masked when reading, from the pass's own mask.

    >>> with capture_answer_attention(lm) as cap:                                 # doctest: +SKIP
    ...     ap = run_answer_pass(lm, visual, [vocabulary.CLASSIFY])
    >>> cap.read(ap.attention_mask).shape  # (layers, rows, heads, seq)  # doctest: +SKIP
    torch.Size([3, 8, 4, 57])
    """

    def __init__(self, lm: LoadedModel, layers: int | Sequence[int] = 4):
        all_layers = _text_layers(lm)
        if isinstance(layers, int):
            layers = range(max(0, len(all_layers) - layers), len(all_layers))
        self.layer_ids = list(layers)
        self.modules = [all_layers[i].self_attn for i in self.layer_ids]
        self.scores: list[torch.Tensor] = []
        self._watched = {id(m) for m in self.modules}
        # The text config every attention layer reads its kernel from (one per LM).
        self._configs = list({id(layer.self_attn.config): layer.self_attn.config for layer in all_layers}.values())

    def __enter__(self):
        self.scores = []
        with _capture_lock:
            for config in self._configs:
                if id(config) not in _switched_configs:
                    kernel = config._attn_implementation
                    registered = kernel in ALL_ATTENTION_FUNCTIONS and kernel in ALL_MASK_ATTENTION_FUNCTIONS
                    delegate = kernel if registered else "sdpa"
                    _switched_configs[id(config)] = [config, kernel, 0]
                    config._attn_implementation = _capture_kernel(delegate)
                _switched_configs[id(config)][2] += 1
            _active_captures.append(self)
        return self

    def __exit__(self, *exc):
        with _capture_lock:
            _active_captures.remove(self)
            for config in self._configs:
                entry = _switched_configs[id(config)]
                entry[2] -= 1
                if entry[2] == 0:
                    config._attn_implementation = entry[1]
                    del _switched_configs[id(config)]
        return False

    def record(self, module, query: torch.Tensor, key: torch.Tensor, scaling: float | None) -> None:
        """Keep the answer position's scaled scores of `module`'s forward when it is one of the chosen layers."""
        if id(module) not in self._watched:
            return
        scaling = module.scaling if scaling is None else scaling
        k = repeat_kv(key, module.num_key_value_groups)
        self.scores.append((query[:, :, -1:].float() @ k.float().transpose(2, 3)).squeeze(2) * scaling)

    def read(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """(layers, rows, heads, seq) attention probabilities of the answer position; padding gets 0."""
        if len(self.scores) != len(self.modules):
            raise RuntimeError(f"expected one forward over {len(self.modules)} layers, saw {len(self.scores)} calls")
        scores = torch.stack(self.scores)
        pad = (attention_mask == 0).to(scores.device)[None, :, None, :]
        return scores.masked_fill(pad, float("-inf")).softmax(dim=-1)


# ---------------------------------------------------------------- answers as probabilities


class _AnswerReader:
    """Turns answer logits into P of the answer the full frame got, for any question."""

    def __init__(self, lm: LoadedModel, question: str, full_logits: torch.Tensor):
        self.lm = lm
        if question in YES_NO_QUESTIONS:
            self.kind = "yes"
        elif question == vocabulary.LAYOUT:
            self.kind = "layout"
            self.target = layout_probs(lm, full_logits).argmax(-1)
        else:
            self.kind = "token"
            self.target = full_logits.argmax(-1)

    def probability(self, logits: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """P per row; `rows` says which full frame each row belongs to (for the per-frame targets)."""
        if self.kind == "yes":
            return p_yes(self.lm, logits)
        target = self.target if rows is None else self.target[rows]
        dist = layout_probs(self.lm, logits) if self.kind == "layout" else logits.softmax(-1)
        return dist.gather(-1, target[:, None].to(dist.device)).squeeze(-1)

    def log_verdict(self, logits: torch.Tensor) -> torch.Tensor:
        """log P of the answer given (yes or no for yes/no questions): what the gradient mode explains."""
        if self.kind == "yes":
            yes = torch.logsumexp(logits[..., self.lm.yes_ids], dim=-1)
            no = torch.logsumexp(logits[..., self.lm.no_ids], dim=-1)
            odds = yes - no
            return torch.nn.functional.logsigmoid(torch.where(odds.detach() >= 0, odds, -odds))
        return torch.log(self.probability(logits).clamp_min(1e-12))


# ---------------------------------------------------------------- relevance


def _grid_of(lm: LoadedModel, tokens: int) -> tuple[int, int]:
    side = int(round(math.sqrt(tokens)))
    if side * side != tokens:
        raise ValueError(f"{tokens} visual tokens do not form a square patch grid")
    return side, side


def _slot_attention(answer_attention: torch.Tensor, slots: list[torch.Tensor], rows: range) -> torch.Tensor:
    """(B, T) attention of the answer onto each row's image slots, mean over read layers and heads."""
    mean = answer_attention.mean(dim=(0, 2))  # (rows, seq)
    return torch.stack([mean[r, slots[r].to(mean.device)] for r in rows])


def _gradient_relevance(lm: LoadedModel, visual: VisualTokens, reader: _AnswerReader, question: str) -> torch.Tensor:
    """The family's gradient relevance (BLIP-2: x Q-Former cross-attention; LLaVA: x image tokens), (B, M)."""

    def log_answer(embeds: torch.Tensor) -> torch.Tensor:
        rows, attention, positions, _ = build_rows(lm, embeds, [question])
        logits = lm.family.run_lm(lm.model, rows, attention, positions, logits_to_keep=1).logits[:, -1, :].float()
        return reader.log_verdict(logits).sum()

    return lm.family.gradient_relevance(lm.model, visual, log_answer)


def _explain_chunk(lm: LoadedModel, frames, question: str, method: str, config: ExplainConfig):
    """One vision pass and one hooked LM forward for a chunk: P(full), maps, relevance, and what re-scores need."""
    visual = encode_frames(lm, frames, want_attentions=True)
    # The classify question is asked with the layout one, as the fast tier does, so the same forward also
    # gives the frame's score; the hooks read every row and only the question's rows (the first B) are used.
    questions = [question, vocabulary.LAYOUT] if question == vocabulary.CLASSIFY else [question]
    with capture_answer_attention(lm, config.lm_layers) as cap:
        ap = run_answer_pass(lm, visual, questions)
    answer_attention = cap.read(ap.attention_mask)
    B = visual.embeds.shape[0]
    reader = _AnswerReader(lm, question, ap.logits[0])
    p_full = reader.probability(ap.logits[0])
    scores = summarise_logits(lm, ap.logits) if len(questions) == 2 else [None] * B
    slots = _slot_attention(answer_attention, ap.image_slots, range(B))  # (B, T)
    found = lm.family.explanation_maps(visual, slots, answer_attention, ap.image_slots, cap.layer_ids)
    maps = found.maps
    if method == "gradient":
        maps["question"] = _gradient_relevance(lm, visual, reader, question)
    return visual, reader, p_full, maps, (found.per_query, found.cross_attention), scores


# ---------------------------------------------------------------- masked re-scoring


def rescore_masked(
    lm: LoadedModel, visual: VisualTokens, frame_rows, keep, question: str, reader: _AnswerReader | None = None,
    batch: int = 32,
) -> np.ndarray:
    """P of the answer for each (frame, token mask) pair, re-using the frames' vision pass.

    `frame_rows` (K,) says which frame of `visual` each mask belongs to, `keep` is (K, M) bool. BLIP-2 reruns
    the Q-Former with the dropped patches masked out of its cross-attention; LLaVA drops the image tokens
    from the LM sequence. Without a reader the answer is read as P(yes).

    >>> rescore_masked(lm, visual, [0, 0], np.ones((2, 256), bool), vocabulary.CLASSIFY)   # doctest: +SKIP
    array([0.97, 0.97])
    """
    frame_rows = torch.as_tensor(np.asarray(frame_rows), dtype=torch.long)
    keep = torch.as_tensor(np.asarray(keep, dtype=bool))
    out = []
    for start in range(0, len(frame_rows), batch):
        rows = frame_rows[start:start + batch]
        k = keep[start:start + batch].to(lm.device)
        with torch.inference_mode():
            sub, lm_keep = lm.family.mask_tokens(lm.model, visual, rows.to(lm.device), k)
            logits = run_answer_pass(lm, sub, [question], keep=lm_keep).logits[0]
        p = reader.probability(logits, rows) if reader is not None else p_yes(lm, logits)
        out.append(p.float().cpu())
    return torch.cat(out).numpy().astype(np.float64)


def _measure_faithfulness(
    lm, visual, reader, question, p_full, relevance: np.ndarray, selections: list[Selection], clip_index: list[int],
    seed: int, config: ExplainConfig,
) -> list[Faithfulness]:
    """Every mask of every frame in a chunk, re-scored in as few batched passes as the rows allow."""
    M = relevance.shape[1]
    rows, masks, slots = [], [], []
    curve = sorted(set(config.curve_rhos))
    for b, (sel, index) in enumerate(zip(selections, clip_index)):
        order_top = relevance[b]
        random_set = draw_random_mask(M, sel.kept, seed, index)
        wanted = {"keep_top": sel.mask, "drop_top": ~sel.mask, "drop_random": ~random_set, "keep_random": random_set}
        for rho in curve:
            n = max(1, math.ceil(rho * M - 1e-9))
            wanted[("top", rho)] = ~_top_mask(order_top, n)
            wanted[("random", rho)] = ~draw_random_mask(M, n, seed, index)
        for key, mask in wanted.items():
            rows.append(b)
            masks.append(mask)
            slots.append((b, key))
    p = rescore_masked(lm, visual, rows, np.stack(masks), question, reader, batch=config.rescore_batch)
    got: dict = {slot: float(v) for slot, v in zip(slots, p)}
    out = []
    for b in range(len(selections)):
        out.append(Faithfulness(
            p_full=float(p_full[b]),
            p_keep_top=got[(b, "keep_top")], p_drop_top=got[(b, "drop_top")], p_drop_random=got[(b, "drop_random")],
            p_keep_random=got[(b, "keep_random")],
            curve=[{"rho": rho, "p_drop_top": got[(b, ("top", rho))], "p_drop_random": got[(b, ("random", rho))]} for rho in curve],
        ))
    return out


# ---------------------------------------------------------------- the slow tier


def model_view_region(lm: LoadedModel, frame_shape: Sequence[int]) -> Region:
    """The box of a (H, W, ...) frame the model's processor keeps: all of it, unless it centre-crops.

    >>> model_view_region(llava, (448, 252, 3))   # doctest: +SKIP
    (0, 98, 252, 350)
    """
    H, W = int(frame_shape[0]), int(frame_shape[1])
    ip = lm.processor.image_processor
    if not getattr(ip, "do_center_crop", False) or not getattr(ip, "crop_size", None):
        return (0, 0, W, H)
    size = ip.size or {}
    crop_h, crop_w = ip.crop_size["height"], ip.crop_size["width"]
    if "shortest_edge" in size:
        scale = size["shortest_edge"] / min(H, W)
    else:
        scale = max(size.get("height", H) / H, size.get("width", W) / W)
    box_w, box_h = min(W, round(crop_w / scale)), min(H, round(crop_h / scale))
    left, top = (W - box_w) // 2, (H - box_h) // 2
    return (left, top, left + box_w, top + box_h)


def explain_frames(
    lm: LoadedModel,
    frames,
    indices: Sequence[int] | None = None,
    question: str = vocabulary.CLASSIFY,
    method: str = "attention",
    rho: float | None = None,
    seed: int = 0,
    faithfulness: bool = True,
    config: ExplainConfig = ExplainConfig(),
) -> list[FrameExplanation]:
    """The slow tier for the frames at `indices` (all when None): maps, relevance, mask, faithfulness.

    One vision pass per frame; P(full), the Q-Former maps and the LM's answer attention come from that pass
    and one LM forward; each mask is then re-scored from the stored vision states. `rho` overrides the
    budget rule; `seed` fixes the random comparison masks.

    >>> [e] = explain_frames(lm, frames, [5], method="attention", rho=0.25, seed=0)        # doctest: +SKIP
    >>> e.selection.kept, round(e.faithfulness.p_keep_top, 2)  # doctest: +SKIP
    (64, 0.96)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    indices = list(range(len(frames))) if indices is None else [int(i) for i in indices]
    out: list[FrameExplanation] = []
    for start in range(0, len(indices), config.batch_size):
        chunk_idx = indices[start:start + config.batch_size]
        chunk = [frames[i] for i in chunk_idx]
        visual, reader, p_full, maps, (per_query, raw), scores = _explain_chunk(lm, chunk, question, method, config)
        relevance = maps["question"].float().cpu().numpy().astype(np.float64)
        grid = _grid_of(lm, relevance.shape[1])
        selections = [select_tokens(r, rho, config) for r in relevance]
        faith = (
            _measure_faithfulness(lm, visual, reader, question, p_full.tolist(), relevance, selections, chunk_idx, seed, config)
            if faithfulness else [None] * len(chunk_idx)
        )
        for b, index in enumerate(chunk_idx):
            out.append(FrameExplanation(
                index=index, question=question, method=method, model_kind=lm.family.name, grid=grid,
                region=model_view_region(lm, np.asarray(frames[index]).shape), p_full=float(p_full[b]),
                heatmaps={k: v[b].float().cpu().numpy().reshape(grid) for k, v in maps.items()},
                per_query=None if per_query is None else per_query[b].float().cpu().numpy().reshape(-1, *grid),
                relevance=relevance[b], selection=selections[b], faithfulness=faith[b], score=scores[b],
                cross_attention=None if raw is None else raw[b].float().cpu().numpy().reshape(*raw.shape[1:4], *grid),
            ))
    return out


def explain_clip(
    lm: LoadedModel, frames, question: str = vocabulary.CLASSIFY, method: str = "attention", rho: float | None = None,
    seed: int = 0, config: ExplainConfig = ExplainConfig(),
) -> ClipExplanation:
    """Clip-level token selection (frames x tokens) and its faithfulness per frame.

    The random comparison is a random same-size set over the whole clip, so a frame may lose more or fewer
    tokens than under the top mask; the top mask's per-frame counts are what it says about the frames.

    >>> ce = explain_clip(lm, frames[:8], rho=0.25)                          # doctest: +SKIP
    >>> ce.selection.frame_shares.round(2), ce.p_drop_top.round(2)  # doctest: +SKIP
    """
    F = len(frames)
    relevance, p_full, passes = [], [], []
    for start in range(0, F, config.batch_size):
        chunk = [frames[i] for i in range(start, min(F, start + config.batch_size))]
        visual, reader, p, maps, _, _ = _explain_chunk(lm, chunk, question, method, config)
        relevance.append(maps["question"].float().cpu().numpy().astype(np.float64))
        p_full.append(p.float().cpu().numpy())
        passes.append((start, visual, reader))
    rel = np.concatenate(relevance)
    selection = select_clip_tokens(rel, rho, config)
    random_set = draw_random_mask(rel.size, selection.kept, seed, index=CLIP_RANDOM_INDEX).reshape(rel.shape)
    rescored = []
    for start, visual, reader in passes:
        B = visual.embeds.shape[0]
        part = slice(start, start + B)
        masks = np.concatenate([selection.mask[part], ~selection.mask[part], ~random_set[part], random_set[part]])
        p = rescore_masked(lm, visual, list(range(B)) * 4, masks, question, reader, batch=config.rescore_batch)
        rescored.append(p.reshape(4, B))
    keep_top, drop_top, drop_random, keep_random = np.concatenate(rescored, axis=1)
    return ClipExplanation(
        question=question, method=method, grid=_grid_of(lm, rel.shape[1]), relevance=rel, selection=selection,
        p_full=np.concatenate(p_full).astype(np.float64), p_keep_top=keep_top, p_drop_top=drop_top,
        p_drop_random=drop_random, p_keep_random=keep_random,
    )


def pick_cross_attention_map(
    explanation: FrameExplanation, layer: int | None = None, head: int | None = None, query: int | None = None
) -> np.ndarray:
    """One Q-Former map over the patch grid: the given layer / head / query, the mean over any left as None.

    >>> pick_cross_attention_map(e, layer=1, query=7).shape      # doctest: +SKIP
    (16, 16)
    """
    if explanation.cross_attention is None:
        raise ValueError(f"a {explanation.model_kind} explanation has no Q-Former cross-attention")
    a = explanation.cross_attention
    for axis, pick in ((2, query), (1, head), (0, layer)):
        a = a.mean(axis=axis) if pick is None else np.take(a, pick, axis=axis)
    return a


def render_explanation(frame: np.ndarray, explanation: FrameExplanation, alpha: float = 0.6) -> dict:
    """Every picture of one explanation, as PIL images: one heatmap per view, the mask, the per-query grid.

    >>> pictures = render_explanation(frames[5], e)        # doctest: +SKIP
    >>> sorted(pictures)  # doctest: +SKIP
    ['heatmap:layer_0', 'heatmap:layer_1', 'heatmap:max', 'heatmap:mean', 'heatmap:question', 'mask', 'query_grid']
    """
    region = explanation.region
    out = {f"heatmap:{name}": render_heatmap(frame, m, alpha, region) for name, m in explanation.heatmaps.items()}
    out["mask"] = render_mask(frame, explanation.mask, explanation.grid, region)
    if explanation.per_query is not None:
        out["query_grid"] = render_query_grid(frame, explanation.per_query, explanation.heatmaps.get("mean"), region=region)
    return out
