"""Load a vqwen-family model and score frames with it.

One loader serves both stock classes; which one is read from the checkpoint's config (`model_type`), never
from its name, and everything specific to it lives in its family module (:mod:`core.families`). Scoring is
one batched pass per chunk of frames::

    pixels ─► vision (+ Q-Former for BLIP-2) ─► projected image tokens      (once per frame)
           ─► LM over the prompts' shared prefix, image slots included      (once per frame, cached)
           ─► LM over each question's own tail on that cache                (once per question)
           ─► logits at the answer position ─► P(yes) and the layout distribution

Explanations read one LM forward over [frame × question] rows, left-padded (:func:`run_answer_pass`), which
gives the same logits up to float rounding.

Example::

    lm = load_model(ModelSpec("models/tiny-vqwen-qformer"))
    scores = score_frames(lm, frames)          # frames: (N, H, W, 3) uint8
    verdict = decide_video(scores)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import Sequence

import numpy as np
import torch
from transformers import AutoConfig, AutoProcessor
from transformers.utils import logging as hf_logging

from core import vocabulary
from core.config import EngineConfig, ModelSpec
from core.families import ModelFamily, UnknownFamilyError, VisualTokens, find_family
from core.identity import ModelIdentity, identify_model, name_folder, name_version

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says why in words a person can act on."""


@dataclass(frozen=True)
class FrameScore:
    """What the fast tier knows about one frame."""

    p_sludge: float
    label: bool
    layout: str  # one of vocabulary.LAYOUTS when sludge, else vocabulary.NO_LAYOUT
    layout_scores: dict[str, float]

    def to_dict(self) -> dict:
        return {"p_sludge": self.p_sludge, "label": self.label, "layout": self.layout, "layout_scores": self.layout_scores}


@dataclass(frozen=True)
class Verdict:
    """A video's verdict: majority vote of frame labels, and the mean P(sludge)."""

    label: bool
    majority: float  # share of frames labelled sludge
    mean_p: float
    frames: int
    layout: str  # most common layout among sludge frames, or "none"

    def to_dict(self) -> dict:
        return {"label": self.label, "majority": self.majority, "mean_p": self.mean_p, "frames": self.frames, "layout": self.layout}


@dataclass
class LoadedModel:
    """A model, its processor and the token ids we read answers from."""

    model: torch.nn.Module
    processor: object
    family: ModelFamily
    spec: ModelSpec
    device: torch.device
    dtype: torch.dtype
    # Computed once at load: the name the store, the UI and the API know this model version by.
    identity: ModelIdentity | None = None
    config: EngineConfig = field(default_factory=EngineConfig)
    _prompt_ids: dict[str, list[int]] = field(default_factory=dict, repr=False)

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def version(self) -> str:
        """The id this model version is stored under (``identity.id``); a model still in training, which has
        no saved weights to name it by, goes by its spec."""
        return self.identity.id if self.identity is not None else self.spec.label

    @cached_property
    def answer_ids(self) -> dict[str, dict[str, list[int]]]:
        """First-token ids of each answer word, per question: {"classify": {"yes": [...], "no": [...]}, "layout": {...}}."""
        layouts = {name: (name, name.capitalize()) for name in vocabulary.LAYOUTS}
        return {
            "classify": distinct_first_tokens(self.tokenizer, {"yes": vocabulary.YES_WORDS, "no": vocabulary.NO_WORDS}),
            "layout": distinct_first_tokens(self.tokenizer, layouts),
        }

    @property
    def yes_ids(self) -> list[int]:
        return self.answer_ids["classify"]["yes"]

    @property
    def no_ids(self) -> list[int]:
        return self.answer_ids["classify"]["no"]

    @property
    def layout_ids(self) -> dict[str, list[int]]:
        return self.answer_ids["layout"]

    def prompt_ids(self, question: str) -> list[int]:
        """Token ids of the chat-templated prompt for one image and `question`, image slots included.

        Built by the model's own processor on a blank image, so the number of image slots is whatever the
        processor would give a real frame (32 for BLIP-2, one per patch for LLaVA).
        """
        if question not in self._prompt_ids:
            text = self.tokenizer.apply_chat_template(
                vocabulary.build_messages(question), add_generation_prompt=True, tokenize=False
            )
            blank = np.zeros((32, 32, 3), dtype=np.uint8)
            ids = self.processor(text=text, images=blank, return_tensors="pt")["input_ids"][0]
            self._prompt_ids[question] = ids.tolist()
        return self._prompt_ids[question]

    @property
    def image_token_id(self) -> int:
        return self.model.config.image_token_id


def distinct_first_tokens(tokenizer, classes: dict[str, Sequence[str]]) -> dict[str, list[int]]:
    """Per class, the first token of each spelling of its words, with and without a leading space.

    The answer position may emit "yes", " yes" or "Yes": scoring sums over all of them. A first token two
    classes share (e.g. a lone space) says nothing about either and is dropped from both.

    >>> distinct_first_tokens(tok, {"yes": ("yes", "Yes"), "no": ("no", "No")})  # doctest: +SKIP
    {'yes': [88, 301, 97, 512], 'no': [77, 290, 81, 499]}
    """
    ids: dict[str, list[int]] = {}
    for name, words in classes.items():
        ids[name] = []
        for word in words:
            for variant in (word, " " + word):
                toks = tokenizer.encode(variant, add_special_tokens=False)
                if toks and toks[0] not in ids[name]:
                    ids[name].append(toks[0])
    owners: dict[int, int] = {}
    for toks in ids.values():
        for t in toks:
            owners[t] = owners.get(t, 0) + 1
    ids = {name: [t for t in toks if owners[t] == 1] for name, toks in ids.items()}
    empty = [name for name, toks in ids.items() if not toks]
    if empty:
        raise ModelLoadError(f"the tokenizer cannot tell the answers {empty} apart from the others by their first token")
    return ids


# ---------------------------------------------------------------- loading


def pick_device(requested: str = "auto") -> torch.device:
    """cuda, then mps, then cpu — unless a device is named.

    >>> pick_device("cpu")
    device(type='cpu')
    """
    if requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device(type="cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device(type="mps")
    return torch.device(type="cpu")


def find_model_family(spec: ModelSpec) -> ModelFamily:
    """The family of the model a spec points at, from its config alone (the cheap part of a load).

    Raises ModelLoadError when there is no readable config or it names a class sludgelens does not serve.

    >>> find_model_family(ModelSpec("models/tiny-vqwen-qformer")).name  # doctest: +SKIP
    'blip2'
    """
    # Messages name a folder as the store does (never by its server path): they reach pages and API callers.
    shown = name_version(name_folder(spec.source), spec.revision) if spec.is_local else spec.label
    try:
        hf_config = AutoConfig.from_pretrained(spec.source, revision=spec.revision)
    except (OSError, ValueError) as err:
        log.info("cannot read the config of %s: %s", spec.label, err)
        where = "folder" if spec.is_local else "hub model (is the hub reachable from here?)"
        raise ModelLoadError(f"Cannot load {shown}: no usable {where}.") from err
    try:
        return find_family(hf_config.model_type)
    except UnknownFamilyError as err:
        raise ModelLoadError(f"{shown} is {err}.") from err


def load_model(spec: ModelSpec | str, config: EngineConfig = EngineConfig(), progress: bool = True) -> LoadedModel:
    """Load a local folder or a hub id (+ revision) as whichever stock class its config names. ``progress``
    False hides transformers' weight-loading bar (a caller drawing its own bar on the same terminal).

    >>> lm = load_model(ModelSpec("models/tiny-vqwen-qformer"))  # doctest: +SKIP
    >>> lm.family.name  # doctest: +SKIP
    'blip2'
    """
    spec = ModelSpec(spec) if isinstance(spec, str) else spec
    family = find_model_family(spec)
    device = pick_device(config.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    shown = hf_logging.is_progress_bar_enabled()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        model = family.model_class.from_pretrained(
            spec.source, revision=spec.revision, dtype=dtype, attn_implementation=family.attn_implementation
        )
    finally:
        if shown and not progress:
            hf_logging.enable_progress_bar()
    model.to(device).eval()
    processor = AutoProcessor.from_pretrained(spec.source, revision=spec.revision)
    processor.tokenizer.padding_side = "left"
    return LoadedModel(model=model, processor=processor, family=family, spec=spec, device=device, dtype=dtype,
                       identity=identify_model(spec), config=config)


# ---------------------------------------------------------------- the batched pass


def prepare_pixels(lm: LoadedModel, frames: np.ndarray | Sequence[np.ndarray], resized: bool = False) -> torch.Tensor:
    """Frames (N, H, W, 3) uint8 -> the processor's pixel tensor on the model's device and dtype.

    On a GPU, a torch-backed image processor resizes and normalises there, so the GPU does not wait on a
    resize on the CPU between batches. A PIL-backed processor, and every CPU, process on the CPU.
    ``resized``: the frames went through the processor's resize and crop already (:mod:`core.resize`),
    (N, 3, h, w) uint8, so only its rescale and normalisation are left.
    """
    images = list(frames)
    processor = lm.processor.image_processor
    on_device = {"device": lm.device} if lm.device.type == "cuda" and processes_with_torch(processor) else {}
    geometry = {"do_resize": False, "do_center_crop": False} if resized else {}
    pixels = processor(images=images, return_tensors="pt", **on_device, **geometry)["pixel_values"]
    return pixels.to(lm.device, lm.dtype)


def processes_with_torch(image_processor) -> bool:
    """Whether an image processor runs on torch tensors (transformers' torchvision backend), so it can run on
    the model's GPU; the PIL backend (where torchvision is not installed) runs on the CPU only."""
    try:
        from transformers.image_processing_backends import TorchvisionBackend
    except ImportError:  # a transformers without backends: its fast processors take no device
        return False
    return isinstance(image_processor, TorchvisionBackend)


def encode_frames(lm: LoadedModel, frames, want_attentions: bool = False, resized: bool = False) -> VisualTokens:
    """The vision side of the model, once per frame: its output serves every question asked of the frame.

    >>> vt = encode_frames(lm, frames[:4], want_attentions=True)  # doctest: +SKIP
    >>> vt.embeds.shape, len(vt.cross_attentions)  # doctest: +SKIP
    (torch.Size([4, 32, 128]), 2)
    """
    with torch.inference_mode():
        return lm.family.encode(lm.model, prepare_pixels(lm, frames, resized), want_attentions)


def build_rows(lm: LoadedModel, visual: torch.Tensor, questions: Sequence[str], keep: torch.Tensor | None = None):
    """Left-padded LM inputs for every (question, frame) pair, question-major.

    `visual` is (B, T, H). `keep` (B, T) bool drops image tokens from the sequence (LLaVA token selection):
    the rows really get shorter, so the LM does less work. Returns (inputs_embeds, attention_mask,
    position_ids, image_slot_positions) where image_slot_positions[r] lists the sequence positions of row r's
    image tokens.
    """
    B, T, _ = visual.shape
    rows: list[list[int]] = []
    sources: list[tuple[int, torch.Tensor | None]] = []
    for q in questions:
        ids = lm.prompt_ids(q)
        for b in range(B):
            if keep is None:
                rows.append(ids)
            else:
                kept = int(keep[b].sum())
                rows.append(_shrink_image_slots(ids, lm.image_token_id, T, kept))
            sources.append((b, None if keep is None else keep[b]))
    width = max(len(r) for r in rows)
    pad = lm.tokenizer.pad_token_id
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for r, ids in enumerate(rows):
        input_ids[r, width - len(ids):] = torch.tensor(ids)
        attention[r, width - len(ids):] = 1
    input_ids, attention = input_ids.to(lm.device), attention.to(lm.device)
    embeds = lm.model.get_input_embeddings()(input_ids)
    slot = input_ids == lm.image_token_id
    feats = []
    for b, k in sources:
        feats.append(visual[b] if k is None else visual[b][k.to(visual.device)])
    embeds = embeds.masked_scatter(slot.unsqueeze(-1), torch.cat(feats).to(embeds.dtype))
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    slot_positions = [torch.nonzero(slot[r]).flatten() for r in range(len(rows))]
    return embeds, attention, position_ids, slot_positions


def _shrink_image_slots(ids: list[int], image_id: int, total: int, kept: int) -> list[int]:
    first = ids.index(image_id)
    return ids[:first] + [image_id] * kept + ids[first + total:]


@dataclass
class AnswerPass:
    """One LM forward over [question x frame] rows: the answer logits and the layout of the rows.

    The layout is what explanations need to read the same forward: which positions are padding and where
    each row's image slots sit (so attention at the answer position can be mapped back to image tokens).
    """

    logits: torch.Tensor  # (len(questions), B, vocab) at the answer position
    attention_mask: torch.Tensor  # (rows, seq) 1 = real token, rows are question-major
    image_slots: list[torch.Tensor]  # per row, the sequence positions of its image tokens


def run_answer_pass(lm: LoadedModel, visual: VisualTokens, questions: Sequence[str], keep=None, **lm_kwargs) -> AnswerPass:
    """One LM forward for every (question, frame) pair, keeping the row layout with the logits.

    Whatever reads the LM around this call (e.g. :class:`core.explain.capture_answer_attention`, or forward
    hooks on LM layers) sees exactly the scoring forward, so what it reads comes from the pass that produced
    the scores.

    >>> ap = run_answer_pass(lm, encode_frames(lm, frames), [vocabulary.CLASSIFY])  # doctest: +SKIP
    >>> ap.logits.shape, len(ap.image_slots)  # doctest: +SKIP
    (torch.Size([1, 8, 1024]), 8)
    """
    with torch.inference_mode():
        embeds, attention, positions, slots = build_rows(lm, visual.embeds, questions, keep)
        out = lm.family.run_lm(lm.model, embeds, attention, positions, logits_to_keep=1, **lm_kwargs)
    B = visual.embeds.shape[0]
    logits = out.logits[:, -1, :].float().reshape(len(questions), B, -1)
    return AnswerPass(logits=logits, attention_mask=attention, image_slots=slots)


def answer_logits(lm: LoadedModel, visual: VisualTokens, questions: Sequence[str], keep=None, **lm_kwargs):
    """Next-token logits at the answer position, shaped (len(questions), B, vocab), from one LM forward."""
    return run_answer_pass(lm, visual, questions, keep, **lm_kwargs).logits


def answer_with_shared_prefix(lm: LoadedModel, visual: VisualTokens, questions: Sequence[str]) -> torch.Tensor:
    """The logits of :func:`answer_logits`, (len(questions), B, vocab), with each frame's image read by the LM once.

    Every question's prompt starts with the same tokens, the image slots among them. The LM runs that prefix once
    per frame, keeping its keys and values, then only each question's own tail on top of them (the cache is cut
    back to the prefix between questions). Against one full row per question this skips the repeated image
    tokens and all left padding: for the vqwen-qformer prompts, 85 instead of 130 LM positions per frame. Equal
    to :func:`answer_logits` up to float rounding; prompts whose image slots are not all in the shared prefix
    go through :func:`answer_logits`.

    >>> questions = [vocabulary.CLASSIFY, vocabulary.LAYOUT]
    >>> answer_with_shared_prefix(lm, encode_frames(lm, frames), questions).shape  # doctest: +SKIP
    torch.Size([2, 8, 1024])
    """
    prompts = [lm.prompt_ids(q) for q in questions]
    # Keep at least one token per tail: the answer position is a tail's last token.
    shared = min(count_shared_prefix(prompts), min(len(ids) for ids in prompts) - 1)
    if any(i == lm.image_token_id for ids in prompts for i in ids[shared:]):
        return answer_logits(lm, visual, questions)
    B = visual.embeds.shape[0]
    embed = lm.model.get_input_embeddings()
    with torch.inference_mode():
        prefix = torch.tensor(prompts[0][:shared], device=lm.device)
        embeds = embed(prefix).unsqueeze(0).repeat(B, 1, 1)
        embeds[:, prefix == lm.image_token_id] = visual.embeds.to(device=embeds.device, dtype=embeds.dtype)
        positions = torch.arange(shared, device=lm.device).unsqueeze(0).expand(B, -1)
        ones = torch.ones((B, shared), dtype=torch.long, device=lm.device)
        # No position's logits are wanted from the prefix: an empty index list skips the vocabulary projection.
        nothing = torch.zeros(0, dtype=torch.long, device=lm.device)
        out = lm.family.run_lm(lm.model, embeds, ones, positions, logits_to_keep=nothing, use_cache=True)
        cache = out.past_key_values
        if cache is None:  # the LM would not keep one (gradient checkpointing while training turns it off)
            return answer_logits(lm, visual, questions)
        logits = []
        for ids in prompts:
            tail = torch.tensor(ids[shared:], device=lm.device)
            ones = torch.ones((B, len(ids)), dtype=torch.long, device=lm.device)
            positions = torch.arange(shared, len(ids), device=lm.device).unsqueeze(0).expand(B, -1)
            out = lm.family.run_lm(
                lm.model, embed(tail).unsqueeze(0).expand(B, -1, -1), ones, positions,
                past_key_values=cache, use_cache=True,
            )
            logits.append(out.logits[:, -1, :].float())
            cache.crop(-len(tail))  # a negative count: drop the tail's positions again
    return torch.stack(logits)


def count_shared_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """How many leading ids all `prompts` have in common.

    >>> count_shared_prefix([[7, 7, 1, 2], [7, 7, 3]])
    2
    """
    shared = 0
    for column in zip(*prompts):
        if any(i != column[0] for i in column):
            break
        shared += 1
    return shared


def p_yes(lm: LoadedModel, logits: torch.Tensor) -> torch.Tensor:
    """P(yes) from next-token logits: softmax over the yes and no spellings, yes-mass summed."""
    yes = torch.logsumexp(logits[..., lm.yes_ids], dim=-1)
    no = torch.logsumexp(logits[..., lm.no_ids], dim=-1)
    return torch.sigmoid(yes - no)


def layout_probs(lm: LoadedModel, logits: torch.Tensor) -> torch.Tensor:
    """Distribution over the four layouts from next-token logits, each class's spellings summed."""
    per_class = torch.stack([torch.logsumexp(logits[..., ids], dim=-1) for ids in lm.layout_ids.values()], dim=-1)
    return per_class.softmax(dim=-1)


def score_frames(lm: LoadedModel, frames, batch_size: int | None = None, resized: bool = False) -> list[FrameScore]:
    """P(sludge) and layout for every frame: per chunk, one vision pass and the LM over the shared prefix and
    each question's tail (:func:`answer_with_shared_prefix`). ``resized``: the frames went through
    :func:`core.resize.resize_frames` already.

    >>> [s.label for s in score_frames(lm, frames)]  # doctest: +SKIP
    [True, True, False, ...]
    """
    batch_size = batch_size or lm.config.batch_size
    scores: list[FrameScore] = []
    for start in range(0, len(frames), batch_size):
        chunk = frames[start:start + batch_size]
        visual = encode_frames(lm, chunk, resized=resized)
        logits = answer_with_shared_prefix(lm, visual, [vocabulary.CLASSIFY, vocabulary.LAYOUT])
        scores.extend(summarise_logits(lm, logits))
    return scores


def summarise_logits(lm: LoadedModel, logits: torch.Tensor) -> list[FrameScore]:
    """Turn (2, B, vocab) classify+layout logits into FrameScores."""
    p = p_yes(lm, logits[0]).tolist()
    lay = layout_probs(lm, logits[1]).tolist()
    out = []
    for pb, lb in zip(p, lay):
        layout_scores = dict(zip(vocabulary.LAYOUTS, (round(x, 6) for x in lb)))
        label = pb >= lm.config.threshold
        best = max(layout_scores, key=layout_scores.get) if label else vocabulary.NO_LAYOUT
        out.append(FrameScore(p_sludge=round(pb, 6), label=label, layout=best, layout_scores=layout_scores))
    return out


def decide_video(scores: Sequence[FrameScore]) -> Verdict:
    """Majority vote of frame labels (ties go to sludge) with the mean P(sludge).

    >>> decide_video([FrameScore(0.9, True, "pip", {}), FrameScore(0.2, False, "none", {})]).label
    True
    """
    if not scores:
        raise ValueError("no frames to decide on")
    votes = sum(s.label for s in scores)
    majority = votes / len(scores)
    layouts = [s.layout for s in scores if s.label]
    # Ties go to the layout listed first in the vocabulary, so the verdict never depends on set order.
    layout = max(vocabulary.LAYOUTS, key=layouts.count) if layouts else vocabulary.NO_LAYOUT
    return Verdict(
        label=majority >= 0.5,
        majority=round(majority, 4),
        mean_p=round(float(np.mean([s.p_sludge for s in scores])), 4),
        frames=len(scores),
        layout=layout,
    )


# ---------------------------------------------------------------- free text


def ask(lm: LoadedModel, frame: np.ndarray, question: str, max_new_tokens: int = 48) -> str:
    """Answer a free question about one frame with greedy generation.

    >>> ask(lm, frame, "What is on the top half?")  # doctest: +SKIP
    'a cat photo'
    """
    text = lm.tokenizer.apply_chat_template(vocabulary.build_messages(question), add_generation_prompt=True, tokenize=False)
    inputs = lm.processor(text=text, images=frame, return_tensors="pt").to(lm.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(lm.dtype)
    with torch.inference_mode():
        out = lm.model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False,
            eos_token_id=lm.tokenizer.eos_token_id, pad_token_id=lm.tokenizer.pad_token_id,
        )
    new = lm.family.strip_prompt(out[0], inputs["input_ids"].shape[1])
    return lm.tokenizer.decode(new, skip_special_tokens=True).strip()


def describe(lm: LoadedModel, frame: np.ndarray) -> str:
    """A short grounded description of one frame."""
    return ask(lm, frame, vocabulary.DESCRIBE)


def explain_verdict(lm: LoadedModel, frame: np.ndarray) -> str:
    """The coupled classify+explain answer ("yes. Sludge: ...")."""
    return ask(lm, frame, vocabulary.EXPLAIN)
