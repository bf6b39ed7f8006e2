"""core.video on real clips encoded with PyAV in a temporary folder, decoded by real decord and PyAV.

Every clip paints its frame index into the picture (grey level 8·(i+1)) and a red block in the top-left
corner of the picture as it should be shown, so tests read back from pixels which frame they got and
which way up it is.
"""

from __future__ import annotations

import os
from dataclasses import replace
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from core.config import VideoLimits, load_settings
from core.video import (
    MIN_RUN_DECODES,
    AudioOnlyError,
    CorruptVideoError,
    EmptyFileError,
    FileTooLargeError,
    ImageNotVideoError,
    MissingFileError,
    NoFramesError,
    NotMediaError,
    ResolutionError,
    SampledVideo,
    TruncatedVideoError,
    VideoError,
    VideoMeta,
    VideoTooLongError,
    check_video_file,
    find_declared_end,
    plan_timestamps,
    probe_video,
    sample_frames,
    snap_to_keyframes,
    split_runs,
    working_size,
)

# Exact frames: these tests name the frames each planned time shows; keyframe snapping has its own tests.
DECORD = VideoLimits(decoder="decord", keyframe_snap_s=0.0)
PYAV = VideoLimits(decoder="pyav", keyframe_snap_s=0.0)


def scene(i: int, width: int, height: int) -> np.ndarray:
    """Frame i as it should be displayed: grey 8·(i+1) mod 256 everywhere, a red block in the top-left corner."""
    frame = np.full((height, width, 3), 8 * (i + 1) % 256, np.uint8)
    frame[: height // 3, : width // 3] = (255, 0, 0)
    return frame


def read_index(frame: np.ndarray) -> int:
    """The frame index painted by `scene`, read from the bottom-right corner (grey, away from the block)."""
    h, w = frame.shape[:2]
    return int(round(frame[-h // 4:, -w // 4:].mean() / 8)) - 1


def red_corner(frame: np.ndarray) -> str:
    """Which corner holds the red block."""
    h, w = frame.shape[:2]
    corners = {
        "top-left": frame[: h // 4, : w // 4], "top-right": frame[: h // 4, -w // 4:],
        "bottom-left": frame[-h // 4:, : w // 4], "bottom-right": frame[-h // 4:, -w // 4:],
    }
    redness = {name: float(c[..., 0].mean()) - float(c[..., 1].mean()) for name, c in corners.items()}
    return max(redness, key=redness.get)


def encode_clip(path, frames: int, fps: int = 10, size=(96, 64), codec: str = "libx264", turn: int = 0,
                options: dict | None = None, container_options: dict | None = None, painter=scene,
                fmt: str | None = None):
    """Write a clip whose displayed picture is `painter(i, *size)`.

    `turn` (counter-clockwise degrees) is what the display matrix says; the stored picture is the
    displayed one turned back the other way, the way a phone stores a portrait recording.
    """
    width, height = size
    stored_w, stored_h = (height, width) if turn in (90, 270) else (width, height)
    with av.open(str(path), "w", format=fmt, options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=fps, options=options or {})
        stream.width, stream.height, stream.pix_fmt = stored_w, stored_h, "yuv420p"
        if turn:
            stream.set_display_rotation(turn)
        for i in range(frames):
            stored = np.ascontiguousarray(np.rot90(painter(i, width, height), k=-turn // 90))
            container.mux(stream.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def encode_audio(path, seconds: float = 1.0, codec: str = "aac", rate: int = 16000):
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        fmt = "fltp" if codec == "aac" else "s16"
        for k in range(int(seconds * rate / 1024)):
            samples = np.zeros((1, 1024), np.float32 if fmt == "fltp" else np.int16)
            frame = av.AudioFrame.from_ndarray(samples, format=fmt, layout="mono")
            frame.sample_rate, frame.pts = rate, k * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    return {
        "mp4": encode_clip(d / "h264.mp4", frames=30),  # 3 s at 10 fps
        "mkv": encode_clip(d / "h264.mkv", frames=30),
        "webm": encode_clip(d / "vp9.webm", frames=30, codec="libvpx-vp9",
                            options={"deadline": "realtime", "cpu-used": "8"}),
        "avi": encode_clip(d / "mpeg4.avi", frames=30, codec="mpeg4", options={"qscale": "2"}),
        "short": encode_clip(d / "short.mp4", frames=5, fps=5),  # 1 s, 5 frames
        # 12 s with a keyframe every 2 s, so that sampling it seeks.
        "long": encode_clip(d / "long.mp4", frames=30 * 12, fps=30, options={"g": "60"}),
        # 12 s with a keyframe every 2 s and nowhere else (no scene-cut keyframes).
        "gop2s": encode_clip(d / "gop2s.mp4", frames=30 * 12, fps=30, options={"g": "60", "sc_threshold": "0"}),
        "turn90": encode_clip(d / "turn90.mp4", frames=10, size=(64, 96), turn=90),
        "turn180": encode_clip(d / "turn180.mp4", frames=10, size=(64, 96), turn=180),
        "turn270": encode_clip(d / "turn270.mp4", frames=10, size=(64, 96), turn=270),
    }


# ---------------------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("kind", ["mp4", "mkv", "webm", "avi"])
@pytest.mark.parametrize("limits", [DECORD, PYAV], ids=["decord", "pyav"])
def test_samples_the_frames_it_names_in_every_container(clips, kind, limits):
    video = sample_frames(clips[kind], num_frames=8, limits=limits)
    assert isinstance(video, SampledVideo)
    assert video.meta.decoder == limits.decoder
    assert video.frames.shape == (8, 64, 96, 3) and video.frames.dtype == np.uint8
    assert len(video.timestamps) == len(video.indices) == 8
    # Centres of 8 segments of 0.375 s, shown by these frames at 10 fps:
    assert video.indices == [1, 5, 9, 13, 16, 20, 24, 28]
    assert [read_index(f) for f in video.frames] == video.indices
    assert all(red_corner(f) == "top-left" for f in video.frames)


def test_timestamps_are_segment_centres_within_the_duration(clips):
    video = sample_frames(clips["mp4"], num_frames=10, limits=DECORD)
    duration, fps = video.meta.duration_s, video.meta.fps
    # Centres of 10 segments of 0.3 s: 0.15, 0.45, ... shown by frames 1, 4, 7, ...
    assert video.indices == [int((k + 0.5) * 0.3 * fps) for k in range(10)]
    assert all(0 <= t < duration for t in video.timestamps)
    assert np.allclose(np.diff(video.timestamps), duration / 10, atol=1 / fps)
    assert np.allclose(video.timestamps, [i / fps for i in video.indices], atol=1e-3)


def test_probe_reports_what_the_file_is(clips):
    meta = probe_video(clips["mp4"])
    assert isinstance(meta, VideoMeta)
    assert (meta.width, meta.height, meta.rotation, meta.codec) == (96, 64, 0, "h264")
    assert meta.fps == pytest.approx(10.0)
    assert meta.duration_s == pytest.approx(3.0, abs=0.11)
    assert meta.frame_count == 30
    assert meta.size_bytes == os.path.getsize(clips["mp4"])
    assert meta.path == str(clips["mp4"])
    webm = probe_video(clips["webm"])
    assert (webm.codec, webm.frame_count) == ("vp9", 30)
    assert webm.duration_s == pytest.approx(3.0, abs=0.11)


def test_a_one_second_clip_gives_each_of_its_frames_once(clips):
    video = sample_frames(clips["short"], num_frames=16)
    assert video.indices == [0, 1, 2, 3, 4]
    assert [read_index(f) for f in video.frames] == [0, 1, 2, 3, 4]
    assert video.frames.shape == (5, 64, 96, 3)


def test_fps_mode_samples_every_interval(clips):
    video = sample_frames(clips["mp4"], fps=2.0, limits=DECORD)
    assert video.indices == [2, 7, 12, 17, 22, 27]
    assert np.allclose(np.diff(video.timestamps), 0.5, atol=1e-3)
    assert [read_index(f) for f in video.frames] == video.indices


def test_fps_mode_spreads_the_cap_over_the_whole_video(clips):
    capped = replace(DECORD, max_sampled_frames=4)
    video = sample_frames(clips["long"], fps=30.0, limits=capped)
    assert len(video.frames) == 4
    assert video.timestamps[0] < 2.0 and video.timestamps[-1] > 10.0
    assert plan_timestamps(12.0, fps=30.0, max_frames=4) == [1.5, 4.5, 7.5, 10.5]


@pytest.mark.parametrize("limits", [DECORD, PYAV], ids=["decord", "pyav"])
def test_seeking_through_a_longer_clip_lands_on_the_named_frames(clips, limits):
    video = sample_frames(clips["long"], num_frames=6, limits=limits)
    assert video.meta.decoder == limits.decoder
    assert [read_index(f) % 32 for f in video.frames] == [i % 32 for i in video.indices]
    assert video.indices == [30, 90, 150, 210, 270, 330]


@pytest.mark.parametrize("turn", [90, 180, 270])
def test_rotation_metadata_is_honoured(clips, turn):
    meta = probe_video(clips[f"turn{turn}"])
    assert meta.rotation == turn
    assert (meta.width, meta.height) == (64, 96)
    video = sample_frames(clips[f"turn{turn}"], num_frames=4)
    assert video.meta.decoder == "pyav"  # decord 0.6.0 mangles turned files; they go to PyAV
    assert video.frames.shape == (4, 96, 64, 3)
    assert all(red_corner(f) == "top-left" for f in video.frames)
    assert [read_index(f) for f in video.frames] == video.indices


def test_decord_that_runs_too_long_is_stopped_and_pyav_takes_over(clips):
    by_decord = sample_frames(clips["mp4"], num_frames=8, limits=DECORD)
    impatient = replace(DECORD, decord_timeout_s=0.001)
    fallback = sample_frames(clips["mp4"], num_frames=8, limits=impatient)
    assert by_decord.meta.decoder == "decord"
    assert fallback.meta.decoder == "pyav"
    assert fallback.indices == by_decord.indices
    assert np.allclose(fallback.timestamps, by_decord.timestamps, atol=1e-3)
    assert np.abs(fallback.frames.astype(int) - by_decord.frames.astype(int)).mean() < 2.0


def test_a_file_decord_refuses_is_decoded_by_pyav(tmp_path):
    # decord 0.6.0 cannot measure an animated GIF ("broken metadata") and exits with an error.
    path = tmp_path / "animation.gif"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("gif", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "rgb8"
        for i in range(20):
            frame = av.VideoFrame.from_ndarray(scene(i, 96, 64), format="rgb24").reformat(format="rgb8")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    video = sample_frames(path, num_frames=4, limits=DECORD)
    assert video.meta.decoder == "pyav"
    assert video.indices == [2, 7, 12, 17]
    assert all(red_corner(f) == "top-left" for f in video.frames)


def test_a_file_that_decodes_wrongly_after_a_seek_is_decoded_front_to_back():
    # imageio's cockatoo.mp4 (real footage, an old x264's High 4:4:4): decoded from a keyframe reached by a
    # seek, its pictures come back mostly green and flagged corrupt; front to back they are clean.
    from training.imagery import list_videos

    path = next(v for v in list_videos("imageio") if v.endswith("cockatoo.mp4"))
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        container.seek(int(7.5 / stream.time_base), stream=stream, backward=True)
        assert next(container.decode(stream)).is_corrupt  # the file still shows what the fallback is for
    sampled = sample_frames(path, num_frames=16)  # two runs side by side, the second starting with a seek
    clean = sample_frames(path, num_frames=16, limits=VideoLimits(decode_threads=1, seek_gap_s=float("inf")))
    assert sampled.indices == clean.indices and sampled.timestamps == clean.timestamps
    assert np.abs(sampled.frames.astype(int) - clean.frames.astype(int)).mean(axis=(1, 2, 3)).max() < 1.0
    green = (sampled.frames[..., 1] > 200) & (sampled.frames[..., 0] < 80) & (sampled.frames[..., 2] < 80)
    assert green.mean(axis=(1, 2)).max() < 0.05


@pytest.mark.parametrize("name, fmt, codec", [("mpeg1.mpg", "mpeg1video", "mpeg1video"),
                                               ("bare.h264", "h264", "libx264")])
@pytest.mark.parametrize("limits", [DECORD, PYAV], ids=["decord", "pyav"])
def test_a_bare_elementary_stream_is_sampled_over_its_whole_length(tmp_path, name, fmt, codec, limits):
    # Video with no container around it: FFmpeg estimates its length from the header's bit rate, an MPEG-1
    # stand-in among them (Gem's alea.mpg, 6.5 s, read as 18 ms: one frame sampled), and a bare .h264 cannot
    # seek. Its pictures are counted, and a stream that refuses a seek is decoded front to back.
    path = encode_clip(tmp_path / name, frames=250, fps=25, codec=codec, fmt=fmt)  # 10 s
    assert check_video_file(path).duration_s == pytest.approx(10.0, abs=0.1)
    video = sample_frames(path, num_frames=8, limits=limits)
    assert video.meta.frame_count == 250 and video.meta.decoder == "pyav"  # decord cannot measure it either
    assert video.indices == [15, 46, 78, 109, 140, 171, 203, 234]
    assert [read_index(f) for f in video.frames] == [i % 32 for i in video.indices]  # the painted index wraps


def test_pictures_whose_pts_come_out_in_decode_order_are_timed_by_their_dts(tmp_path):
    # Some AVIs of MPEG-4 with packed B-frames (a physics teacher's recordings) come out of the decoder with their
    # pts in decode order: 1, 3, 2, 5, 4... Made here by storing B-frames with each packet's pts set to its dts.
    path = tmp_path / "pts-in-decode-order.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10, options={"bframes": "2", "x264-params": "b-pyramid=0"})
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for i in [*range(60), None]:
            for packet in stream.encode(None if i is None else av.VideoFrame.from_ndarray(scene(i, 96, 64), "rgb24")):
                packet.pts = packet.dts
                container.mux(packet)
    with av.open(str(path)) as container:
        stamps = [frame.pts for frame in container.decode(video=0)][:6]
    assert stamps != sorted(stamps)  # the file still shows what the rule is for
    for limits in (PYAV, VideoLimits(decoder="pyav")):  # exact frames; and snapped to keyframes, in runs
        video = sample_frames(path, num_frames=16, limits=limits)
        assert len(video.indices) == len(set(video.indices)) == 16
        assert [read_index(f) for f in video.frames] == [(i + 1) % 32 - 1 for i in video.indices]


def test_asking_for_nothing_is_a_programming_error(clips):
    with pytest.raises(ValueError):
        sample_frames(clips["mp4"], num_frames=None, fps=None)
    with pytest.raises(ValueError):
        sample_frames(clips["mp4"], num_frames=0)


# ------------------------------------------------------------------------------------- bad inputs


def expect(error_class, code: str, words: str, path, limits: VideoLimits = VideoLimits()):
    """Every entry point refuses `path` with `error_class`; its message mentions `words`."""
    for call in (check_video_file, probe_video, sample_frames):
        with pytest.raises(error_class) as caught:
            call(path, limits=limits)
        err = caught.value
        assert isinstance(err, VideoError) and isinstance(err, ValueError)
        assert err.code == code
        assert words.lower() in str(err).lower(), str(err)
    return err


def test_missing_file(tmp_path):
    expect(MissingFileError, "missing_file", "no file", tmp_path / "nope.mp4")
    expect(MissingFileError, "missing_file", "folder", tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    expect(EmptyFileError, "empty_file", "empty (0 bytes)", path)


def test_random_bytes_are_not_media(tmp_path):
    path = tmp_path / "noise.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    expect(NotMediaError, "not_media", "not a video", path)


def test_text_is_not_media(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("these are my notes about the video\n" * 200)
    expect(NotMediaError, "not_media", "text file", path)


@pytest.mark.parametrize("fmt,name", [("PNG", "PNG"), ("JPEG", "JPEG"), ("BMP", "BMP")])
def test_images_renamed_to_mp4(tmp_path, fmt, name):
    path = tmp_path / "photo.mp4"
    Image.fromarray(scene(0, 96, 64)).save(path, format=fmt)
    expect(ImageNotVideoError, "image_not_video", f"{name} image, not a video", path)


@pytest.mark.parametrize("codec,suffix", [("aac", "m4a"), ("pcm_s16le", "wav"), ("mp3", "mp3")])
def test_audio_files(tmp_path, codec, suffix):
    path = encode_audio(tmp_path / f"song.{suffix}", codec=codec)
    expect(AudioOnlyError, "audio_only", "no picture", path)


def test_video_track_without_pictures(tmp_path):
    # An mkv whose video track never got a packet (a recording that stopped before the first frame).
    path = tmp_path / "blank.mkv"
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        audio = container.add_stream("aac", rate=16000)
        for k in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, k * 1024
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
    expect(NoFramesError, "no_frames", "holds no pictures", path)


def test_video_track_whose_pictures_do_not_decode(tmp_path):
    path = tmp_path / "garbage.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for i in range(10):
            packet = av.Packet(bytes(range(256)) * 2)
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, i, i, Fraction(1, 10)
            packet.is_keyframe = True
            container.mux(packet)
    expect(NoFramesError, "no_frames", "could be decoded", path)


# ------------------------------------------------------------------------------------ truncated files


def noisy_clip(path, frames: int = 40, **kwargs):
    """A clip of incompressible frames, so that a cut at a fraction of its bytes loses that fraction of them."""
    rng = np.random.default_rng(0)
    return encode_clip(path, frames=frames, painter=lambda i, w, h: rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                       **kwargs)


def cut(path, out, fraction: float) -> tuple[int, int]:
    """Write the first `fraction` of `path`'s bytes to `out`; return (bytes kept, bytes of the whole)."""
    data = path.read_bytes()
    kept = int(len(data) * fraction)
    out.write_bytes(data[:kept])
    return kept, len(data)


@pytest.mark.parametrize("fraction", [0.9, 0.5])
@pytest.mark.parametrize("limits", [DECORD, PYAV], ids=["decord", "pyav"])
def test_a_faststart_mp4_cut_short_is_refused_with_the_bytes_it_lacks(tmp_path, fraction, limits):
    # moov (the index) first: the file opens and plays up to the cut, so it was once accepted with fewer frames.
    whole = noisy_clip(tmp_path / "whole.mp4", container_options={"movflags": "faststart"})
    assert find_declared_end(whole) == (None, True, True)
    kept, total = cut(whole, tmp_path / "cut.mp4", fraction)
    err = expect(TruncatedVideoError, "truncated_video", "the file ends early", tmp_path / "cut.mp4", limits)
    assert isinstance(err, CorruptVideoError)
    assert f"({kept:,} of {total:,} bytes are there)" in err.message
    assert err.message.endswith("Upload the whole file.")


@pytest.mark.parametrize("fraction", [0.9, 0.5, 0.999])
def test_an_mp4_with_its_index_last_cut_short_is_refused_as_cut_off(tmp_path, fraction):
    # The default mp4 muxing writes moov after the pictures: a cut loses the index with the last pictures.
    whole = noisy_clip(tmp_path / "whole.mp4")
    kept, total = cut(whole, tmp_path / "cut.mp4", fraction)
    err = expect(TruncatedVideoError, "truncated_video", "it looks cut off", tmp_path / "cut.mp4")
    if kept < whole.read_bytes().rindex(b"moov") - 4:  # cut among the pictures: the index's size is unknown
        assert f"({kept:,} of at least " in err.message
    else:  # cut inside the index, the last box
        assert f"({kept:,} of {total:,} bytes are there)" in err.message
    assert "holds no pictures" not in err.message


def test_an_mp4_that_stops_right_before_its_index_is_refused_as_cut_off(tmp_path):
    whole = noisy_clip(tmp_path / "whole.mp4")
    data = whole.read_bytes()
    moov = data.rindex(b"moov") - 4
    (tmp_path / "cut.mp4").write_bytes(data[:moov])
    err = expect(TruncatedVideoError, "truncated_video", "not the index", tmp_path / "cut.mp4")
    assert f"its {moov:,} bytes hold pictures" in err.message


@pytest.mark.parametrize("kind", ["mkv", "webm", "avi"])
def test_other_containers_cut_short_are_refused(tmp_path, clips, kind):
    kept, total = cut(clips[kind], tmp_path / f"cut.{kind}", 0.9)
    err = expect(TruncatedVideoError, "truncated_video", "ends early", tmp_path / f"cut.{kind}")
    assert f"({kept:,} of {total:,} bytes are there)" in err.message


VFR_GAPS_MS = [30, 90, 45, 60, 30, 75, 90, 30, 50, 60] * 3


def vfr_clip(path, container_options: dict | None = None):
    """An mp4 whose frames come at uneven intervals (30 to 90 ms), as phones record in low light."""
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, pts in enumerate(np.cumsum([0] + VFR_GAPS_MS[:-1])):
            frame = av.VideoFrame.from_ndarray(scene(i, 96, 64), format="rgb24")
            frame.pts, frame.time_base = int(pts), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def mp4_box(kind: bytes, payload: bytes) -> bytes:
    return (8 + len(payload)).to_bytes(4, "big") + kind + payload


@pytest.mark.parametrize("trailer", ["udta box", "free box", "id3 tag", "zero padding", "vendor trailer"])
def test_complete_files_with_trailing_metadata_pass(tmp_path, clips, trailer):
    tail = {
        "udta box": mp4_box(b"udta", mp4_box(b"\xa9cmt", b"recorded on a phone")),
        "free box": mp4_box(b"free", bytes(64)),
        "id3 tag": b"TAG" + b"Song title".ljust(30) + b"Artist".ljust(30) + bytes(65),
        "zero padding": bytes(5),
        "vendor trailer": b"\x00\x00\x01\x00SEFH" + bytes(40) + b"SEFT",
    }[trailer]
    path = tmp_path / "trailing.mp4"
    path.write_bytes(clips["mp4"].read_bytes() + tail)
    assert find_declared_end(path).end is None
    assert check_video_file(path).frame_count == 30
    video = sample_frames(path, num_frames=4, limits=PYAV)
    assert [read_index(f) for f in video.frames] == video.indices


@pytest.mark.parametrize("kind", ["mp4", "mkv", "webm", "avi", "short", "long", "turn90", "turn270"])
def test_complete_files_are_not_taken_for_cut_ones(clips, kind):
    assert find_declared_end(clips[kind]) == (None, True, True)
    meta = check_video_file(clips[kind])
    assert meta == probe_video(clips[kind])
    assert len(sample_frames(clips[kind], num_frames=4).frames) == 4


@pytest.mark.parametrize("options", [{}, {"movflags": "faststart"}], ids=["index-last", "faststart"])
def test_a_variable_frame_rate_mp4_passes_and_samples_its_true_times(tmp_path, options):
    path = vfr_clip(tmp_path / "vfr.mp4", options)
    shown_at = np.cumsum([0] + VFR_GAPS_MS[:-1]) / 1000  # when each frame starts to be shown
    meta = check_video_file(path)
    assert meta.duration_s == pytest.approx(1.65, abs=0.1)
    for limits in (DECORD, PYAV):
        video = sample_frames(path, num_frames=6, limits=limits)
        assert len(video.frames) >= 5
        painted = [read_index(f) for f in video.frames]
        assert np.allclose(video.timestamps, shown_at[painted], atol=2e-3)  # each frame's true time
        assert painted == sorted(set(painted))


def test_check_video_file_is_the_probe_without_sampling(clips, tmp_path):
    meta = check_video_file(clips["turn90"])
    assert (meta.width, meta.height, meta.rotation, meta.frame_count) == (64, 96, 90, 10)
    expect(ResolutionError, "bad_resolution", "at most 64 px", clips["mp4"], VideoLimits(max_side=64))


# ------------------------------------------------------------------------------------ working size


def test_working_size_keeps_the_aspect_ratio():
    assert working_size(4000, 4000, 1024) == (1024, 1024)
    assert working_size(1280, 720, 1024) == (1024, 576)
    assert working_size(720, 1280, 1024) == (576, 1024)
    assert working_size(4096, 16, 1024) == (1024, 4)
    assert working_size(1024, 600, 1024) == (1024, 600)
    assert working_size(4000, 3000, 0) == (4000, 3000)


@pytest.mark.parametrize("limits", [DECORD, PYAV], ids=["decord", "pyav"])
def test_frames_are_scaled_to_the_working_size_as_they_are_decoded(clips, limits):
    small = replace(limits, decode_max_side=80)
    video = sample_frames(clips["mp4"], num_frames=8, limits=small)
    assert video.meta.decoder == limits.decoder
    assert video.frames.shape == (8, 53, 80, 3)
    assert (video.meta.width, video.meta.height) == (96, 64)  # the source's, as stored with the video
    assert video.indices == [1, 5, 9, 13, 16, 20, 24, 28]
    assert [read_index(f) for f in video.frames] == video.indices
    assert all(red_corner(f) == "top-left" for f in video.frames)
    unbounded = sample_frames(clips["mp4"], num_frames=8, limits=replace(limits, decode_max_side=0))
    assert unbounded.frames.shape == (8, 64, 96, 3)


@pytest.mark.parametrize("turn", [90, 180, 270])
def test_turned_frames_are_scaled_the_right_way_round(clips, turn):
    video = sample_frames(clips[f"turn{turn}"], num_frames=4, limits=replace(DECORD, decode_max_side=80))
    assert video.frames.shape == (4, 80, 53, 3)  # displayed 64x96, longest side 80
    assert (video.meta.width, video.meta.height) == (64, 96)
    assert all(red_corner(f) == "top-left" for f in video.frames)
    assert [read_index(f) for f in video.frames] == video.indices


def test_a_720p_clip_comes_back_at_1024_px_from_both_decoders_alike(tmp_path):
    path = encode_clip(tmp_path / "hd.mp4", frames=8, size=(1280, 720))
    by_decord = sample_frames(path, num_frames=4, limits=DECORD)
    by_pyav = sample_frames(path, num_frames=4, limits=PYAV)
    assert by_decord.meta.decoder == "decord" and by_pyav.meta.decoder == "pyav"
    assert by_decord.frames.shape == by_pyav.frames.shape == (4, 576, 1024, 3)
    assert (by_decord.meta.width, by_decord.meta.height) == (1280, 720)
    assert by_decord.indices == by_pyav.indices
    assert np.abs(by_decord.frames.astype(int) - by_pyav.frames.astype(int)).mean() < 2.0
    assert [read_index(f) for f in by_decord.frames] == by_decord.indices


def test_the_decord_child_clamps_indices_past_its_frame_count_but_never_doubles_a_frame(clips):
    from core.video import DecordWorker

    worker = DecordWorker()
    frames, _, indices = worker.decode(str(clips["mp4"]), [27, 40], threads=1, timeout_s=20.0)
    assert indices == [27, 29] and [read_index(f) for f in frames] == [27, 29]
    # 40 and 50 would both become frame 29: an answer the app does not take (it decodes with PyAV instead).
    assert worker.decode(str(clips["mp4"]), [27, 40, 50], threads=1, timeout_s=20.0) is None
    worker.stop()


def test_runs_are_cut_between_groups_of_pictures_into_equal_work():
    keys = [0, 60, 120, 180, 240, 300]
    assert split_runs([60, 120, 180, 240], keys, parts=2) == [0, 2, 4]  # keyframes: one decode each
    assert split_runs([1, 5, 9, 13], [0], parts=2) == [0, 4]  # one group of pictures is one run
    # 10..50 costs 51 decodes from keyframe 0, 70 and 130 cost 11 each: the cut falls after the first group.
    assert split_runs([10, 30, 50, 70, 130], keys, parts=2) == [0, 3, 5]
    assert split_runs([60], keys, parts=2) == [0, 1]
    assert split_runs([60, 120, 180], keys, parts=1) == [0, 3]
    # A second reader costs about two keyframe decodes: four keyframes are not worth two runs of eight.
    assert split_runs([60, 120, 180, 240], keys, parts=2, min_run=8) == [0, 4]
    assert split_runs([10, 30, 50, 70, 130], keys, parts=2, min_run=8) == [0, 3, 5]


def test_the_decord_child_decodes_runs_side_by_side_in_order(clips):
    from core.video import DecordWorker

    worker = DecordWorker()
    wanted = [30, 90, 150, 210, 270, 330, 345]
    assert len(split_runs(wanted, sorted(keyframe_indices(clips["long"], 30.0)), 2, MIN_RUN_DECODES)) == 3
    frames, timestamps, indices = worker.decode(str(clips["long"]), wanted, threads=2, timeout_s=20.0, size=(80, 53))
    worker.stop()
    assert indices == wanted and frames.shape == (7, 53, 80, 3)
    assert [read_index(f) % 32 for f in frames] == [i % 32 for i in wanted]
    assert np.allclose(timestamps, [i / 30 for i in wanted], atol=1e-3)


def test_too_large_is_refused_before_decoding(tmp_path, clips):
    expect(FileTooLargeError, "file_too_large", "the limit is", clips["mp4"], VideoLimits(max_bytes=1024))
    # Not even a video: the size check comes first, without opening the file.
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 4096)
    expect(FileTooLargeError, "file_too_large", "4.0 KB", junk, VideoLimits(max_bytes=1024))


def test_too_long(clips):
    expect(VideoTooLongError, "video_too_long", "3 s long", clips["mp4"], VideoLimits(max_duration_s=2.0))


def test_too_small_and_too_wide(tmp_path):
    expect(ResolutionError, "bad_resolution", "8×8", encode_clip(tmp_path / "tiny.mp4", frames=3, size=(8, 8)))
    wide = encode_clip(tmp_path / "wide.mp4", frames=3, size=(4112, 32))
    expect(ResolutionError, "bad_resolution", "at most 4096", wide)


def keyframe_indices(path, fps: float) -> set[int]:
    """Frame indices of the keyframes, from the packets (independent of core.video)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return {int(round(float(p.pts * stream.time_base) * fps)) for p in container.demux(stream)
                if p.is_keyframe and p.pts is not None}


@pytest.mark.parametrize("limits", [DECORD, PYAV], ids=["decord", "pyav"])
def test_planned_times_near_a_keyframe_take_the_keyframe(clips, limits):
    keys = keyframe_indices(clips["gop2s"], 30.0)
    assert keys == {0, 60, 120, 180, 240, 300}
    exact = sample_frames(clips["gop2s"], num_frames=4, limits=replace(limits, keyframe_snap_s=0.0))
    snapped = sample_frames(clips["gop2s"], num_frames=4, limits=replace(limits, keyframe_snap_s=1.0))
    # Centres 1.5, 4.5, 7.5, 10.5 s: frames 45, 135, 225, 315 exactly; each has a keyframe 0.5 s away.
    assert exact.indices == [45, 135, 225, 315]
    assert snapped.indices == [60, 120, 240, 300]  # 4.5 s lies midway: the earlier keyframe
    assert [read_index(f) % 32 for f in snapped.frames] == [i % 32 for i in snapped.indices]
    assert np.allclose(snapped.timestamps, [i / 30.0 for i in snapped.indices], atol=1e-3)
    # Out of reach (0.3 s) they stay where they were planned.
    near = sample_frames(clips["gop2s"], num_frames=4, limits=replace(limits, keyframe_snap_s=0.3))
    assert near.indices == exact.indices


def test_snapping_keeps_samples_distinct_and_in_order():
    keys = [0.0, 2.0, 4.0]
    # 0.45 x the 1 s gap caps the reach: 1.0 and 2.0 cannot both become the keyframe at 2.0.
    assert snap_to_keyframes([1.0, 2.0, 3.0], keys, tolerance_s=5.0) == [1.0, 2.0, 3.0]
    assert snap_to_keyframes([0.3, 1.7, 3.1], keys, tolerance_s=5.0) == [0.0, 2.0, 3.1]
    assert snap_to_keyframes([0.3, 1.7], [], tolerance_s=1.0) == [0.3, 1.7]
    assert snap_to_keyframes([5.0], keys, tolerance_s=1.0) == [4.0]


def test_a_decord_child_that_died_is_replaced_on_the_next_video(clips):
    from core.video import DecordWorker

    worker = DecordWorker()
    first = worker.decode(str(clips["mp4"]), [1, 5], threads=1, timeout_s=20.0)
    assert first is not None and first[2] == [1, 5]
    worker._process.kill()  # as a crash inside decord's C code would end it
    worker._process.wait()
    again = worker.decode(str(clips["mp4"]), [9], threads=1, timeout_s=20.0)
    assert again is not None and [read_index(f) for f in again[0]] == [9]
    # A file decord cannot read is an answer, not the end of the child.
    assert worker.decode(str(clips["mp4"]) + ".missing", [0], threads=1, timeout_s=20.0) is None
    assert worker.decode(str(clips["mp4"]), [13], threads=1, timeout_s=20.0)[2] == [13]
    worker.stop()


def test_pyav_is_the_default_decoder_and_the_setting_picks_decord_or_refuses_a_typo(clips):
    assert sample_frames(clips["mp4"], num_frames=4).meta.decoder == "pyav"
    assert load_settings({"SLUDGELENS_DECODER": "decord"}).video.decoder == "decord"
    with pytest.raises(ValueError, match="SLUDGELENS_DECODER must be pyav or decord"):
        load_settings({"SLUDGELENS_DECODER": "ffmpeg"})
