"""The tokenizer of the embedded default models, and the real-width shapes tests build offline.

Each family builds its own tiny model (``find_family(name).build_tiny``, in :mod:`core.families`) from a
:class:`~core.families.TinyConfig`; this module trains the tokenizer they share. The tiny models keep the
*shapes of computation* of the vqwen family (224 px, patch 14, a 16x16 patch grid, 32 Q-Former queries, a
Qwen3 decoder with a Qwen-style chat template) so that every code path of the app — loading, batched
scoring, Q-Former cross-attention, token masks — runs on them exactly as on the real checkpoints; only the
widths and depths shrink so that they train on two CPU cores in minutes.

Example::

    tok = build_tokenizer(["Is this sludge content? Answer yes or no.", "yes", "no"])
    model, processor = find_family("blip2").build_tiny(tok, TinyConfig())
"""

from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AddedToken, PreTrainedTokenizerFast

from core.families import IMAGE_TOKEN, TinyConfig

__all__ = ["TinyConfig", "VQWEN_QFORMER_SHAPE", "VQWEN_LLAVA_SHAPE", "build_tokenizer",
           "save_real_shape_checkpoint"]

PAD = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"


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
    specials = [PAD, IM_START, IM_END, IMAGE_TOKEN]
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
    tok.add_tokens([AddedToken(IMAGE_TOKEN, normalized=False, special=True)], special_tokens=True)
    return tok


def save_real_shape_checkpoint(folder, family: str, shape: TinyConfig, device: str = "cpu") -> None:
    """Write a checkpoint of the family (``core.families`` name) at `shape`, random weights (seed 0), with
    its processor, as a hub checkpoint is laid out: what tests and benches load through ``load_model``.

    On CUDA the weights are built in bf16 on the device: the full-size vqwen-qformer (about 5 B parameters)
    built in fp32 would need 20 GB before the cast.

    >>> save_real_shape_checkpoint(tmp_path, "llava", VQWEN_LLAVA_SHAPE)  # doctest: +SKIP
    """
    import torch

    from core import vocabulary
    from core.families import find_family

    tok = build_tokenizer([vocabulary.CLASSIFY, vocabulary.LAYOUT, "yes no vertical horizontal pip other"] * 20, 400)
    torch.manual_seed(0)
    before = torch.get_default_dtype()
    if str(device).startswith("cuda"):
        torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model, processor = find_family(family).build_tiny(tok, shape)
    finally:
        torch.set_default_dtype(before)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # whatever loads the checkpoint next finds the memory free
