"""One module per model family: everything that differs between the stock classes sludgelens serves.

A family is chosen by the checkpoint's ``config.model_type``, never by its name. Each one says how its
class is loaded, how frames become the image tokens the LM reads (and what the explanations read on the
way), how the LM runs, how a subset of the image tokens is re-scored, which maps explain it, what
fine-tuning can adapt (and where it cuts the vision side to cache the frozen part), and how its tiny
embedded checkpoint is built:

* :mod:`core.families.blip2` — ``Blip2ForConditionalGeneration``: vision -> Q-Former -> projection -> LM;
* :mod:`core.families.llava` — ``LlavaForConditionalGeneration``: vision -> MLP projector -> LM.

The rest of the app holds a :class:`ModelFamily` (``LoadedModel.family``) and calls its methods.

>>> find_family("llava").name
'llava'
>>> sorted(family.name for family in FAMILIES.values())
['blip2', 'llava']
"""

from __future__ import annotations

import copy
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from transformers import PreTrainedTokenizerFast, Qwen3Config

__all__ = [
    "ModelFamily", "VisualTokens", "ExplanationMaps", "TinyConfig", "TinyCard", "UnknownFamilyError", "FAMILIES",
    "FeatureStage", "ADAPT_PARTS", "LM_LORA_TARGETS", "feature_stage", "anchored", "find_family",
    "build_text_config", "build_chat_template", "with_chat_template", "IMAGE_TOKEN", "CLIP_MEAN", "CLIP_STD",
]


class UnknownFamilyError(LookupError):
    """A checkpoint (or a name) of a family sludgelens does not serve; the message names the ones it does."""


# The parts of a model fine-tuning can adapt (training.finetune's ``--adapt``); a family lists the ones it has.
# "lm": LoRA on the language model; "projector": the projector trained fully; "projector-lora": LoRA on the
# projector's Linear layers instead; "qformer": LoRA on the Q-Former's attention (BLIP-2); "vision": LoRA on
# the last blocks of the vision tower.
ADAPT_PARTS = ("lm", "projector", "projector-lora", "qformer", "vision")
# The language model's projections LoRA goes on (Qwen3's, as on the vqwen card).
LM_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class FeatureStage:
    """Where fine-tuning cuts the vision side: everything before ``start`` is frozen, so its output per frame
    is computed once and cached; ``start`` and what follows it run in every training step.

    >>> FeatureStage(), FeatureStage("vision", 2).describe()
    (FeatureStage(start='projector', vision_blocks=0), 'the input of the last 2 vision blocks')
    """

    # The first part that runs per step: "projector" (the card's recipe: the projector's input is cached),
    # "qformer" (the vision tower's output is cached) or "vision" (the input of the last blocks is cached).
    start: str = "projector"
    # With start "vision": how many of the tower's last blocks run per step.
    vision_blocks: int = 0

    def describe(self) -> str:
        """What the feature cache holds, in words (for logs and the run's report)."""
        if self.start == "vision":
            return f"the input of the last {self.vision_blocks} vision blocks"
        return {"qformer": "the vision tower's output", "projector": "the projector's input"}[self.start]


def feature_stage(parts: Sequence[str], vision_blocks: int = 0) -> FeatureStage:
    """The stage to cache at when `parts` adapt: below the lowest adapted part of the vision side.

    >>> feature_stage(("lm", "projector")), feature_stage(("lm", "qformer", "vision"), 2).start
    (FeatureStage(start='projector', vision_blocks=0), 'vision')
    """
    if "vision" in parts:
        return FeatureStage("vision", vision_blocks)
    if "qformer" in parts:
        return FeatureStage("qformer")
    return FeatureStage()


def anchored(names: Sequence[str]) -> str:
    """A regex that full-matches exactly these module names (as peft's ``target_modules`` string is matched).

    >>> anchored(["language_projection"])
    '^(language_projection)$'
    """
    return "^(" + "|".join(re.escape(name) for name in names) + ")$"


@dataclass
class VisualTokens:
    """A chunk of frames after the vision side: what the LM sees, plus what explanations need."""

    embeds: torch.Tensor  # (B, T, H_lm): the projected image tokens the LM reads
    # BLIP-2 only: Q-Former cross-attention per cross-attention layer, each (B, heads, queries, 1 + patches).
    cross_attentions: tuple[torch.Tensor, ...] | None = None
    # The raw vision-encoder output, kept so a masked re-score can rerun the Q-Former without a second
    # vision pass (B, 1 + patches, H_vision); None for LLaVA, whose tokens are the projected patches.
    vision_states: torch.Tensor | None = None


@dataclass
class ExplanationMaps:
    """A chunk's maps over the patch grid, each (B, patches), and the raw tensors some families keep."""

    maps: dict[str, torch.Tensor]  # view name -> (B, patches); "question" is the relevance a mask is cut from
    per_query: torch.Tensor | None = None  # (B, queries, patches) Q-Former maps per query, else None
    # (B, layers, heads, queries, patches): the Q-Former cross-attention every view above is a mean of.
    cross_attention: torch.Tensor | None = None


@dataclass(frozen=True)
class TinyConfig:
    """Widths and depths of the embedded models; every field keeps the checkpoint under 25 MB."""

    # A byte-level BPE over our own prompt/answer corpus: ~1k merges spell every word we train on as
    # one or two tokens, and bytes spell anything a user types into the Ask box.
    vocab_size: int = 1024
    # 224 px with 14 px patches is EVA-CLIP-G/14's input: a 16x16 grid + CLS = 257 vision tokens.
    image_size: int = 224
    patch_size: int = 14
    # Vision encoder: 4 layers of width 128 are enough to see a seam between two streams.
    vision_hidden: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    vision_mlp: int = 384
    # Q-Former: 32 queries like the real one; cross-attention every 2nd layer, as in BLIP-2.
    num_query_tokens: int = 32
    qformer_hidden: int = 96
    qformer_layers: int = 4
    qformer_heads: int = 4
    qformer_mlp: int = 256
    qformer_cross_attention_frequency: int = 2
    # Qwen3 decoder: grouped-query attention (4 heads over 2 KV heads) like Qwen3-4B, at width 128.
    text_hidden: int = 128
    text_layers: int = 3
    text_heads: int = 4
    text_kv_heads: int = 2
    text_head_dim: int = 32
    text_mlp: int = 384
    max_positions: int = 512
    # 0 = exactly the tokenizer's size; a real-shape test config sets Qwen3's 151936 rows.
    text_vocab_size: int = 0
    # LLaVA sibling: CLIP-style tower at 168 px -> a 12x12 grid (144 image tokens), cheaper than 24x24.
    llava_image_size: int = 168
    llava_vision_layers: int = 4


@dataclass(frozen=True)
class TinyCard:
    """What a tiny checkpoint's model card says about its family."""

    heading: str  # "Embedded default" for the model the app loads first, else "Embedded model"
    role: str  # one sentence: where the app uses it
    shape: str  # the architecture, with the widths of the TinyConfig it was built from
    image_size: int  # the input side in pixels


class ModelFamily(ABC):
    """What differs between stock classes; one subclass per family, one instance of each in ``FAMILIES``.

    Methods that run the model take the model itself (not a LoadedModel), so training code can call them on
    a model it is building.

    >>> family = find_family("llava")
    >>> family.model_class.__name__, family.projector, family.language_model
    ('LlavaForConditionalGeneration', 'model.multi_modal_projector', 'model.language_model')
    """

    # Our name for the family: what the CLI, explanations and the status line say.
    name: str
    # transformers' config.model_type of the checkpoints this family loads.
    model_type: str
    model_class: type
    # Attention kernels per sub-model, as `from_pretrained(attn_implementation=...)` takes them.
    attn_implementation: dict | str
    # Submodule paths: the vision->LM projector (trained fully by the card's fine-tuning recipe) and the language
    # model (where the recipe's LoRA goes). Everything else is the vision side, frozen unless --adapt says so.
    projector: str
    language_model: str
    # Folder of the tiny checkpoint of this family that ships with the app.
    embedded: Path

    # ------------------------------------------------------------ scoring

    @abstractmethod
    def encode(self, model, pixel_values: torch.Tensor, want_attentions: bool = False) -> VisualTokens:
        """The vision side, once per frame: the image tokens the LM reads and what explanations need."""

    @abstractmethod
    def run_lm(self, model, inputs_embeds, attention_mask, position_ids, logits_to_keep: int = 1, **kw):
        """One forward of the language model over ready-made input embeddings; returns the stock output."""

    def strip_prompt(self, generated: torch.Tensor, prompt_length: int) -> torch.Tensor:
        """The newly generated ids of one row of ``model.generate`` output, whose first ids may be the prompt."""
        return generated[prompt_length:]

    # ------------------------------------------------------------ explanations

    @abstractmethod
    def mask_tokens(self, model, visual: VisualTokens, rows: torch.Tensor, keep: torch.Tensor):
        """The image tokens of frames `rows` of `visual` with only the `keep` (K, M) tokens left.

        Returns ``(visual, lm_keep)``: the VisualTokens the LM is to read and the keep mask the LM rows are
        built with (None when the masking already happened on the vision side).
        """

    @abstractmethod
    def explanation_maps(
        self, visual: VisualTokens, slot_attention: torch.Tensor, answer_attention: torch.Tensor,
        image_slots: Sequence[torch.Tensor], layer_ids: Sequence[int],
    ) -> ExplanationMaps:
        """The maps of a chunk of B frames, from its vision pass and the answer's attention.

        `slot_attention` (B, T) is the answer position's attention onto each frame's image slots (mean over
        the read LM layers and heads); `answer_attention` (layers, rows, heads, seq) is the raw read, whose
        first B rows are the frames' rows; `image_slots[r]` lists row r's image-slot positions.
        """

    @abstractmethod
    def gradient_relevance(
        self, model, visual: VisualTokens, log_answer: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """(B, patches) gradient relevance; `log_answer(embeds)` is the summed log P of the answers explained."""

    # ------------------------------------------------------------ fine-tuning

    # The parts of ADAPT_PARTS this family has (a LLaVA model has no Q-Former).
    adaptable_parts: tuple[str, ...] = ("lm", "projector", "projector-lora", "vision")
    # The Linear layers of one vision block that LoRA goes on (attention and MLP), relative to the block.
    vision_block_linears: tuple[str, ...] = ()

    @abstractmethod
    def frozen_features(self, model, pixel_values: torch.Tensor, stage: FeatureStage = FeatureStage()) -> torch.Tensor:
        """What the frozen part of the vision side hands the first part that runs per step (B, T, H); computed
        once per frame when training. The default stage is the projector's input."""

    @abstractmethod
    def finish_features(self, model, cached: torch.Tensor, stage: FeatureStage) -> torch.Tensor:
        """The rest of the vision side on :meth:`frozen_features` of `stage`, up to the projector's input.

        ``finish_features(m, frozen_features(m, px, stage), stage)`` equals ``frozen_features(m, px)``.
        """

    def vision_block_names(self, model, vision_blocks: int) -> list[str]:
        """The module names of the vision tower's last `vision_blocks` blocks that the features are read from."""
        raise ValueError(f"a {self.name} model has no vision blocks to adapt")

    def adapter_targets(self, model, part: str, vision_blocks: int = 2,
                        lm_targets: Sequence[str] = LM_LORA_TARGETS) -> str:
        """The regex of the full module names LoRA goes on for one part of ``ADAPT_PARTS`` (not "projector",
        which trains whole); a part the family does not have is refused by name.

        >>> find_family("llava").adapter_targets(None, "lm", lm_targets=["q_proj"])
        '^model\\\\.language_model\\\\..*\\\\.(q_proj)$'
        >>> find_family("llava").adapter_targets(None, "qformer")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: --adapt qformer: a llava model (LlavaForConditionalGeneration) has no Q-Former; ...
        """
        self.check_part(part)
        if part == "lm":
            # Only under the LM: the vision tower and Q-Former of some classes have layers with the same names.
            prefix = self.language_model.replace(".", r"\.")
            return rf"^{prefix}\..*\.({'|'.join(lm_targets)})$"
        if part == "projector-lora":
            linears = [name for name, module in model.named_modules()
                       if (name == self.projector or name.startswith(self.projector + "."))
                       and isinstance(module, torch.nn.Linear)]
            return anchored(linears)
        if part == "vision":
            blocks = "|".join(re.escape(name) for name in self.vision_block_names(model, vision_blocks))
            linears = "|".join(re.escape(name) for name in self.vision_block_linears)
            return rf"^({blocks})\.({linears})$"
        raise ValueError(f"--adapt {part} trains the projector whole; it has no LoRA targets")

    def check_part(self, part: str) -> None:
        """Refuse a part this family does not have, naming the family and the parts it has."""
        if part not in ADAPT_PARTS:
            raise ValueError(f"--adapt {part}: unknown part; choose from {', '.join(ADAPT_PARTS)}")
        if part not in self.adaptable_parts:
            missing = {"qformer": "Q-Former"}.get(part, part)
            raise ValueError(f"--adapt {part}: a {self.name} model ({self.model_class.__name__}) has no {missing}; "
                             f"it can adapt {', '.join(self.adaptable_parts)}")

    def trained_modules(self, model, parts: Sequence[str] = ("lm", "projector"),
                        vision_blocks: int = 2) -> tuple[str, ...]:
        """Submodules in train mode (dropout on) while fine-tuning `parts`: the LM and the projector whole, and of
        the Q-Former and the vision tower only the adapted layers (their LoRA dropout), so the frozen rest keeps
        computing what it computed when its output was cached.

        >>> find_family("blip2").trained_modules(None, ("lm", "projector"))
        ('language_model', 'language_projection')
        """
        names = []
        if "lm" in parts:
            names.append(self.language_model)
        if "projector" in parts or "projector-lora" in parts:
            names.append(self.projector)
        for part in ("qformer", "vision"):
            if part in parts:
                pattern = re.compile(self.adapter_targets(model, part, vision_blocks))
                names += [name for name, _ in model.named_modules() if pattern.fullmatch(name)]
        return tuple(names)

    # ------------------------------------------------------------ the tiny embedded checkpoint

    @abstractmethod
    def build_tiny(self, tok: PreTrainedTokenizerFast, tiny: TinyConfig = TinyConfig()):
        """A randomly initialised tiny model of this family with a Qwen3 decoder, and its processor."""

    @abstractmethod
    def patch_states(self, visual: VisualTokens) -> torch.Tensor:
        """(B, patches, H) per-patch features of the vision side, for the stream-border head of tiny training."""

    @abstractmethod
    def patch_width(self, model) -> int:
        """H of :meth:`patch_states` for this model."""

    @abstractmethod
    def describe_tiny(self, tiny: TinyConfig) -> TinyCard:
        """What the model card of a tiny checkpoint built from `tiny` says about the family."""

    def __repr__(self) -> str:
        return f"<model family {self.name}>"


# ---------------------------------------------------------------- what tiny checkpoints share

IMAGE_TOKEN = "<image>"

# CLIP's normalisation, which both BLIP-2 (EVA-CLIP) and LLaVA (CLIP ViT-L) use.
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def build_chat_template(image_part: str) -> str:
    """Qwen's chat template reduced to what we use, with `image_part` where a message's image goes.

    >>> "{{ '<image>' }}" in build_chat_template("{{ '<image>' }}")
    True
    """
    return (
        "{%- for message in messages -%}"
        "{{ '<|im_start|>' + message['role'] + '\\n' }}"
        "{%- if message['content'] is string -%}{{ message['content'] }}"
        "{%- else -%}{%- for part in message['content'] -%}"
        "{%- if part['type'] == 'image' -%}" + image_part +
        "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}"
        "{{ '<|im_end|>\\n' }}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
    )


def build_text_config(tok: PreTrainedTokenizerFast, tiny: TinyConfig) -> Qwen3Config:
    """The Qwen3 decoder config every tiny family shares, sized by `tiny` and the tokenizer.

    >>> build_text_config(tok, TinyConfig()).num_hidden_layers  # doctest: +SKIP
    3
    """
    return Qwen3Config(
        vocab_size=tiny.text_vocab_size or len(tok),
        hidden_size=tiny.text_hidden,
        intermediate_size=tiny.text_mlp,
        num_hidden_layers=tiny.text_layers,
        num_attention_heads=tiny.text_heads,
        num_key_value_heads=tiny.text_kv_heads,
        head_dim=tiny.text_head_dim,
        max_position_embeddings=tiny.max_positions,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
    )


def with_chat_template(tok: PreTrainedTokenizerFast, template: str) -> PreTrainedTokenizerFast:
    """A copy of the tokenizer carrying a family's chat template (the template lives on the tokenizer).

    >>> with_chat_template(tok, build_chat_template("")).chat_template is not None  # doctest: +SKIP
    True
    """
    tok = copy.deepcopy(tok)
    tok.chat_template = template
    return tok


# ---------------------------------------------------------------- the registry

# The family modules subclass ModelFamily and use the helpers above, so they are imported after them.
from core.families.blip2 import Blip2Family  # noqa: E402
from core.families.llava import LlavaFamily  # noqa: E402

FAMILIES: dict[str, ModelFamily] = {family.model_type: family for family in (Blip2Family(), LlavaFamily())}


def find_family(key: str) -> ModelFamily:
    """The family of a checkpoint, by its transformers ``model_type`` or by our name for the family.

    >>> find_family("llava").model_class.__name__
    'LlavaForConditionalGeneration'
    >>> find_family("blip2") is find_family(find_family("blip2").model_type)
    True
    >>> find_family("qwen3")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    core.families.UnknownFamilyError: a 'qwen3' model; sludgelens serves blip2 (model_type ...) and llava ... checkpoints
    """
    for family in FAMILIES.values():
        if key in (family.model_type, family.name):
            return family
    served = " and ".join(f"{f.name} (model_type '{f.model_type}')" for f in FAMILIES.values())
    raise UnknownFamilyError(f"a '{key}' model; sludgelens serves {served} checkpoints")
