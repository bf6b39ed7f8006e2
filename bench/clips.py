"""Benchmark clips made with PyAV and cached under data/bench/, so every benchmark times the same file.

    from bench.clips import ensure_clip
    path = ensure_clip()                                   # data/bench/clip_60s_1280x720_30fps.mp4
    path = ensure_clip(size=(720, 1280), seconds=10)       # a portrait variant, cached alongside
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np

from core.config import REPO_ROOT

BENCH_DIR = REPO_ROOT / "data" / "bench"


def default_clip_path(seconds: int = 60, size: tuple[int, int] = (1280, 720), fps: int = 30) -> Path:
    """Where the cached clip with these parameters lives.

    >>> default_clip_path().name
    'clip_60s_1280x720_30fps.mp4'
    """
    return BENCH_DIR / f"clip_{seconds}s_{size[0]}x{size[1]}_{fps}fps.mp4"


def render_frame(i: int, size: tuple[int, int], texture: np.ndarray) -> np.ndarray:
    """Frame `i` of a two-stream "sludge" scene: a scrolling texture on top, moving blocks below.

    The texture keeps the bitrate of a real clip (flat colour would compress to nothing and decode
    unrealistically fast); the blocks make every frame different.

    >>> render_frame(0, (64, 48), np.zeros((48, 256, 3), np.uint8)).shape
    (48, 64, 3)
    """
    w, h = size
    frame = np.empty((h, w, 3), np.uint8)
    half = h // 2
    offset = (i * 7) % (texture.shape[1] - w)
    frame[:half] = texture[:half, offset:offset + w]
    frame[half:] = (30 + i % 60, 60, 90)
    for k, colour in enumerate(((230, 40, 40), (40, 230, 40), (40, 40, 230))):
        bw, bh = max(w // 8, 2), max(h // 8, 2)
        x = int((w - bw) * (0.5 + 0.5 * np.sin(i / (20 + 7 * k))))
        y = half + int((h - half - bh) * (0.5 + 0.5 * np.cos(i / (15 + 5 * k))))
        frame[y:y + bh, x:x + bw] = colour
    return frame


def write_clip(path: Path, seconds: int, size: tuple[int, int], fps: int, gop_s: float = 2.0) -> Path:
    """Encode a clip with libx264 (yuv420p, faststart off, a keyframe every `gop_s` seconds).

    Platform encodes of short-form video put a keyframe every ~2 s (streaming segments start on one),
    and the keyframe spacing is what decides how much a seeking decoder saves.

    >>> write_clip(Path("/tmp/c.mp4"), seconds=1, size=(64, 48), fps=10)  # doctest: +SKIP
    """
    w, h = size
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, size=(h, w + 512, 3), dtype=np.uint8)
    # Smooth the noise a little so it looks like footage (pure noise is an x264 worst case).
    smooth = (texture.astype(np.uint16) + np.roll(texture, 1, axis=1) + np.roll(texture, 1, axis=0)) // 3
    texture = smooth.astype(np.uint8)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.gop_size = max(int(round(gop_s * fps)), 1)
        for i in range(seconds * fps):
            frame = av.VideoFrame.from_ndarray(render_frame(i, size, texture), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def ensure_clip(
    path: str | Path | None = None, seconds: int = 60, size: tuple[int, int] = (1280, 720), fps: int = 30
) -> Path:
    """Return a cached clip with moving content, encoding it first if it is not there yet.

    `size` is (width, height). The file is written under a temporary name and renamed, so benchmarks
    started side by side never read a half-written clip.

    >>> ensure_clip()  # doctest: +SKIP
    PosixPath('.../data/bench/clip_60s_1280x720_30fps.mp4')
    """
    path = Path(path) if path is not None else default_clip_path(seconds, size, fps)
    if path.is_file() and path.stat().st_size > 0:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    write_clip(tmp, seconds, size, fps)
    os.replace(tmp, path)
    return path
