"""Synthetic sludge data: determinism, shapes, layouts, pools, clips and real encoded video."""

from __future__ import annotations

import ast
from pathlib import Path

import av
import numpy as np
import pytest

from core import vocabulary
from training import imagery, synthetic

SMALL = (64, 36)
REPO = Path(__file__).resolve().parent.parent


def test_same_seed_gives_byte_identical_frames_and_truth():
    a, truths_a = synthetic.make_frames(11, 12, size=SMALL)
    b, truths_b = synthetic.make_frames(11, 12, size=SMALL)
    c, _ = synthetic.make_frames(12, 12, size=SMALL)
    assert a.tobytes() == b.tobytes()
    assert truths_a == truths_b
    assert a.tobytes() != c.tobytes()


def test_frame_i_depends_only_on_seed_and_index():
    short, short_truths = synthetic.make_frames(5, 3, size=SMALL)
    long, long_truths = synthetic.make_frames(5, 8, size=SMALL)
    assert np.array_equal(short, long[:3])
    assert short_truths == long_truths[:3]


@pytest.mark.parametrize("size", [(448, 252), (224, 224), (64, 36), (9, 7)])
def test_frames_are_uint8_rgb_of_the_requested_size(size):
    frames, truths = synthetic.make_frames(1, 6, size=size)
    assert frames.shape == (6, *size, 3)
    assert frames.dtype == np.uint8
    assert len(truths) == 6


def test_make_frame_honours_layout_and_time():
    rng = np.random.default_rng(0)
    for layout in vocabulary.LAYOUTS:
        frame, truth = synthetic.make_frame(rng, layout=layout, size=SMALL, t=1.5)
        assert frame.shape == (*SMALL, 3) and truth.layout == layout and truth.sludge
    frame, truth = synthetic.make_frame(rng, layout="distractor", size=SMALL)
    assert truth.layout == "none" and not truth.sludge and truth.distractor
    with pytest.raises(ValueError):
        synthetic.make_frame(rng, layout="diagonal")
    with pytest.raises(ValueError):
        synthetic.make_frame(rng, pool="test")


def test_random_frames_cover_every_layout_and_distractors_with_about_half_sludge():
    _, truths = synthetic.make_frames(2, 300, size=SMALL)
    layouts = {t.layout for t in truths}
    assert layouts == set(vocabulary.LAYOUTS) | {"none"}
    sludge_share = np.mean([t.sludge for t in truths])
    assert 0.4 < sludge_share < 0.6
    singles = [t for t in truths if not t.sludge]
    distractor_share = np.mean([t.distractor for t in singles])
    assert 0.15 < distractor_share < 0.45
    assert all((t.layout == "none") != t.sludge for t in truths)
    assert not any(t.distractor for t in truths if t.sludge)


def test_sludge_share_is_respected():
    _, none = synthetic.make_frames(3, 40, size=SMALL, sludge_share=0.0)
    _, all_sludge = synthetic.make_frames(3, 40, size=SMALL, sludge_share=1.0)
    assert not any(t.sludge for t in none)
    assert all(t.sludge for t in all_sludge)


def test_sludge_streams_come_from_different_sources():
    _, truths = synthetic.make_frames(4, 200, size=SMALL, sludge_share=1.0)
    for truth in truths:
        assert len(truth.sources) >= 2
        assert len(set(truth.sources)) == len(truth.sources), truth


def test_holdout_pool_photos_never_appear_in_the_train_pool():
    assert len(synthetic.HOLDOUT_PHOTOS) >= 4
    assert not set(synthetic.HOLDOUT_PHOTOS) & set(synthetic.TRAIN_PHOTOS)
    _, train = synthetic.make_frames(6, 300, size=SMALL, pool="train")
    _, holdout = synthetic.make_frames(6, 300, size=SMALL, pool="holdout")
    train_photos = {s for t in train for s in t.sources if s in synthetic.PHOTO_NOUNS}
    holdout_photos = {s for t in holdout for s in t.sources if s in synthetic.PHOTO_NOUNS}
    assert train_photos and holdout_photos
    assert train_photos <= set(synthetic.TRAIN_PHOTOS)
    assert holdout_photos <= set(synthetic.HOLDOUT_PHOTOS)


def test_every_bundled_photo_loads_offline():
    assert set(synthetic.PHOTO_NOUNS) == set(imagery.SKIMAGE_PHOTOS + imagery.SKLEARN_PHOTOS)
    for name in synthetic.PHOTO_NOUNS:
        photo = synthetic.load_photo(name)
        assert photo.mode == "RGB" and max(photo.size) <= 640 and min(photo.size) > 100


def test_truth_text_is_grounded_and_names_the_streams():
    rng = np.random.default_rng(9)
    for layout in vocabulary.LAYOUTS + ("single", "distractor"):
        for _ in range(10):
            _, truth = synthetic.make_frame(rng, layout=layout, size=SMALL)
            assert truth.description[0].isupper() and truth.description.endswith(".")
            prefix = "Sludge:" if truth.sludge else "Not sludge:"
            assert truth.explanation.startswith(prefix)
            for source in truth.sources:
                assert synthetic.noun_of(source).lower() in truth.description.lower()
    assert vocabulary.REFUSAL.startswith("I can't identify")
    assert all(q.endswith("?") for q in vocabulary.IDENTITY_QUESTIONS)


def test_description_mentions_a_caption_exactly_when_one_is_drawn():
    rng = np.random.default_rng(21)
    with_caption = [synthetic.draw_frame_spec(rng, "vertical", SMALL) for _ in range(40)]
    for spec in with_caption:
        mentions = "caption" in spec.truth.description
        assert mentions == bool(spec.captions)


def test_content_moves_over_time():
    spec = synthetic.draw_frame_spec(np.random.default_rng(3), "vertical", (112, 64))
    first = synthetic.render_frame(spec, (112, 64), t=0.0)
    later = synthetic.render_frame(spec, (112, 64), t=1.0)
    assert first.shape == later.shape
    assert np.abs(first.astype(int) - later.astype(int)).mean() > 1.0


def test_clip_changes_layout_with_per_frame_truth():
    frames, truths = synthetic.make_clip(3, num_frames=24, size=SMALL, layouts=("single", "vertical", "pip"))
    assert frames.shape == (24, *SMALL, 3) and frames.dtype == np.uint8
    assert len(truths) == 24
    layouts = [t.layout for t in truths]
    assert layouts[0] == "none" and layouts[-1] == "pip" and "vertical" in layouts
    changes = [i for i in range(1, 24) if layouts[i] != layouts[i - 1]]
    assert len(changes) == 2
    assert not truths[0].sludge and truths[-1].sludge


def test_random_clips_change_layout_at_every_cut_and_are_deterministic():
    for seed in range(6):
        spec = synthetic.draw_clip_spec(seed, num_frames=30, size=SMALL, segments=3)
        assert [s.start for s in spec.segments][0] == 0 and spec.segments[-1].stop == 30
        for before, after in zip(spec.segments, spec.segments[1:]):
            assert before.stop == after.start
            assert before.frame.truth.layout != after.frame.truth.layout
    a, _ = synthetic.make_clip(8, num_frames=10, size=SMALL)
    b, _ = synthetic.make_clip(8, num_frames=10, size=SMALL)
    assert a.tobytes() == b.tobytes()


def _decode(path):
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def test_write_clip_decodes_back_with_frame_count_size_and_content(tmp_path):
    frames, _ = synthetic.make_clip(1, num_frames=14, size=(112, 64), layouts=("vertical",))
    path = synthetic.write_clip(tmp_path / "clip.mp4", frames, fps=12.0)
    decoded = _decode(path)
    assert len(decoded) == 14
    assert decoded[0].shape == (112, 64, 3)
    assert np.abs(decoded[5].astype(int) - frames[5].astype(int)).mean() < 12


def test_write_clip_crops_odd_sizes_to_even(tmp_path):
    frames, _ = synthetic.make_clip(2, num_frames=4, size=(65, 37))
    decoded = _decode(synthetic.write_clip(tmp_path / "odd.mp4", frames))
    assert len(decoded) == 4 and decoded[0].shape == (64, 36, 3)


def test_make_example_clips_writes_decodable_short_clips(tmp_path):
    paths = synthetic.make_example_clips(tmp_path, seed=0, num_frames=12, size=(112, 64))
    assert [p.name for p in paths] == list(synthetic.EXAMPLE_CLIPS)
    for path in paths:
        decoded = _decode(path)
        assert len(decoded) == 12 and decoded[0].shape == (112, 64, 3)


def test_the_committed_example_clips_are_what_the_command_renders(tmp_path):
    fresh = synthetic.make_example_clips(tmp_path)
    assert sorted(p.name for p in synthetic.EXAMPLES_DIR.iterdir()) == sorted(synthetic.EXAMPLE_CLIPS)
    for path in fresh:
        committed = synthetic.EXAMPLES_DIR / path.name
        assert committed.read_bytes() == path.read_bytes(), (
            f"{committed} is not what `python -m training.synthetic examples` writes now: run it and commit")


def test_the_committed_example_clips_decode_to_their_specs():
    for k, (name, layouts) in enumerate(synthetic.EXAMPLE_CLIPS.items()):
        frames, truths = synthetic.render_clip(synthetic.draw_example_spec(k, layouts))
        decoded = np.stack(_decode(synthetic.EXAMPLES_DIR / name))
        assert decoded.shape == frames.shape == (24, 448, 252, 3), name
        # H.264 at crf 20 is lossy, but every frame is within a few grey levels of its picture.
        errors = np.abs(decoded.astype(int) - frames.astype(int)).mean(axis=(1, 2, 3))
        assert errors.max() < 5, (name, errors.round(1))
        assert [t.layout for t in dict.fromkeys(truths)] == ["none" if x == "single" else x for x in layouts]


def test_the_app_offers_the_example_clips_in_the_generators_order():
    # Read from the source: importing ui.services would import gradio and torch for one constant.
    tree = ast.parse((REPO / "ui" / "services.py").read_text(encoding="utf-8"))
    (names,) = [ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["EXAMPLE_CLIPS"]]
    assert names == tuple(synthetic.EXAMPLE_CLIPS)


def test_example_clips_show_their_layout_plainly(tmp_path):
    for k, layouts in enumerate(synthetic.EXAMPLE_CLIPS.values()):
        spec = synthetic.draw_example_spec(k, layouts)
        assert synthetic.shows_layout_plainly(spec)
        assert [seg.frame.truth.layout for seg in spec.segments] == [
            "none" if name == "single" else name for name in layouts]
        assert not any(seg.frame.truth.distractor for seg in spec.segments)
    # A 15 % inset is a real picture-in-picture, but not a plain example of one.
    small = next(s for s in (synthetic.draw_clip_spec(t, 12, layouts=("pip",)) for t in range(200))
                 if s.segments[0].frame.tiles[1].box[2] - s.segments[0].frame.tiles[1].box[0] < 0.2)
    assert not synthetic.shows_layout_plainly(small)


def test_balanced_batches_show_every_source_as_often_alone_as_in_composites():
    specs = synthetic.draw_balanced_specs(np.random.default_rng(5), 400, pool="train", sizes=(SMALL, (36, 64)))
    alone, inside = {}, {}
    for spec, size in specs:
        assert size in (SMALL, (36, 64))
        counts = inside if spec.truth.sludge else alone
        for stream in spec.streams[:1] if not spec.truth.sludge else spec.streams:
            counts[stream.source] = counts.get(stream.source, 0) + 1
    sources = set(alone) | set(inside)
    # Every stream of a composite is followed by a single frame of its source; only the batch's tail may cut
    # that short, so the counts differ by at most the last composite's streams.
    assert sum(abs(alone.get(s, 0) - inside.get(s, 0)) for s in sources) <= 4
    share = np.mean([spec.truth.sludge for spec, _ in specs])
    assert 0.2 < share < 0.45


def test_real_pools_compose_crops_of_one_picture_and_keep_straight_edged_single_scenes():
    rng = np.random.default_rng(11)
    same, variants = 0, set()
    for _ in range(150):
        spec = synthetic.draw_frame_spec(rng, "vertical", SMALL, pool="real-holdout")
        if len(set(spec.truth.sources)) == 1:
            same += 1
            assert spec.truth.sludge and spec.streams[0] != spec.streams[1]
    for _ in range(150):
        spec = synthetic.draw_frame_spec(rng, "distractor", SMALL, pool="real-holdout")
        assert not spec.truth.sludge
        variants.add(spec.truth.description.split(" ")[-1])
        assert "zoomed-in part" not in spec.truth.description
        if spec.ui_overlay is not None:
            frame = synthetic.render_frame(spec, SMALL)
            assert frame.shape == SMALL + (3,)
    assert same > 10
    assert any(spec_words in " ".join(variants) for spec_words in ("buttons.", "skyline."))


def test_real_pools_draw_video_stills_and_composites_of_one_kind_of_stream():
    # A change of look between streams must not tell sludge: half the composites that are not two crops of
    # one picture stack streams of one kind (two videos, two photos), and real video stills are among them.
    rng = np.random.default_rng(12)
    stills = set(imagery.list_footage("holdout"))
    pictures = set(imagery.list_images("holdout"))
    kinds_of = []
    for _ in range(300):
        spec = synthetic.draw_frame_spec(rng, "horizontal", SMALL, pool="real-holdout")
        sources = spec.truth.sources
        if len(set(sources)) > 1:
            kinds_of.append({"footage" if s in stills else "picture" if s in pictures else s for s in sources})
    one_kind = [kinds for kinds in kinds_of if len(kinds) == 1]
    assert 0.35 < len(one_kind) / len(kinds_of) < 0.8
    assert {"footage"} in one_kind and {"picture"} in one_kind
    assert any("footage" in kinds and len(kinds) > 1 for kinds in kinds_of)  # and mixed ones still


def test_degrade_frame_keeps_the_frame_and_changes_its_pixels():
    frame, _ = synthetic.make_frame(np.random.default_rng(2), "pip", size=(128, 72))
    rng = np.random.default_rng(0)
    outs = [synthetic.degrade_frame(rng, frame) for _ in range(8)]
    assert all(out.shape == frame.shape and out.dtype == np.uint8 for out in outs)
    assert any(np.abs(out.astype(int) - frame).mean() > 0.5 for out in outs)


def test_recolouring_a_frame_changes_its_colours_and_keeps_black_and_white():
    frame, _ = synthetic.make_frame(np.random.default_rng(4), "vertical", size=(128, 72))
    frame = frame.copy()
    frame[:8], frame[-8:] = 0, 255  # a black bar above, a white one below
    rng = np.random.default_rng(0)
    outs = [synthetic.recolour_frame(rng, frame) for _ in range(12)]
    assert all(out.shape == frame.shape and out.dtype == np.uint8 for out in outs)
    assert all(out[:8].max() <= 2 and out[-8:].min() >= 253 for out in outs)
    assert all(np.abs(out.astype(int) - frame).mean() > 2 for out in outs)
    # One of the three ways leaves no colour at all.
    assert any((out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all() for out in outs)


def test_a_stream_style_puts_games_in_any_tile_and_leaves_streams_ungraded_when_asked():
    # The renderer's own habits: a game under the stack and every stream colour-graded on its own.
    games = set(imagery.list_games("holdout")) or {"platformer"}

    def draw(style, n=240):
        rng = np.random.default_rng(21)
        return [synthetic.draw_frame_spec(rng, "vertical", SMALL, pool="real-holdout", style=style) for _ in range(n)]

    def game_share(specs, tile):
        return np.mean([spec.truth.sources[tile] in games for spec in specs])

    renderer, plain = draw(synthetic.RENDERER_STYLE), draw(synthetic.StreamStyle(0.0, 1.0))
    assert game_share(renderer, 1) > game_share(renderer, 0) + 0.1
    assert abs(game_share(plain, 1) - game_share(plain, 0)) < 0.1
    ungraded = [(s.brightness, s.contrast, s.saturation, s.gains) == (0.0, 1.0, 1.0, (1.0, 1.0, 1.0))
                for spec in plain for s in spec.streams]
    assert all(ungraded)
    assert not any((s.brightness, s.gains) == (0.0, (1.0, 1.0, 1.0)) for spec in renderer for s in spec.streams)
    # Balanced batches show the ungraded streams alone as often as inside composites.
    half = synthetic.draw_balanced_specs(np.random.default_rng(5), 300, pool="real-holdout", sizes=(SMALL,),
                                         style=synthetic.StreamStyle(ungraded_share=0.5))
    for sludge in (True, False):
        streams = [s for spec, _ in half if spec.truth.sludge == sludge for s in spec.streams]
        assert 0.35 < np.mean([s.gains == (1.0, 1.0, 1.0) for s in streams]) < 0.65
    for out_of_range in ({"ungraded_share": 1.5}, {"game_last_scale": -1.0}):
        with pytest.raises(ValueError, match="ungraded_share takes 0..1"):
            synthetic.StreamStyle(**out_of_range)
