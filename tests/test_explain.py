"""Explanations on real checkpoints: maps, relevance, token masks and their faithfulness, and the pictures."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from core import vocabulary
from core.config import EMBEDDED_BLIP2, EMBEDDED_LLAVA, ModelSpec
from core.engine import (
    build_rows,
    encode_frames,
    load_model,
    run_answer_pass,
    score_frames,
)
from core.explain import (
    ExplainConfig,
    capture_answer_attention,
    choose_budget,
    draw_random_mask,
    explain_clip,
    explain_frames,
    model_view_region,
    pick_cross_attention_map,
    render_explanation,
    rescore_masked,
    select_clip_tokens,
    select_tokens,
)
from core.render import (
    colorize,
    normalise_heatmap,
    render_heatmap,
    render_mask,
    render_query_grid,
    upsample_heatmap,
)
from training import synthetic


# No deletion curve where a test does not read it: each curve point is two more re-scores per frame.
NO_CURVE = ExplainConfig(curve_rhos=())


@pytest.fixture(scope="module")
def blip2():
    return load_model(ModelSpec(str(EMBEDDED_BLIP2)))


@pytest.fixture(scope="module")
def llava():
    return load_model(ModelSpec(str(EMBEDDED_LLAVA)))


@pytest.fixture(scope="module")
def clip():
    return synthetic.make_frames(seed=777, n=8, pool="holdout", sludge_share=0.75)


# ---------------------------------------------------------------- token selection, no model


def test_budget_rule_follows_the_relevance_mass_and_is_clamped():
    peaked = np.r_[np.full(20, 10.0), np.full(180, 0.1)]  # 20 of 200 tokens hold 92 % of the mass
    assert choose_budget(peaked) == pytest.approx(11 / 200)  # 11 tokens reach half the mass
    assert choose_budget(np.ones(100)) == 0.5
    assert choose_budget(np.r_[1.0, np.zeros(99)]) == 0.05  # one token holds it all: clamped up
    assert choose_budget(np.zeros(50)) == 0.5  # no evidence at all: the widest mask
    half = ExplainConfig(mass=0.9, rho_max=0.3)
    assert choose_budget(np.ones(100), half) == 0.3


def test_select_tokens_keeps_top_n_in_original_order_and_user_rho_overrides():
    r = np.array([0.05, 0.4, 0.1, 0.3, 0.1, 0.05])
    s = select_tokens(r, rho=0.5)
    assert s.kept == 3 and not s.auto and s.rho == 0.5
    assert s.kept_indices.tolist() == [1, 2, 3]  # ties (0.1, 0.1) go to the earlier position
    auto = select_tokens(r)
    assert auto.auto and auto.rho == choose_budget(r) and auto.kept == int(np.ceil(auto.rho * r.size))
    assert select_tokens(np.arange(64.0), rho=0.25).mask.sum() == 16
    with pytest.raises(ValueError):
        select_tokens(r, rho=1.5)


def test_clip_selection_says_which_frames_carry_the_evidence():
    rng = np.random.default_rng(0)
    r = rng.random((6, 16)) * 0.01
    r[2] += 1.0  # frame 2 holds the evidence
    sel = select_clip_tokens(r, rho=16 / 96)
    assert sel.mask.shape == (6, 16) and sel.kept == 16
    assert sel.mask[2].all() and sel.mask.sum() == 16
    assert sel.frame_shares.tolist() == [0, 0, 1, 0, 0, 0]
    assert select_clip_tokens(r).auto
    with pytest.raises(ValueError):
        select_clip_tokens(r[0])
    json.dumps(sel.to_dict())


def test_random_masks_are_reproducible_nested_and_differ_by_seed_and_frame():
    a = draw_random_mask(256, 64, seed=3, index=5)
    assert a.sum() == 64 and np.array_equal(a, draw_random_mask(256, 64, seed=3, index=5))
    assert not np.array_equal(a, draw_random_mask(256, 64, seed=4, index=5))
    assert not np.array_equal(a, draw_random_mask(256, 64, seed=3, index=6))
    small = draw_random_mask(256, 13, seed=3, index=5)
    assert np.all(a[small])  # the 13-token set is inside the 64-token one: deletion curves are nested


# ---------------------------------------------------------------- rendering, no model


def test_heatmap_rendering_normalises_upsamples_and_puts_colour_where_the_map_is_hot():
    assert normalise_heatmap(np.array([[2.0, 4.0], [6.0, 10.0]])).tolist() == [[0.0, 0.25], [0.5, 1.0]]
    assert not normalise_heatmap(np.full((3, 3), 7.0)).any()
    assert colorize(np.array([0.0, 1.0])).tolist() == [[0, 0, 4], [252, 255, 164]]
    big = upsample_heatmap(np.eye(4), (40, 20))
    assert big.shape == (20, 40) and 0.0 <= big.min() and big.max() <= 1.0
    frame = np.full((64, 32, 3), 90, dtype=np.uint8)
    heat = np.zeros((4, 4))
    heat[0, 0] = 1.0
    img = np.asarray(render_heatmap(frame, heat)).astype(int)
    assert img.shape == (64, 32, 3)
    change = np.abs(img - 90).sum(axis=-1)
    assert change[:8, :4].mean() > 3 * change[-8:, -4:].mean()


def test_mask_overlay_darkens_dropped_patches_and_dims_outside_the_region():
    frame = np.full((40, 40, 3), 200, dtype=np.uint8)
    mask = np.zeros((4, 4), dtype=bool)
    mask[:2] = True
    img = np.asarray(render_mask(frame, mask.ravel(), (4, 4))).astype(int)
    assert img[3:17, 3:37].mean() == 200  # kept top half untouched (away from the outline)
    assert img[23:37, 3:37].mean() < 100  # dropped bottom half darkened
    boxed = np.asarray(render_heatmap(frame, np.ones((2, 2)), region=(10, 10, 30, 30))).astype(int)
    assert boxed[:5].mean() < 120 and boxed[12:28, 12:28].mean() != 200


def test_query_grid_has_one_labelled_tile_per_query_plus_the_mean():
    frame = np.full((56, 28, 3), 128, dtype=np.uint8)
    sheet = render_query_grid(frame, np.random.default_rng(0).random((32, 4, 4)), np.ones((4, 4)), cols=8, tile_width=28)
    assert sheet.size == (8 * 28, 5 * (56 + 14))  # 33 tiles in rows of 8


# ---------------------------------------------------------------- the embedded BLIP-2 model


def test_blip2_maps_have_the_documented_shapes_and_normalisation(blip2, clip):
    frames, _ = clip
    [e] = explain_frames(blip2, frames, [1], config=NO_CURVE)
    assert e.model_kind == "blip2" and e.grid == (16, 16) and e.region == (0, 0, 252, 448)
    visual = encode_frames(blip2, frames[1:2], want_attentions=True)
    layers = {f"layer_{i}" for i in range(len(visual.cross_attentions))}  # one per cross-attention layer
    assert set(e.heatmaps) == {"mean", "max", "question"} | layers
    assert all(m.shape == (16, 16) and (m >= 0).all() for m in e.heatmaps.values())
    assert e.per_query.shape == (32, 16, 16)
    # Cross-attention of each query sums to 1 over CLS + 256 patches: the patch maps sum to 1 - CLS share.
    cls_share = torch.stack(visual.cross_attentions)[:, 0, :, :, 0].mean().item()
    assert e.heatmaps["mean"].sum() == pytest.approx(1 - cls_share, abs=1e-4)
    assert np.allclose(e.per_query.sum(axis=(1, 2)), 1 - torch.stack(visual.cross_attentions)[:, 0, :, :, 0].mean(dim=(0, 1)).numpy(), atol=1e-4)
    assert np.allclose(e.heatmaps["max"], e.per_query.max(axis=0))
    # Every view is a mean of the raw (layers, heads, queries, 16, 16) tensor, which can be sliced at will.
    assert e.cross_attention.shape[0] == len(visual.cross_attentions) and e.cross_attention.shape[2:] == (32, 16, 16)
    assert np.allclose(pick_cross_attention_map(e), e.heatmaps["mean"], atol=1e-6)
    assert np.allclose(pick_cross_attention_map(e, layer=0), e.heatmaps["layer_0"], atol=1e-6)
    assert np.allclose(pick_cross_attention_map(e, query=7), e.per_query[7], atol=1e-6)
    assert pick_cross_attention_map(e, layer=0, head=1, query=3).shape == (16, 16)
    # The question map is the answer's attention reaching the patches through the query slots: at most 1.
    assert 0 < e.heatmaps["question"].sum() <= 1 and np.array_equal(e.relevance, e.heatmaps["question"].ravel())
    assert e.selection.auto and 0.05 <= e.rho <= 0.5 and e.mask.sum() == e.selection.kept
    json.dumps(e.to_dict())


def test_one_vision_pass_serves_scores_maps_and_every_masked_rescore(blip2, clip):
    frames, _ = clip
    vision_calls, qformer_calls = [], []
    h1 = blip2.model.vision_model.register_forward_hook(lambda m, i, o: vision_calls.append(1))
    h2 = blip2.model.qformer.register_forward_hook(lambda m, i, o: qformer_calls.append(1))
    try:
        found = explain_frames(blip2, frames, [0, 2, 3], config=NO_CURVE)
    finally:
        h1.remove()
        h2.remove()
    assert len(vision_calls) == 1 and len(qformer_calls) >= 2
    # P(full) is the fast tier's P(sludge) for the same frames: the maps explain the score that is shown.
    fast = score_frames(blip2, frames[[0, 2, 3]])
    for e, s in zip(found, fast):
        assert e.p_full == pytest.approx(s.p_sludge, abs=1e-4)
        assert e.faithfulness.p_full == e.p_full


def test_captured_answer_attention_matches_an_eager_forward(blip2, clip):
    frames, _ = clip
    eager = blip2.family.model_class.from_pretrained(
        str(EMBEDDED_BLIP2),
        attn_implementation={"qformer_config": "eager", "vision_config": "sdpa", "text_config": "eager", "": "sdpa"},
    ).eval()
    visual = encode_frames(blip2, frames[:3])
    embeds, attention, positions, _ = build_rows(blip2, visual.embeds, [vocabulary.CLASSIFY, vocabulary.LAYOUT])  # padded rows
    text = blip2.model.config.text_config
    with torch.no_grad():
        out = blip2.family.run_lm(eager, embeds, attention, positions, logits_to_keep=1, output_attentions=True)
        plain = blip2.family.run_lm(blip2.model, embeds, attention, positions, logits_to_keep=1).logits
        with capture_answer_attention(blip2, layers=text.num_hidden_layers) as cap:
            captured = blip2.family.run_lm(blip2.model, embeds, attention, positions, logits_to_keep=1).logits
    ours = cap.read(attention)
    reference = torch.stack([out.attentions[i][:, :, -1, :] for i in cap.layer_ids]).float()
    assert ours.shape == reference.shape == (text.num_hidden_layers, 6, text.num_attention_heads, attention.shape[1])
    assert torch.allclose(ours, reference, atol=1e-5)
    # Reading the attention changes nothing the LM computes, and the LM is back on its own kernel afterwards.
    assert torch.equal(captured, plain)
    assert text._attn_implementation == "sdpa"


def test_capture_reads_only_the_chosen_layers_and_restores_the_kernel_on_error(llava, clip):
    frames, _ = clip
    visual = encode_frames(llava, frames[:2])
    text = llava.model.config.text_config
    with pytest.raises(RuntimeError, match="boom"):
        with capture_answer_attention(llava, layers=[0]):
            raise RuntimeError("boom")
    assert text._attn_implementation == "sdpa"
    with capture_answer_attention(llava, layers=[0, 2]) as cap:
        ap = run_answer_pass(llava, visual, [vocabulary.CLASSIFY])
    read = cap.read(ap.attention_mask)
    assert cap.layer_ids == [0, 2] and read.shape == (2, 2, text.num_attention_heads, ap.attention_mask.shape[1])
    assert torch.allclose(read.sum(dim=-1), torch.ones(2, 2, text.num_attention_heads))
    assert text._attn_implementation == "sdpa"


def test_masks_and_random_comparisons_are_deterministic_for_a_seed(blip2, clip):
    frames, _ = clip
    a = explain_frames(blip2, frames, [4], rho=0.25, seed=11, config=NO_CURVE)[0]
    b = explain_frames(blip2, frames, [4], rho=0.25, seed=11, config=NO_CURVE)[0]
    c = explain_frames(blip2, frames, [4], rho=0.25, seed=12, config=NO_CURVE)[0]
    assert np.array_equal(a.mask, b.mask) and a.faithfulness == b.faithfulness
    assert a.selection.kept == 64 and not a.selection.auto
    assert np.array_equal(a.mask, c.mask) and a.faithfulness.p_drop_random != c.faithfulness.p_drop_random


def test_rescoring_with_every_patch_kept_gives_p_full(blip2, clip):
    frames, _ = clip
    [e] = explain_frames(blip2, frames, [5], faithfulness=False)
    visual = encode_frames(blip2, frames[5:6], want_attentions=False)
    p = rescore_masked(blip2, visual, [0, 0], np.stack([np.ones(256, bool), e.mask]), vocabulary.CLASSIFY)
    assert p[0] == pytest.approx(e.p_full, abs=1e-4)
    assert e.faithfulness is None


def test_deletion_curve_and_gradient_mode(blip2, clip):
    frames, _ = clip
    [att] = explain_frames(blip2, frames, [0], rho=0.1)
    [grad] = explain_frames(blip2, frames, [0], method="gradient", rho=0.1)
    assert [p["rho"] for p in att.faithfulness.curve] == [0.05, 0.1, 0.25, 0.5]
    assert att.faithfulness.curve[1]["p_drop_top"] == pytest.approx(att.faithfulness.p_drop_top, abs=1e-6)
    assert grad.method == "gradient" and (grad.relevance >= 0).all() and grad.relevance.sum() > 0
    assert grad.p_full == pytest.approx(att.p_full, abs=1e-6)
    assert not np.array_equal(grad.mask, att.mask)
    with pytest.raises(ValueError):
        explain_frames(blip2, frames, [0], method="occlusion")


def test_other_questions_explain_the_answer_the_frame_got(blip2, clip):
    frames, _ = clip
    [e] = explain_frames(blip2, frames, [1], question=vocabulary.LAYOUT, rho=0.25, config=NO_CURVE)
    f = e.faithfulness
    assert 0 < e.p_full <= 1 and all(0 <= p <= 1 for p in (f.p_keep_top, f.p_drop_top, f.p_drop_random))


def test_clip_level_mask_and_its_faithfulness(blip2, clip):
    frames, _ = clip
    ce = explain_clip(blip2, frames, rho=0.1, seed=1)
    assert ce.relevance.shape == (8, 256) and ce.selection.mask.shape == (8, 256)
    assert ce.selection.kept == int(np.ceil(0.1 * 8 * 256))
    assert ce.selection.frame_shares.sum() == pytest.approx(1.0)
    assert ce.p_full.shape == ce.p_keep_top.shape == ce.p_drop_top.shape == ce.p_drop_random.shape == (8,)
    assert ce.p_keep_random.shape == (8,)
    single = explain_frames(blip2, frames, [3], faithfulness=False)[0]
    assert np.allclose(ce.relevance[3], single.relevance, atol=1e-6)
    json.dumps(ce.to_dict())


def test_render_explanation_draws_every_view(blip2, clip):
    frames, _ = clip
    [e] = explain_frames(blip2, frames, [2], config=NO_CURVE)
    pictures = render_explanation(frames[2], e)
    assert set(pictures) == {f"heatmap:{k}" for k in e.heatmaps} | {"mask", "query_grid"}
    assert all(p.size == (252, 448) for k, p in pictures.items() if k != "query_grid")


def test_dropping_the_top_quarter_hurts_more_than_a_random_quarter(blip2):
    """Regression guard on >= 50 sludge frames (the goal, 3x, is measured by bench/bench_faithfulness.py)."""
    frames, truths = synthetic.make_frames(seed=2024, n=56, pool="holdout", sludge_share=1.0)
    assert sum(t.sludge for t in truths) >= 50
    found = explain_frames(blip2, frames, rho=0.25, seed=0, config=dataclasses.replace(NO_CURVE, batch_size=16, rescore_batch=48))
    top = np.mean([abs(e.p_full - e.faithfulness.p_drop_top) for e in found])
    rand = np.mean([abs(e.p_full - e.faithfulness.p_drop_random) for e in found])
    assert top >= 1.5 * rand, (top, rand)


# ---------------------------------------------------------------- the embedded LLaVA model


def test_llava_maps_live_on_its_grid_and_the_centre_crop(llava, clip):
    frames, _ = clip
    [e] = explain_frames(llava, frames, [1], rho=0.25, config=NO_CURVE)
    assert e.model_kind == "llava" and e.grid == (12, 12) and e.per_query is None
    assert e.region == model_view_region(llava, frames[1].shape) == (0, 98, 252, 350)
    read = min(ExplainConfig().lm_layers, llava.model.config.text_config.num_hidden_layers)
    assert len(e.heatmaps) == 1 + read and "question" in e.heatmaps
    assert 0 < e.heatmaps["question"].sum() <= 1 and e.selection.kept == 36
    assert set(render_explanation(frames[1], e)) == {f"heatmap:{k}" for k in e.heatmaps} | {"mask"}
    with pytest.raises(ValueError):
        pick_cross_attention_map(e)


def test_llava_token_selection_really_shortens_the_sequence(llava, clip):
    frames, _ = clip
    visual = encode_frames(llava, frames[:1])
    lengths = []
    first = llava.model.get_decoder().layers[0]
    hook = first.register_forward_pre_hook(lambda m, args: lengths.append(args[0].shape[1]))
    try:
        full = run_answer_pass(llava, visual, [vocabulary.CLASSIFY])
        keep = torch.from_numpy(draw_random_mask(144, 36, seed=0))[None]
        short = run_answer_pass(llava, visual, [vocabulary.CLASSIFY], keep=keep)
    finally:
        hook.remove()
    assert lengths[1] == lengths[0] - 108
    assert int(short.attention_mask.sum()) == int(full.attention_mask.sum()) - 108 and len(short.image_slots[0]) == 36
    p = rescore_masked(llava, visual, [0, 0], np.stack([np.ones(144, bool), keep[0].numpy()]), vocabulary.CLASSIFY)
    assert p[0] == pytest.approx(float(score_frames(llava, frames[:1])[0].p_sludge), abs=1e-4)


def test_llava_gradient_mode(llava, clip):
    frames, _ = clip
    [e] = explain_frames(llava, frames, [0], method="gradient", config=NO_CURVE)
    assert e.relevance.shape == (144,) and (e.relevance >= 0).all() and e.faithfulness is not None


# ---------------------------------------------------------------- real widths, reduced depth


@pytest.mark.slow
@pytest.mark.parametrize("family,grid", [("blip2", 16), ("llava", 24)])
def test_real_shape_vqwen_configs_explain(real_shape_checkpoint, family, grid):
    """True widths (EVA 1408 / Q-Former 768 x 12 heads / Qwen3-4B 2560 x 32 heads, or CLIP-L 336 -> 24x24)."""
    lm = load_model(ModelSpec(str(real_shape_checkpoint(family))))
    frames = synthetic.make_frames(seed=1, n=2)[0]
    found = explain_frames(lm, frames, rho=0.25, config=NO_CURVE)
    for e in found:
        assert e.grid == (grid, grid) and e.relevance.shape == (grid * grid,)
        assert e.selection.kept == grid * grid // 4
        assert 0 < e.heatmaps["question"].sum() <= 1 + 1e-5
        assert all(0 <= p <= 1 for p in (e.p_full, e.faithfulness.p_keep_top, e.faithfulness.p_drop_random))
        if lm.family.name == "blip2":
            assert e.per_query.shape == (32, 16, 16) and set(e.heatmaps) == {"mean", "max", "layer_0", "question"}
            assert e.heatmaps["mean"].sum() <= 1 + 1e-5
        else:
            assert e.region == (0, 98, 252, 350)
