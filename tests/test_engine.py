"""The engine on real checkpoints of the stock classes: the embedded models and real-shape random ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core import vocabulary
from core.config import EMBEDDED_BLIP2, EMBEDDED_LLAVA, ModelSpec
from core.engine import (
    ModelLoadError,
    answer_logits,
    answer_with_shared_prefix,
    count_shared_prefix,
    decide_video,
    describe,
    encode_frames,
    load_model,
    p_yes,
    score_frames,
)
from core.families import find_family
from training import synthetic


@pytest.fixture(scope="module")
def blip2():
    return load_model(ModelSpec(str(EMBEDDED_BLIP2)))


@pytest.fixture(scope="module")
def llava():
    return load_model(ModelSpec(str(EMBEDDED_LLAVA)))


@pytest.fixture(scope="module")
def heldout():
    return synthetic.make_frames(seed=4242, n=48, pool="holdout")


def test_loader_picks_the_class_from_config(blip2, llava):
    assert type(blip2.model).__name__ == "Blip2ForConditionalGeneration" and blip2.family.name == "blip2"
    assert type(llava.model).__name__ == "LlavaForConditionalGeneration" and llava.family.name == "llava"
    assert blip2.family is find_family(blip2.model.config.model_type)
    # The Q-Former runs eager (its attention weights are read); the vision tower and LM keep SDPA.
    assert blip2.model.config.qformer_config._attn_implementation == "eager"
    assert blip2.model.config.text_config._attn_implementation == "sdpa"


def test_batched_scores_equal_one_frame_at_a_time_and_the_stock_forward(blip2, heldout):
    frames, _ = heldout
    batched = score_frames(blip2, frames[:6], batch_size=6)
    single = [score_frames(blip2, frames[i:i + 1], batch_size=1)[0] for i in range(6)]
    for a, b in zip(batched, single):
        assert a.p_sludge == pytest.approx(b.p_sludge, abs=1e-4)
    # The stock forward on the processor's own inputs gives the same P(yes).
    text = blip2.tokenizer.apply_chat_template(vocabulary.build_messages(vocabulary.CLASSIFY), add_generation_prompt=True, tokenize=False)
    inputs = blip2.processor(text=text, images=frames[0], return_tensors="pt")
    with torch.no_grad():
        logits = blip2.model(**inputs).logits[0, -1]
    assert p_yes(blip2, logits).item() == pytest.approx(batched[0].p_sludge, abs=1e-4)


def test_vision_runs_once_per_frame_for_all_questions(blip2, heldout):
    frames, _ = heldout
    calls = []
    hook = blip2.model.vision_model.register_forward_hook(lambda m, i, o: calls.append(o.last_hidden_state.shape[0]))
    try:
        score_frames(blip2, frames[:5], batch_size=8)
    finally:
        hook.remove()
    assert calls == [5]


# The embedded model's measured held-out figures are in its model card (models/*/README.md); these floors sit
# a few points under them, so a broken loader, processor or scoring path fails here while noise does not.
BLIP2_FLOOR_CLIPS = 0.7
BLIP2_FLOOR_UNSEEN_PHOTOS = 0.65


def test_embedded_blip2_agrees_with_truth_on_unseen_photos(blip2, heldout):
    frames, truths = heldout
    scores = score_frames(blip2, frames)
    acc = np.mean([s.label == t.sludge for s, t in zip(scores, truths)])
    assert acc >= BLIP2_FLOOR_UNSEEN_PHOTOS, acc


def test_embedded_blip2_on_encoded_clips_agrees_with_per_frame_truth(blip2, tmp_path):
    """Clips written with PyAV (layouts changing mid-clip), decoded by core.video, scored by the engine."""
    from core.analyze import analyze_video

    found, single = [], []  # whether each sampled sludge / single-stream frame was called right
    for seed in range(8):
        clip, truths = synthetic.make_clip(seed=100 + seed, num_frames=48, fps=12.0)
        path = synthetic.write_clip(tmp_path / f"clip{seed}.mp4", clip, fps=12.0)
        result = analyze_video(blip2, path, num_frames=12)
        for index, score in zip(result.video.indices, result.scores):
            (found if truths[index].sludge else single).append(score.label == truths[index].sludge)
    agree = found + single
    assert len(agree) == 96 and len(found) == 76
    # Measured: 77 % of the frames agree, 71 % of the sludge frames found, all 20 single frames called one scene.
    # Either class on its own has a floor too, so a path that answers one way only fails as well.
    assert np.mean(agree) >= BLIP2_FLOOR_CLIPS, np.mean(agree)
    assert np.mean(found) >= 0.6 and np.mean(single) >= 0.6, (np.mean(found), np.mean(single))


def test_llava_path_scores(llava, heldout):
    frames, truths = heldout
    scores = score_frames(llava, frames[:24], batch_size=12)
    assert len(scores) == 24 and all(0.0 <= s.p_sludge <= 1.0 for s in scores)
    assert sum(abs(sum(s.layout_scores.values()) - 1) < 1e-3 for s in scores) == 24
    # The embedded LLaVA is the weaker sibling (see its model card): the floor only catches a broken path.
    acc = np.mean([s.label == t.sludge for s, t in zip(scores, truths[:24])])
    assert acc >= 0.6, acc


def test_describe_generates_text(blip2, heldout):
    frames, _ = heldout
    text = describe(blip2, frames[0])
    assert isinstance(text, str) and len(text.split()) >= 3


def test_decide_video_majority_and_mean(blip2, heldout):
    frames, truths = heldout
    scores = score_frames(blip2, frames[:9])
    v = decide_video(scores)
    assert v.frames == 9
    assert v.mean_p == pytest.approx(np.mean([s.p_sludge for s in scores]), abs=1e-3)
    assert v.label == (sum(s.label for s in scores) * 2 >= 9)


def test_unknown_folder_gives_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="Cannot load"):
        load_model(ModelSpec(str(tmp_path / "nothing-here")))


def test_a_model_of_another_family_is_refused(tmp_path):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    Qwen3ForCausalLM(Qwen3Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1, head_dim=8)).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="qwen3"):
        load_model(ModelSpec(str(tmp_path)))


@pytest.mark.parametrize("family", ["blip2", "llava"])
@pytest.mark.parametrize(
    "questions", [[vocabulary.CLASSIFY, vocabulary.LAYOUT], [vocabulary.LAYOUT], [vocabulary.CLASSIFY]],
)
def test_the_cached_shared_prefix_gives_the_logits_of_one_full_row_per_question(request, heldout, family, questions):
    lm = request.getfixturevalue(family)
    visual = encode_frames(lm, heldout[0][:5])
    prompts = [lm.prompt_ids(q) for q in questions]
    shared = count_shared_prefix(prompts)
    # The image slots lie in the shared prefix, so the fast path is the one under test, not its fallback.
    assert lm.image_token_id not in [i for ids in prompts for i in ids[shared:]]
    full = answer_logits(lm, visual, questions)
    cached = answer_with_shared_prefix(lm, visual, questions)
    assert cached.shape == full.shape == (len(questions), 5, full.shape[-1])
    assert torch.allclose(cached, full, atol=1e-4)
    # The cache is cut back to the prefix after each question: asking again gives the same answers.
    assert torch.allclose(answer_with_shared_prefix(lm, visual, questions), cached, atol=1e-6)


def test_a_model_that_keeps_no_cache_scores_the_same(heldout):
    """Gradient checkpointing in training mode turns the LM's cache off: scoring then takes the padded rows."""
    lm = load_model(ModelSpec(str(EMBEDDED_BLIP2)))
    frames = heldout[0][:3]
    expected = [s.p_sludge for s in score_frames(lm, frames)]
    lm.model.gradient_checkpointing_enable()
    lm.model.train()
    for module in lm.model.modules():  # training mode without its randomness: no dropout anywhere
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0
    with torch.inference_mode():
        out = lm.model.language_model(inputs_embeds=torch.zeros(1, 2, lm.model.config.text_config.hidden_size),
                                      use_cache=True)
    assert out.past_key_values is None  # the case under test: the LM keeps no cache
    assert [s.p_sludge for s in score_frames(lm, frames)] == pytest.approx(expected, abs=1e-4)


def test_count_shared_prefix_stops_at_the_first_difference():
    assert count_shared_prefix([[7, 7, 1, 2], [7, 7, 3]]) == 2
    assert count_shared_prefix([[1, 2, 3], [1, 2, 3]]) == 3
    assert count_shared_prefix([[5], [6]]) == 0


@pytest.mark.slow
@pytest.mark.parametrize("family,tokens", [("blip2", 32), ("llava", 576)])
def test_real_shape_vqwen_configs_load_and_score(real_shape_checkpoint, family, tokens):
    """True widths (1408/768/2560 or 1024/2560, vocab 151936), reduced depth, random weights."""
    lm = load_model(ModelSpec(str(real_shape_checkpoint(family))))
    assert lm.model.config.text_config.vocab_size == 151936
    assert lm.model.config.text_config.hidden_size == 2560
    frames = synthetic.make_frames(seed=1, n=2)[0]
    visual = encode_frames(lm, frames, want_attentions=True)
    assert visual.embeds.shape == (2, tokens, 2560)
    if lm.family.name == "blip2":
        assert [a.shape for a in visual.cross_attentions] == [(2, 12, 32, 257)]
    logits = answer_logits(lm, visual, [vocabulary.CLASSIFY, vocabulary.LAYOUT])
    assert logits.shape == (2, 2, 151936)
    scores = score_frames(lm, frames, batch_size=2)
    assert len(scores) == 2 and all(0 <= s.p_sludge <= 1 for s in scores)
    # score_frames reads the shared prefix once (Qwen3's cache at the true widths): the same P(yes) as full rows.
    assert [s.p_sludge for s in scores] == pytest.approx(p_yes(lm, logits[0]).tolist(), abs=1e-4)
