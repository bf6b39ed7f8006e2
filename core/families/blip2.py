"""BLIP-2 (``Blip2ForConditionalGeneration``): vision tower -> Q-Former -> linear projection -> LM.

The 32 Q-Former query slots are the image tokens the LM reads; each slot gathers the patches through the
Q-Former's cross-attention, which is what the maps show (it runs eager, so its weights come back).
A token mask is a patch mask: the Q-Former is rerun with the dropped patches masked out of its
``encoder_attention_mask`` (CLS always kept), so the LM still reads 32 slots.

>>> family = Blip2Family()
>>> family.name, family.projector, family.language_model
('blip2', 'language_projection', 'language_model')
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    PreTrainedTokenizerFast,
)
from transformers.models.blip_2.configuration_blip_2 import (
    Blip2QFormerConfig,
    Blip2VisionConfig,
)

from core.config import EMBEDDED_BLIP2
from core.families import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGE_TOKEN,
    LM_LORA_TARGETS,
    ExplanationMaps,
    FeatureStage,
    ModelFamily,
    TinyCard,
    TinyConfig,
    VisualTokens,
    build_chat_template,
    build_text_config,
    with_chat_template,
)

# Blip2Processor prepends the 32 query slots itself, so the template renders the image part as nothing.
CHAT_TEMPLATE = build_chat_template("")


def run_qformer(model, vision_states: torch.Tensor, patch_mask: torch.Tensor | None = None,
                want_attentions: bool = False) -> VisualTokens:
    """Q-Former over the vision states, optionally with some patches masked out (CLS always kept).

    `patch_mask` (B, patches) is True / 1 for the patches the query slots may read.

    >>> visual = run_qformer(model, vision_states, patch_mask=keep)  # doctest: +SKIP
    >>> visual.embeds.shape  # doctest: +SKIP
    torch.Size([4, 32, 128])
    """
    mask = torch.ones(vision_states.shape[:2], dtype=torch.long, device=vision_states.device)
    if patch_mask is not None:
        mask[:, 1:] = patch_mask.to(mask.dtype)
    queries = model.query_tokens.expand(vision_states.shape[0], -1, -1)
    out = model.qformer(
        query_embeds=queries,
        encoder_hidden_states=vision_states,
        encoder_attention_mask=mask,
        output_attentions=want_attentions,
        return_dict=True,
    )
    query_out = out.last_hidden_state.to(model.language_projection.weight.dtype)
    cross = tuple(a.float() for a in out.cross_attentions) if want_attentions else None
    return VisualTokens(embeds=model.language_projection(query_out), cross_attentions=cross, vision_states=vision_states)


def _query_states(model, vision_states: torch.Tensor) -> torch.Tensor:
    """The Q-Former's query outputs (B, 32, H_qformer) over all patches: the projector's input."""
    mask = torch.ones(vision_states.shape[:2], dtype=torch.long, device=vision_states.device)
    queries = model.query_tokens.expand(vision_states.shape[0], -1, -1)
    return model.qformer(query_embeds=queries, encoder_hidden_states=vision_states, encoder_attention_mask=mask,
                         return_dict=True).last_hidden_state


def _first_adapted_block(model, vision_blocks: int) -> int:
    """The index of the first of the tower's last `vision_blocks` blocks; refuses a count the tower lacks."""
    depth = len(model.vision_model.encoder.layers)
    if not 1 <= vision_blocks <= depth:
        raise ValueError(f"--vision-blocks {vision_blocks}: a blip2 model's vision tower has {depth} blocks")
    return depth - vision_blocks


def _cross_attention_views(cross: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    """Q-Former views from the cross-attention tuple: per query, per layer, mean, max — CLS dropped."""
    c = torch.stack(cross, dim=1)[..., 1:]  # (B, layers, heads, queries, patches)
    per_query = c.mean(dim=(1, 2))  # (B, Q, P)
    maps = {"mean": c.mean(dim=(1, 2, 3)), "max": per_query.max(dim=1).values}
    for layer in range(c.shape[1]):
        maps[f"layer_{layer}"] = c[:, layer].mean(dim=(1, 2))
    maps["per_query"] = per_query
    maps["raw"] = c
    return maps


class Blip2Family(ModelFamily):
    """``Blip2ForConditionalGeneration`` checkpoints (transformers' model_type "blip-2")."""

    name = "blip2"
    model_type = "blip-2"
    model_class = Blip2ForConditionalGeneration
    # The Q-Former runs eager because SDPA returns no attention weights and the explanations read its
    # cross-attention; everything else keeps the fast kernel.
    attn_implementation = {"qformer_config": "eager", "vision_config": "sdpa", "text_config": "sdpa", "": "sdpa"}
    projector = "language_projection"
    language_model = "language_model"
    embedded = EMBEDDED_BLIP2

    # ------------------------------------------------------------ scoring

    def encode(self, model, pixel_values: torch.Tensor, want_attentions: bool = False) -> VisualTokens:
        """Vision tower, then the Q-Former (its cross-attention kept when `want_attentions`).

        >>> Blip2Family().encode(model, pixels, want_attentions=True).cross_attentions[0].shape  # doctest: +SKIP
        torch.Size([4, 4, 32, 257])
        """
        vision_states = model.vision_model(pixel_values=pixel_values, return_dict=True).last_hidden_state
        return run_qformer(model, vision_states, None, want_attentions)

    def run_lm(self, model, inputs_embeds, attention_mask, position_ids, logits_to_keep: int = 1, **kw):
        """The wrapped causal LM alone: the image slots are already in `inputs_embeds`."""
        return model.language_model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
            logits_to_keep=logits_to_keep, **kw,
        )

    def strip_prompt(self, generated: torch.Tensor, prompt_length: int) -> torch.Tensor:
        """BLIP-2's generate returns the prompt ids followed by the new ones (only the new ones when short)."""
        return generated[prompt_length:] if generated.shape[0] > prompt_length else generated

    # ------------------------------------------------------------ explanations

    def mask_tokens(self, model, visual: VisualTokens, rows: torch.Tensor, keep: torch.Tensor):
        """Rerun the Q-Former on the stored vision states with the dropped patches masked out; the LM rows
        keep all 32 slots.

        >>> sub, lm_keep = Blip2Family().mask_tokens(model, visual, torch.tensor([0, 0]), keep)  # doctest: +SKIP
        >>> sub.embeds.shape, lm_keep  # doctest: +SKIP
        (torch.Size([2, 32, 128]), None)
        """
        return run_qformer(model, visual.vision_states[rows], keep, False), None

    def explanation_maps(
        self, visual: VisualTokens, slot_attention: torch.Tensor, answer_attention: torch.Tensor,
        image_slots: Sequence[torch.Tensor], layer_ids: Sequence[int],
    ) -> ExplanationMaps:
        """Q-Former cross-attention views (``mean``, ``max``, ``layer_<i>``, per query), and the ``question``
        map: the answer's attention onto the query slots composed with the last cross-attention layer.

        >>> em = Blip2Family().explanation_maps(visual, slots, answer_attention, image_slots, [0, 1, 2])  # doctest: +SKIP
        >>> sorted(em.maps), em.per_query.shape  # doctest: +SKIP
        (['layer_0', 'layer_1', 'max', 'mean', 'question'], torch.Size([4, 32, 256]))
        """
        maps = _cross_attention_views(visual.cross_attentions)
        per_query = maps.pop("per_query")
        raw = maps.pop("raw")
        # The query slots' final states come out of the last cross-attention layer (earlier ones are re-mixed
        # by the self-attention above them), so that is the layer the answer's attention is composed with.
        last = raw[:, -1].mean(dim=1)  # (B, Q, P), mean over heads
        maps["question"] = torch.einsum("bq,bqp->bp", slot_attention.to(last.dtype), last)
        return ExplanationMaps(maps=maps, per_query=per_query, cross_attention=raw)

    def gradient_relevance(
        self, model, visual: VisualTokens, log_answer: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """Gradient x attention on the Q-Former cross-attention: ``relu(grad * attn)`` summed over layers and
        queries, mean over heads, CLS dropped; (B, patches).

        >>> Blip2Family().gradient_relevance(model, visual, log_answer).shape  # doctest: +SKIP
        torch.Size([4, 256])
        """
        with torch.inference_mode(False), torch.enable_grad():
            states = visual.vision_states.detach().clone()
            B = states.shape[0]
            out = model.qformer(
                query_embeds=model.query_tokens.expand(B, -1, -1), encoder_hidden_states=states,
                encoder_attention_mask=torch.ones(states.shape[:2], dtype=torch.long, device=states.device),
                output_attentions=True, return_dict=True,
            )
            attentions = tuple(out.cross_attentions)
            embeds = model.language_projection(out.last_hidden_state.to(model.language_projection.weight.dtype))
            grads = torch.autograd.grad(log_answer(embeds), attentions)
        per_layer = [(g * a).clamp_min(0).mean(dim=1).sum(dim=1)[:, 1:] for g, a in zip(grads, attentions)]
        return torch.stack(per_layer).sum(dim=0).detach().float()

    # ------------------------------------------------------------ fine-tuning

    # Every part of ADAPT_PARTS: the Q-Former is BLIP-2's bridge.
    adaptable_parts = ("lm", "projector", "projector-lora", "qformer", "vision")
    # EVA-CLIP blocks: one fused qkv Linear and the attention's output projection, then the MLP.
    vision_block_linears = ("self_attn.qkv", "self_attn.projection", "mlp.fc1", "mlp.fc2")

    def adapter_targets(self, model, part: str, vision_blocks: int = 2,
                        lm_targets: Sequence[str] = LM_LORA_TARGETS) -> str:
        """The regex of the module names LoRA goes on for `part`; "qformer" is the query/key/value/output dense
        layers of every Q-Former layer's self-attention and cross-attention (not its feed-forward).

        >>> import re
        >>> pattern = re.compile(Blip2Family().adapter_targets(None, "qformer"))
        >>> names = ["attention.attention.query", "crossattention.output.dense", "output_query.dense"]
        >>> [bool(pattern.fullmatch(f"qformer.encoder.layer.0.{name}")) for name in names]
        [True, True, False]
        """
        if part == "qformer":
            return (r"^qformer\.encoder\.layer\.\d+\.(attention|crossattention)"
                    r"\.(attention\.(query|key|value)|output\.dense)$")
        return super().adapter_targets(model, part, vision_blocks, lm_targets)

    def vision_block_names(self, model, vision_blocks: int) -> list[str]:
        """The last `vision_blocks` blocks of the vision tower (the Q-Former reads its last block's output).

        >>> Blip2Family().vision_block_names(model, 2)  # doctest: +SKIP
        ['vision_model.encoder.layers.2', 'vision_model.encoder.layers.3']
        """
        first = _first_adapted_block(model, vision_blocks)
        return [f"vision_model.encoder.layers.{k}" for k in range(first, len(model.vision_model.encoder.layers))]

    def frozen_features(self, model, pixel_values: torch.Tensor, stage: FeatureStage = FeatureStage()) -> torch.Tensor:
        """What the frozen part hands the first part that runs per step: the Q-Former's query outputs
        (B, 32, H_qformer) by default, the vision tower's output (B, 1 + patches, H_vision) when the Q-Former
        adapts, the input of the first adapted vision block (same shape) when the tower's last blocks adapt.

        >>> Blip2Family().frozen_features(model, pixels).shape  # doctest: +SKIP
        torch.Size([4, 32, 96])
        >>> Blip2Family().frozen_features(model, pixels, FeatureStage("vision", 2)).shape  # doctest: +SKIP
        torch.Size([4, 257, 128])
        """
        vision = model.vision_model
        if stage.start == "vision":
            hidden = vision.embeddings(pixel_values)
            for block in vision.encoder.layers[:_first_adapted_block(model, stage.vision_blocks)]:
                hidden = block(hidden)
            return hidden
        states = vision(pixel_values=pixel_values, return_dict=True).last_hidden_state
        return states if stage.start == "qformer" else _query_states(model, states)

    def finish_features(self, model, cached: torch.Tensor, stage: FeatureStage) -> torch.Tensor:
        """The adapted rest on the cached stage, up to the projector's input: the last vision blocks and the
        tower's post-layernorm (stage "vision"), then the Q-Former (stages "vision" and "qformer").

        >>> stage = FeatureStage("qformer")
        >>> cached = Blip2Family().frozen_features(model, pixels, stage)  # doctest: +SKIP
        >>> Blip2Family().finish_features(model, cached, stage).shape  # doctest: +SKIP
        torch.Size([4, 32, 96])
        """
        if stage.start == "projector":
            return cached
        states = cached
        if stage.start == "vision":
            vision = model.vision_model
            for block in vision.encoder.layers[_first_adapted_block(model, stage.vision_blocks):]:
                states = block(states)
            states = vision.post_layernorm(states)
        return _query_states(model, states)

    # ------------------------------------------------------------ the tiny embedded checkpoint

    def build_tiny(self, tok: PreTrainedTokenizerFast, tiny: TinyConfig = TinyConfig()):
        """A randomly initialised tiny Blip2ForConditionalGeneration with a Qwen3 decoder, and its processor.

        >>> model, processor = Blip2Family().build_tiny(build_tokenizer(["yes no"], 300))  # doctest: +SKIP
        """
        # Imported here: naming an image processor class makes transformers pick (and log) its backend.
        from transformers import BlipImageProcessor

        tok = with_chat_template(tok, CHAT_TEMPLATE)
        vision = Blip2VisionConfig(
            hidden_size=tiny.vision_hidden,
            intermediate_size=tiny.vision_mlp,
            num_hidden_layers=tiny.vision_layers,
            num_attention_heads=tiny.vision_heads,
            image_size=tiny.image_size,
            patch_size=tiny.patch_size,
            qkv_bias=True,
            # Blip2VisionConfig defaults to 1e-10, which only makes sense when pretrained EVA weights are loaded
            # over it; a tower trained from scratch needs the usual ViT scale or it never leaves zero.
            initializer_range=0.02,
        )
        qformer = Blip2QFormerConfig(
            hidden_size=tiny.qformer_hidden,
            num_hidden_layers=tiny.qformer_layers,
            num_attention_heads=tiny.qformer_heads,
            intermediate_size=tiny.qformer_mlp,
            cross_attention_frequency=tiny.qformer_cross_attention_frequency,
            encoder_hidden_size=tiny.vision_hidden,
            vocab_size=len(tok),
            max_position_embeddings=tiny.max_positions,
        )
        config = Blip2Config(
            vision_config=vision.to_dict(),
            qformer_config=qformer.to_dict(),
            text_config=build_text_config(tok, tiny).to_dict(),
            num_query_tokens=tiny.num_query_tokens,
            image_token_index=tok.convert_tokens_to_ids(IMAGE_TOKEN),
        )
        model = Blip2ForConditionalGeneration(config)
        # Stock init sets the 32 query tokens to zeros (they are always loaded from a checkpoint); identical
        # queries get identical gradients and never tell apart, so a from-scratch model draws them at random.
        with torch.no_grad():
            model.query_tokens.normal_(0.0, 0.02)
        image_processor = BlipImageProcessor(
            size={"height": tiny.image_size, "width": tiny.image_size},
            image_mean=CLIP_MEAN,
            image_std=CLIP_STD,
            do_convert_rgb=True,
        )
        processor = Blip2Processor(image_processor=image_processor, tokenizer=tok, num_query_tokens=tiny.num_query_tokens)
        return model, processor

    def patch_states(self, visual: VisualTokens) -> torch.Tensor:
        """The vision tower's patch states, CLS dropped: the Q-Former's slots are no patch grid."""
        return visual.vision_states[:, 1:]

    def patch_width(self, model) -> int:
        return model.config.vision_config.hidden_size

    def describe_tiny(self, tiny: TinyConfig) -> TinyCard:
        """The model card's words for a tiny BLIP-2.

        >>> Blip2Family().describe_tiny(TinyConfig()).shape.split(" -> ")[0]
        'EVA-style ViT (4 layers, width 128, 224 px, patch 14: 16x16 grid + CLS)'
        """
        shape = (
            f"EVA-style ViT ({tiny.vision_layers} layers, width {tiny.vision_hidden}, {tiny.image_size} px, patch "
            f"{tiny.patch_size}: 16x16 grid + CLS) -> Q-Former ({tiny.qformer_layers} layers, width {tiny.qformer_hidden}, "
            f"{tiny.num_query_tokens} queries, cross-attention every {tiny.qformer_cross_attention_frequency}nd layer) -> "
            f"Linear -> Qwen3 ({tiny.text_layers} layers, width {tiny.text_hidden}, GQA {tiny.text_heads}/{tiny.text_kv_heads})"
        )
        return TinyCard(heading="Embedded default", role="It is the model the app loads when no other is configured",
                        shape=shape, image_size=tiny.image_size)
