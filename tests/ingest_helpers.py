"""Clips, bad files and a crashing decode step shared by the ingest tests (real files, real processes).

The decode step lives here, not in a test module, so the ingest's worker processes import only this.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from annotations.ingest import VideoOutcome, decode_video
from training.synthetic import make_clip, write_clip

LAYOUTS = (("vertical",), ("horizontal",), ("pip",), ("single",), ("other",), ("single", "vertical"))
# The error code each bad file of write_bad_files must be reported with.
BAD_FILES = {"notes.mp4": "not_media", "empty.mov": "empty_file", "still.mp4": "image_not_video"}


def write_clips(folder: Path, count: int, seed: int = 0, size: tuple[int, int] = (96, 64), num_frames: int = 12,
                prefix: str = "clip") -> list[Path]:
    """``count`` distinct short clips (12 fps) encoded with PyAV, layouts cycling through LAYOUTS."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        frames, _ = make_clip(seed + i, num_frames=num_frames, size=size, layouts=LAYOUTS[i % len(LAYOUTS)])
        paths.append(write_clip(folder / f"{prefix}_{i:02d}.mp4", frames))
    return paths


def write_clip_as(path: Path, codec: str, seed: int = 0, size: tuple[int, int] = (96, 64), seconds: float = 2.0
                  ) -> Path:
    """A clip in an older container than write_clip's MP4: ``codec`` is a PyAV encoder ("libvpx" for .ogv:
    FFmpeg's Ogg muxer takes VP8, and Theora is only a decoder in PyAV's wheels; "mpeg1video" for .mpg,
    "wmv2" for .wmv, "mpeg2video" for a camcorder's .mts). 24 fps, the lowest rate MPEG-1 allows. A second
    or two long: FFmpeg estimates an MPEG program stream's duration from its last timestamps, and a file of
    a few KB reads as one frame long."""
    import av

    fps = 24
    frames, _ = make_clip(seed, num_frames=int(seconds * fps), size=size)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[1], size[0], "yuv420p"
        stream.time_base = Fraction(1, fps)
        for i, frame in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts = i
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_bad_files(folder: Path) -> dict[str, str]:
    """Files an upload is refused for, by name -> the error code they must be reported with."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.mp4").write_text("these are my notes, not a video\n")
    (folder / "empty.mov").write_bytes(b"")
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(folder / "still.mp4", format="PNG")
    return dict(BAD_FILES)


def decode_or_crash(key: str, path: str, num_frames: int, limits, done=frozenset()):
    """The ingest's decode step, except that a file named crash*.mp4 kills the worker process outright
    (as a segfault in a decoder would). It also checks that the worker never imported torch."""
    import sys

    if "torch" in sys.modules:
        raise RuntimeError("a decode worker imported torch")
    if Path(path).name.startswith("crash"):
        os._exit(1)
    return decode_video(key, path, num_frames, limits, done)


def decode_with_unreadable_frames(key: str, path: str, num_frames: int, limits, done=frozenset()):
    """The ingest's decode step, except that a file named broken*.mp4 comes back with frames of two
    channels (grey and alpha): they encode as images, but the model cannot read them."""
    outcome = decode_video(key, path, num_frames, limits, done)
    if Path(path).name.startswith("broken") and outcome.frames is not None:
        outcome.frames = np.zeros((len(outcome.frames), 8, 8, 2), np.uint8)
    return outcome


def decode_and_tell_niceness(key: str, path: str, num_frames: int, limits, done=frozenset()):
    """The ingest's decode step, except that every file comes back failed with the worker process's niceness
    as its message: what the test of the workers' priority reads from the report."""
    return VideoOutcome(key=key, status="failed", code="niceness", message=str(os.nice(0)))


def store_contents(db) -> tuple[dict, dict, dict]:
    """What an ingest leaves in a store, keyed so two stores compare: videos by id, frames by (video id, frame
    index), predictions by (video id, frame index, model version); times and row ids left out."""
    import json

    videos = {r["id"]: {k: r[k] for k in ("name", "collection", "source_path", "size_bytes", "duration_s", "fps",
                                           "width", "height", "meta")} for r in db["videos"].rows}
    frames, where = {}, {}
    for r in db["frames"].rows:
        where[r["id"]] = (r["video_id"], r["frame_index"])
        frames[where[r["id"]]] = (r["time_s"], r["image_sha256"], r["width"], r["height"])
    predictions = {(*where[r["frame_id"]], r["model_id"]): (r["p_sludge"], json.loads(r["layout_scores"]))
                   for r in db["predictions"].rows}
    return videos, frames, predictions


def compare_stores(got: tuple, want: tuple, subset: bool = False, tolerance: float = 1e-5) -> None:
    """Assert two stores' contents (store_contents) are the same, predictions within ``tolerance``;
    with ``subset``, only what ``want`` holds must be in ``got``."""
    for part, (mine, theirs) in zip(("videos", "frames"), zip(got[:2], want[:2])):
        if subset:
            mine = {k: v for k, v in mine.items() if k in theirs}
        assert mine == theirs, f"{part} differ"
    mine, theirs = got[2], want[2]
    if subset:
        mine = {k: v for k, v in mine.items() if k in theirs}
    assert mine.keys() == theirs.keys(), "predictions of other frames or model versions"
    for key, (p, layouts) in theirs.items():
        assert abs(mine[key][0] - p) <= tolerance, f"P(sludge) of {key}: {mine[key][0]} vs {p}"
        assert mine[key][1].keys() == layouts.keys()
        assert all(abs(mine[key][1][k] - v) <= tolerance for k, v in layouts.items()), key
