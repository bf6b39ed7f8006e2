"""LLaVA (``LlavaForConditionalGeneration``): vision tower -> MLP projector -> LM, one image token per patch.

The image tokens are the projected patches themselves, so the maps are the LM's attention from the answer
position onto them, and a token mask removes the dropped image tokens from the LM sequence (which really
shortens it).

>>> family = LlavaFamily()
>>> family.name, family.projector, family.language_model
('llava', 'model.multi_modal_projector', 'model.language_model')
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from transformers import (
    CLIPVisionConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from core.config import EMBEDDED_LLAVA
from core.families import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGE_TOKEN,
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

# The template renders "<image>" where the processor expands it to one token per patch.
CHAT_TEMPLATE = build_chat_template("{{ '<image>' }}")


def _tower_body(model):
    """The CLIP tower's embeddings, pre-layernorm and encoder (on ``vision_model`` in older class layouts)."""
    tower = model.get_submodule("model.vision_tower")
    return getattr(tower, "vision_model", tower)


def _read_layers(model) -> list[int]:
    """The hidden-state indices the features are read from, counted from 0 (the embeddings)."""
    layers = model.config.vision_feature_layer
    count = len(_tower_body(model).encoder.layers) + 1
    return [layer % count for layer in (layers if isinstance(layers, (list, tuple)) else [layers])]


def _first_adapted_block(model, vision_blocks: int) -> tuple[int, list[int]]:
    """The first of the last `vision_blocks` blocks the features are read from, and the read hidden states.

    Refuses a count the tower lacks, and a multi-layer read that takes a hidden state before that block.
    """
    read = _read_layers(model)
    first = max(read) - vision_blocks
    if vision_blocks < 1 or first < 0:
        raise ValueError(f"--vision-blocks {vision_blocks}: a llava model's features are read from "
                         f"{max(read)} vision blocks (vision_feature_layer {model.config.vision_feature_layer})")
    if min(read) < first:
        raise ValueError(f"--vision-blocks {vision_blocks}: the features also read hidden state {min(read)}, "
                         f"which lies before the adapted blocks; adapt at least {max(read) - min(read)} blocks")
    return first, read


def _select_features(model, hidden) -> torch.Tensor:
    """The read hidden states (indexable by _read_layers' indices), CLS stripped under "default", concatenated."""
    strip = model.config.vision_feature_select_strategy == "default"
    return torch.cat([hidden[i][:, 1:] if strip else hidden[i] for i in _read_layers(model)], dim=-1)


class LlavaFamily(ModelFamily):
    """``LlavaForConditionalGeneration`` checkpoints (transformers' model_type "llava")."""

    name = "llava"
    model_type = "llava"
    model_class = LlavaForConditionalGeneration
    # No attention weights are read off the vision side; the LM's answer attention comes from
    # core.explain.capture_answer_attention, so every sub-model keeps the fast kernel.
    attn_implementation = "sdpa"
    projector = "model.multi_modal_projector"
    language_model = "model.language_model"
    embedded = EMBEDDED_LLAVA

    # ------------------------------------------------------------ scoring

    def encode(self, model, pixel_values: torch.Tensor, want_attentions: bool = False) -> VisualTokens:
        """The selected vision-tower layer through the projector: (B, patches, H_lm) image tokens.

        `want_attentions` changes nothing: LLaVA's vision side has no attention the explanations read.

        >>> LlavaFamily().encode(model, pixels).embeds.shape  # doctest: +SKIP
        torch.Size([4, 144, 128])
        """
        cfg = model.config
        out = model.get_image_features(
            pixel_values=pixel_values,
            vision_feature_layer=cfg.vision_feature_layer,
            vision_feature_select_strategy=cfg.vision_feature_select_strategy,
        )
        feats = out.pooler_output
        return VisualTokens(embeds=torch.stack(list(feats)) if isinstance(feats, (list, tuple)) else feats)

    def run_lm(self, model, inputs_embeds, attention_mask, position_ids, logits_to_keep: int = 1, **kw):
        """The whole model on ready-made input embeddings (it skips the vision side when given no pixels)."""
        return model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
            logits_to_keep=logits_to_keep, **kw,
        )

    # ------------------------------------------------------------ explanations

    def mask_tokens(self, model, visual: VisualTokens, rows: torch.Tensor, keep: torch.Tensor):
        """The frames' image tokens as they are; the LM rows are built with only the kept ones.

        >>> sub, lm_keep = LlavaFamily().mask_tokens(model, visual, torch.tensor([0, 0]), keep)  # doctest: +SKIP
        >>> sub.embeds.shape, lm_keep.shape  # doctest: +SKIP
        (torch.Size([2, 144, 128]), torch.Size([2, 144]))
        """
        return VisualTokens(embeds=visual.embeds[rows]), keep

    def explanation_maps(
        self, visual: VisualTokens, slot_attention: torch.Tensor, answer_attention: torch.Tensor,
        image_slots: Sequence[torch.Tensor], layer_ids: Sequence[int],
    ) -> ExplanationMaps:
        """``question``: the answer's attention onto the image tokens (mean over the read layers and heads);
        ``layer_<i>``: the same for each read LM layer.

        >>> sorted(LlavaFamily().explanation_maps(visual, slots, attention, image_slots, [1, 2]).maps)  # doctest: +SKIP
        ['layer_1', 'layer_2', 'question']
        """
        B = visual.embeds.shape[0]
        maps = {"question": slot_attention.float()}
        for i, layer in enumerate(layer_ids):
            maps[f"layer_{layer}"] = torch.stack(
                [answer_attention[i, r].mean(dim=0)[image_slots[r].to(answer_attention.device)] for r in range(B)]
            )
        return ExplanationMaps(maps=maps)

    def gradient_relevance(
        self, model, visual: VisualTokens, log_answer: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """Gradient x input on the image-token embeddings, summed over the width, ReLU; (B, patches).

        >>> LlavaFamily().gradient_relevance(model, visual, log_answer).shape  # doctest: +SKIP
        torch.Size([4, 144])
        """
        with torch.inference_mode(False), torch.enable_grad():
            embeds = visual.embeds.detach().clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(log_answer(embeds), (embeds,))
        return (grad * embeds).sum(dim=-1).clamp_min(0).detach().float()

    # ------------------------------------------------------------ fine-tuning

    # No Q-Former: the projector reads the vision tower's patches directly.
    adaptable_parts = ("lm", "projector", "projector-lora", "vision")
    # CLIP blocks: separate q/k/v projections and the attention's output projection, then the MLP.
    vision_block_linears = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                            "mlp.fc1", "mlp.fc2")

    def vision_block_names(self, model, vision_blocks: int) -> list[str]:
        """The last `vision_blocks` blocks the features are read from: LLaVA reads the hidden state of
        ``vision_feature_layer`` (-2: the tower's last block is never read, so it is never adapted).

        >>> LlavaFamily().vision_block_names(model, 2)  # doctest: +SKIP
        ['model.vision_tower.encoder.layers.1', 'model.vision_tower.encoder.layers.2']
        """
        body = _tower_body(model)
        prefix = next(name for name, module in model.named_modules() if module is body.encoder.layers)
        first, read = _first_adapted_block(model, vision_blocks)
        return [f"{prefix}.{k}" for k in range(first, max(read))]

    def frozen_features(self, model, pixel_values: torch.Tensor, stage: FeatureStage = FeatureStage()) -> torch.Tensor:
        """What the frozen part hands the first part that runs per step: the selected vision-tower layer(s), CLS
        stripped under the "default" strategy (B, patches, H_vision) by default; the input of the first adapted
        vision block (B, 1 + patches, H_vision) when the tower's last blocks adapt.

        >>> LlavaFamily().frozen_features(model, pixels).shape  # doctest: +SKIP
        torch.Size([4, 144, 128])
        """
        if stage.start == "qformer":
            self.check_part("qformer")
        if stage.start == "vision":
            body = _tower_body(model)
            hidden = body.pre_layrnorm(body.embeddings(pixel_values))
            for block in body.encoder.layers[:_first_adapted_block(model, stage.vision_blocks)[0]]:
                hidden = block(hidden, None)
            return hidden
        tower = model.get_submodule("model.vision_tower")
        hidden = tower(pixel_values, output_hidden_states=True, return_dict=True).hidden_states
        return _select_features(model, hidden)

    def finish_features(self, model, cached: torch.Tensor, stage: FeatureStage) -> torch.Tensor:
        """The adapted rest on the cached stage, up to the projector's input: the last vision blocks, then the
        selected layer(s), CLS stripped (stage "vision"); the cached features as they are (stage "projector").

        >>> stage = FeatureStage("vision", 2)
        >>> cached = LlavaFamily().frozen_features(model, pixels, stage)  # doctest: +SKIP
        >>> LlavaFamily().finish_features(model, cached, stage).shape  # doctest: +SKIP
        torch.Size([4, 144, 128])
        """
        if stage.start == "projector":
            return cached
        if stage.start != "vision":
            self.check_part(stage.start)
        first, read = _first_adapted_block(model, stage.vision_blocks)
        # hidden[k] is the input of block k (the output of block k - 1), as in the tower's hidden_states.
        hidden = {first: cached}
        for k, block in enumerate(_tower_body(model).encoder.layers[first:max(read)], start=first):
            hidden[k + 1] = block(hidden[k], None)
        return _select_features(model, hidden)

    # ------------------------------------------------------------ the tiny embedded checkpoint

    def build_tiny(self, tok: PreTrainedTokenizerFast, tiny: TinyConfig = TinyConfig()):
        """A randomly initialised tiny LlavaForConditionalGeneration with a Qwen3 decoder, and its processor.

        >>> model, processor = LlavaFamily().build_tiny(build_tokenizer(["yes no"], 300))  # doctest: +SKIP
        """
        # Imported here: naming an image processor class makes transformers pick (and log) its backend.
        from transformers import CLIPImageProcessor

        tok = with_chat_template(tok, CHAT_TEMPLATE)
        vision = CLIPVisionConfig(
            hidden_size=tiny.vision_hidden,
            intermediate_size=tiny.vision_mlp,
            num_hidden_layers=tiny.llava_vision_layers,
            num_attention_heads=tiny.vision_heads,
            image_size=tiny.llava_image_size,
            patch_size=tiny.patch_size,
            projection_dim=tiny.vision_hidden,
        )
        config = LlavaConfig(
            vision_config=vision.to_dict(),
            text_config=build_text_config(tok, tiny).to_dict(),
            image_token_index=tok.convert_tokens_to_ids(IMAGE_TOKEN),
            projector_hidden_act="gelu",
            vision_feature_select_strategy="default",
            vision_feature_layer=-2,
            image_seq_length=(tiny.llava_image_size // tiny.patch_size) ** 2,
        )
        config.vision_config.model_type = "clip_vision_model"
        model = LlavaForConditionalGeneration(config)
        image_processor = CLIPImageProcessor(
            size={"shortest_edge": tiny.llava_image_size},
            crop_size={"height": tiny.llava_image_size, "width": tiny.llava_image_size},
            image_mean=CLIP_MEAN,
            image_std=CLIP_STD,
            do_convert_rgb=True,
        )
        processor = LlavaProcessor(
            image_processor=image_processor,
            tokenizer=tok,
            patch_size=tiny.patch_size,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
            image_token=IMAGE_TOKEN,
            chat_template=CHAT_TEMPLATE,
        )
        return model, processor

    def patch_states(self, visual: VisualTokens) -> torch.Tensor:
        """The projected image tokens: one per patch already."""
        return visual.embeds

    def patch_width(self, model) -> int:
        return model.get_input_embeddings().embedding_dim

    def describe_tiny(self, tiny: TinyConfig) -> TinyCard:
        """The model card's words for a tiny LLaVA.

        >>> LlavaFamily().describe_tiny(TinyConfig()).shape.split(" -> ")[0]
        'CLIP-style ViT (4 layers, width 128, 168 px, patch 14: 12x12 image tokens, feature layer -2, CLS stripped)'
        """
        side = tiny.llava_image_size // tiny.patch_size
        shape = (
            f"CLIP-style ViT ({tiny.llava_vision_layers} layers, width {tiny.vision_hidden}, {tiny.llava_image_size} px, "
            f"patch {tiny.patch_size}: {side}x{side} "
            f"image tokens, feature layer -2, CLS stripped) -> MLP projector -> Qwen3 ({tiny.text_layers} layers, width "
            f"{tiny.text_hidden})"
        )
        return TinyCard(heading="Embedded model",
                        role="It stands in for vqwen3-4b offline and is listed in the app's model selector",
                        shape=shape, image_size=tiny.llava_image_size)
