"""Build the embedded default models: stock transformers classes at tiny widths, plus our own tokenizer.

The tiny models keep the *shapes of computation* of the vqwen family (224 px, patch 14, a 16x16 patch grid,
32 Q-Former queries, a Qwen3 decoder with a Qwen-style chat template) so that every code path of the app —
loading, batched scoring, Q-Former cross-attention, token masks — runs on them exactly as on the real
checkpoints; only the widths and depths shrink so that they train on two CPU cores in minutes.

Example::

    tok = build_tokenizer(["Is this sludge content? Answer yes or no.", "yes", "no"])
    model, processor = build_blip2(tok, TinyConfig())
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AddedToken,
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    BlipImageProcessor,
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    Qwen3Config,
)
from transformers.models.blip_2.configuration_blip_2 import Blip2QFormerConfig, Blip2VisionConfig

PAD = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
IMAGE = "<image>"

# CLIP's normalisation, which both BLIP-2 (EVA-CLIP) and LLaVA (CLIP ViT-L) use.
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# Qwen's chat template reduced to what we use. BLIP-2 renders the image part as nothing because
# Blip2Processor prepends the 32 query slots itself; LLaVA renders "<image>" where the processor expands
# it to one token per patch.
_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}IMAGE_PART"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)
BLIP2_CHAT_TEMPLATE = _TEMPLATE.replace("IMAGE_PART", "")
LLAVA_CHAT_TEMPLATE = _TEMPLATE.replace("IMAGE_PART", "{{ '<image>' }}")


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


# The true widths of alpharomercoma/vqwen-qformer-tiktok (EVA-CLIP-G/14, BLIP-2 Q-Former, Qwen3-4B) at
# reduced depth: what tests use to run the real-model code paths offline with random weights.
VQWEN_QFORMER_SHAPE = TinyConfig(
    vision_hidden=1408, vision_layers=1, vision_heads=16, vision_mlp=6144,
    qformer_hidden=768, qformer_layers=2, qformer_heads=12, qformer_mlp=3072, qformer_cross_attention_frequency=2,
    text_hidden=2560, text_layers=1, text_heads=32, text_kv_heads=8, text_head_dim=128, text_mlp=9728,
    text_vocab_size=151936, max_positions=40960,
)
# alpharomercoma/vqwen3-4b: CLIP ViT-L/14-336 (24x24 = 576 image tokens) -> MLP -> Qwen3-4B, reduced depth.
VQWEN_LLAVA_SHAPE = TinyConfig(
    vision_hidden=1024, llava_vision_layers=2, vision_heads=16, vision_mlp=4096, llava_image_size=336,
    text_hidden=2560, text_layers=1, text_heads=32, text_kv_heads=8, text_head_dim=128, text_mlp=9728,
    text_vocab_size=151936, max_positions=40960,
)


def build_tokenizer(corpus: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Train a Qwen-style byte-level BPE tokenizer on our prompts and answers.

    >>> tok = build_tokenizer(["Is this sludge content? Answer yes or no.", "yes", "no"], vocab_size=300)
    >>> tok.decode(tok("yes")["input_ids"])
    'yes'
    """
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = [PAD, IM_START, IM_END, IMAGE]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(list(corpus), trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        eos_token=IM_END,
        pad_token=PAD,
        padding_side="left",
        model_max_length=8192,
        additional_special_tokens=[AddedToken(IM_START, special=True), AddedToken(IM_END, special=True)],
    )
    tok.add_tokens([AddedToken(IMAGE, normalized=False, special=True)], special_tokens=True)
    return tok


def _text_config(tok: PreTrainedTokenizerFast, cfg: TinyConfig) -> Qwen3Config:
    return Qwen3Config(
        vocab_size=cfg.text_vocab_size or len(tok),
        hidden_size=cfg.text_hidden,
        intermediate_size=cfg.text_mlp,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        num_key_value_heads=cfg.text_kv_heads,
        head_dim=cfg.text_head_dim,
        max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
    )


def build_blip2(tok: PreTrainedTokenizerFast, cfg: TinyConfig = TinyConfig()):
    """A randomly initialised tiny Blip2ForConditionalGeneration with a Qwen3 decoder, and its processor.

    >>> model, processor = build_blip2(build_tokenizer(["yes no"], 300))  # doctest: +SKIP
    """
    tok = _with_template(tok, BLIP2_CHAT_TEMPLATE)
    vision = Blip2VisionConfig(
        hidden_size=cfg.vision_hidden,
        intermediate_size=cfg.vision_mlp,
        num_hidden_layers=cfg.vision_layers,
        num_attention_heads=cfg.vision_heads,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        qkv_bias=True,
        # Blip2VisionConfig defaults to 1e-10, which only makes sense when pretrained EVA weights are loaded
        # over it; a tower trained from scratch needs the usual ViT scale or it never leaves zero.
        initializer_range=0.02,
    )
    qformer = Blip2QFormerConfig(
        hidden_size=cfg.qformer_hidden,
        num_hidden_layers=cfg.qformer_layers,
        num_attention_heads=cfg.qformer_heads,
        intermediate_size=cfg.qformer_mlp,
        cross_attention_frequency=cfg.qformer_cross_attention_frequency,
        encoder_hidden_size=cfg.vision_hidden,
        vocab_size=len(tok),
        max_position_embeddings=cfg.max_positions,
    )
    config = Blip2Config(
        vision_config=vision.to_dict(),
        qformer_config=qformer.to_dict(),
        text_config=_text_config(tok, cfg).to_dict(),
        num_query_tokens=cfg.num_query_tokens,
        image_token_index=tok.convert_tokens_to_ids(IMAGE),
    )
    model = Blip2ForConditionalGeneration(config)
    # Stock init sets the 32 query tokens to zeros (they are always loaded from a checkpoint); identical
    # queries get identical gradients and never tell apart, so a from-scratch model draws them at random.
    with torch.no_grad():
        model.query_tokens.normal_(0.0, 0.02)
    image_processor = BlipImageProcessor(
        size={"height": cfg.image_size, "width": cfg.image_size},
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
        do_convert_rgb=True,
    )
    processor = Blip2Processor(image_processor=image_processor, tokenizer=tok, num_query_tokens=cfg.num_query_tokens)
    return model, processor


def build_llava(tok: PreTrainedTokenizerFast, cfg: TinyConfig = TinyConfig()):
    """A randomly initialised tiny LlavaForConditionalGeneration with a Qwen3 decoder, and its processor.

    >>> model, processor = build_llava(build_tokenizer(["yes no"], 300))  # doctest: +SKIP
    """
    tok = _with_template(tok, LLAVA_CHAT_TEMPLATE)
    vision = CLIPVisionConfig(
        hidden_size=cfg.vision_hidden,
        intermediate_size=cfg.vision_mlp,
        num_hidden_layers=cfg.llava_vision_layers,
        num_attention_heads=cfg.vision_heads,
        image_size=cfg.llava_image_size,
        patch_size=cfg.patch_size,
        projection_dim=cfg.vision_hidden,
    )
    config = LlavaConfig(
        vision_config=vision.to_dict(),
        text_config=_text_config(tok, cfg).to_dict(),
        image_token_index=tok.convert_tokens_to_ids(IMAGE),
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        image_seq_length=(cfg.llava_image_size // cfg.patch_size) ** 2,
    )
    config.vision_config.model_type = "clip_vision_model"
    model = LlavaForConditionalGeneration(config)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": cfg.llava_image_size},
        crop_size={"height": cfg.llava_image_size, "width": cfg.llava_image_size},
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
        do_convert_rgb=True,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=cfg.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token=IMAGE,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    return model, processor


def _with_template(tok: PreTrainedTokenizerFast, template: str) -> PreTrainedTokenizerFast:
    """A copy of the tokenizer carrying this model's chat template (the template lives on the tokenizer)."""
    import copy

    tok = copy.deepcopy(tok)
    tok.chat_template = template
    return tok
