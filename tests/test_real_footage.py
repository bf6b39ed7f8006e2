"""The real-footage check at a small size: the embedded default on clips composed from held-out packages.

bench/bench_real_video.py runs the same check at 1080x1920 and 1280x720 with more clips. Here it runs on
thirty small clips (a single scene and each sludge layout, portrait and landscape, from the training
renderer, from plain compositing of pictures and from plain compositing of real videos) through the app's own decode-sample-score path: the figures must add
up, the shipped model must not fall below what it measures today, and the goals of the embedded model are
held as a strict expected failure, which turns red the day a checkpoint meets them so the floor gets raised.
"""

import numpy as np
import pytest

from core.config import EMBEDDED_BLIP2, ModelSpec
from core.engine import load_model
from training import synthetic
from training.real_footage import (CLIP_LAYOUTS, check_examples, check_real_footage, make_footage_clips,
                                   make_plain_clips, make_real_clips, summarise_rows)

SIZES = ((640, 360), (360, 640))


@pytest.fixture(scope="module")
def lm():
    return load_model(ModelSpec(str(EMBEDDED_BLIP2)))


@pytest.fixture(scope="module")
def figures(lm, tmp_path_factory):
    clips = []
    for make in (make_real_clips, make_plain_clips, make_footage_clips):
        folder = tmp_path_factory.mktemp(make.__name__)
        made = make(folder, per_layout=1, sizes=SIZES, num_frames=8)
        assert len(made) == 2 * len(CLIP_LAYOUTS) and all(c.path.stat().st_size > 0 for c in made)
        again = make(folder, per_layout=1, sizes=SIZES, num_frames=8)
        assert [c.path.stat().st_mtime for c in again] == [c.path.stat().st_mtime for c in made]  # cached
        clips += made
    return check_real_footage(lm, clips, num_frames=8)


def test_the_figures_add_up_from_the_clips(figures):
    rows = figures["rows"]
    assert figures["clips"] == len(rows) == 30
    assert {name: part["clips"] for name, part in figures["by_composer"].items()} == {
        "renderer": 10, "plain": 10, "footage": 10}
    for name, part in figures["by_composer"].items():
        assert part == summarise_rows([row for row in rows if row["composer"] == name])
    assert figures["video_accuracy"] == pytest.approx(np.mean([row["right"] for row in rows]), abs=1e-4)
    for row in rows:
        assert row["frames"] == 8 and sum(row["layout_votes"].values()) == 8
        assert row["right"] == (row["verdict"] == (row["truth"] != "none"))
    singles = [row for row in rows if row["truth"] == "none"]
    called_single = sum(row["frames"] - row["sludge_frames"] for row in singles) / sum(r["frames"] for r in singles)
    assert figures["single_frames_not_sludge"] == pytest.approx(called_single, abs=1e-4)
    sludge = [row for row in rows if row["truth"] != "none"]
    right = sum(row["layout_votes"].get(row["truth"], 0) for row in sludge) / sum(row["frames"] for row in sludge)
    assert figures["layout_accuracy"] == pytest.approx(right, abs=1e-4)
    by_shape = figures["layout_accuracy_by_shape"]
    assert set(by_shape) == {row["truth"] for row in sludge}
    for kind, shapes in by_shape.items():
        assert set(shapes) == {"portrait", "landscape"}  # one clip of each shape per layout and composer
        for shape, share in shapes.items():
            mine = [row for row in sludge
                    if row["truth"] == kind and (row["size"][0] > row["size"][1]) == (shape == "portrait")]
            assert len(mine) == 3
            assert share == pytest.approx(sum(r["layout_votes"].get(kind, 0) for r in mine) / 24, abs=1e-4)
    # Every clip names the held-out packages its streams come from (never a procedural scene of the
    # renderer, which training draws too), and the by-source figure is the mean over the single scenes that
    # drew each source.
    assert all(row["sources"] for row in rows)
    assert not {s for row in rows for s in row["sources"]} & set(synthetic.PROCEDURAL_NOUNS)
    by_source = figures["single_not_sludge_by_source"]
    assert set(by_source) == {source for row in singles for source in row["sources"]}
    for source, share in by_source.items():
        mine = [1 - row["sludge_frames"] / row["frames"] for row in singles if source in row["sources"]]
        assert share == pytest.approx(np.mean(mine), abs=1e-4)


def test_the_embedded_default_keeps_its_measured_level(figures, lm):
    # Measured on the shipped checkpoint: video level 0.9 (renderer clips 0.9, plain 1.0, real video 0.8),
    # single-scene frames called one scene 77 %, sludge frames found 91.1 %, layout 67.7 % (renderer 100 %,
    # plain 67 %, real video 36 %), all 5 bundled examples right. Single scenes of real video are where it
    # fails most: half of such frames are called sludge. Against the checkpoint before it (0.9, 77 %, 92.7 %,
    # 68.2 %) these small clips lost three of 192 sludge frames; on the bench's full-size clips single
    # scenes rose (80.2 -> 85.4 %), as did video level (0.917 -> 0.933) and layout (65.2 -> 66.3 %), while
    # sludge frames found gave a little back (92.9 -> 91.5 %). The floors leave a clip or a few frames of margin.
    assert figures["video_accuracy"] >= 0.85, figures["rows"]
    assert figures["single_frames_not_sludge"] >= 0.72
    assert figures["sludge_frames_found"] >= 0.88
    assert figures["layout_accuracy"] >= 0.62
    pictures = [row for row in figures["rows"] if row["composer"] != "footage"]
    assert summarise_rows(pictures)["layout_accuracy"] >= 0.72
    assert check_examples(lm, num_frames=16)["right"] == 5


@pytest.mark.xfail(strict=True, reason="the embedded default does not meet the real-footage goals yet: on these "
                                       "clips it calls 77 % of single-scene frames one scene (real video: 50 %) "
                                       "and gets 68 % of layouts; on the bench's full-size clips 85.4 % and 66 %")
def test_the_embedded_default_meets_the_real_footage_goals(figures, lm):
    assert figures["video_accuracy"] >= 0.9
    assert figures["single_frames_not_sludge"] >= 0.85
    assert figures["sludge_frames_found"] >= 0.9
    assert figures["layout_accuracy"] >= 0.8
    assert check_examples(lm, num_frames=16)["right"] == 5
