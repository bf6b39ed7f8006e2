"""Sampling 16 frames from a 60 s 720p clip: core.video against decoding every frame with PyAV.

    python -m bench.bench_video [--rounds 3] [--frames 16] [--clip PATH]

Side by side in each round, on the same file (data/bench/clip_60s_1280x720_30fps.mp4, made once by
bench.clips.ensure_clip: h264, 30 fps, a keyframe every 2 s):

* sample_frames, decoder "decord"  what the app does: decord in a killable child process
* sample_frames, decoder "pyav"    the fallback: seek to the keyframe before each target, decode forward
* decord in process                 decord alone, to show what the child process costs
* PyAV, every frame to RGB          the read-everything loader (decode and convert all, keep 16)
* PyAV, every frame decoded         the same without converting the frames it throws away

Medians over the rounds; the last line is the headline: every-frame-to-RGB time / sample_frames time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import av
import numpy as np

from bench.clips import ensure_clip
from core.config import VideoLimits
from core.video import sample_frames


def decode_every_frame(path: Path, indices: list[int], convert_all: bool, threads: int) -> np.ndarray:
    """Decode the whole stream; keep `indices` as RGB (converting every frame when `convert_all`)."""
    wanted, kept = set(indices), []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        for i, frame in enumerate(container.decode(stream)):
            if convert_all:
                rgb = frame.to_ndarray(format="rgb24")
                if i in wanted:
                    kept.append(rgb)
            elif i in wanted:
                kept.append(frame.to_ndarray(format="rgb24"))
    return np.stack(kept)


def decord_in_process(path: Path, indices: list[int], threads: int) -> np.ndarray:
    """decord without the child process around it."""
    import decord

    return decord.VideoReader(str(path), num_threads=threads).get_batch(indices).asnumpy()


def time_call(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def run(clip: Path, rounds: int, frames: int) -> float:
    limits = VideoLimits()
    reference = sample_frames(clip, num_frames=frames, limits=limits)
    meta, indices = reference.meta, reference.indices
    print(f"clip: {clip} ({meta.width}x{meta.height}, {meta.duration_s:.0f} s, {meta.fps:g} fps, {meta.codec}, "
          f"{meta.size_bytes / 1e6:.1f} MB); sampling {len(indices)} frames; {limits.decode_threads} decode threads")
    cases = {
        "sample_frames decord (child process)": lambda: sample_frames(clip, frames, limits=limits),
        "sample_frames pyav (seek)": lambda: sample_frames(clip, frames, limits=replace(limits, decoder="pyav")),
        "decord in process": lambda: decord_in_process(clip, indices, limits.decode_threads),
        "pyav every frame to RGB": lambda: decode_every_frame(clip, indices, True, limits.decode_threads),
        "pyav every frame decoded": lambda: decode_every_frame(clip, indices, False, limits.decode_threads),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for r in range(rounds):
        for name, fn in cases.items():
            seconds, out = time_call(fn)
            times[name].append(seconds)
            got = out.frames if hasattr(out, "frames") else out
            if hasattr(out, "meta"):
                expected = "pyav" if "pyav" in name else "decord"
                assert out.meta.decoder == expected, f"{name} decoded with {out.meta.decoder}"
            diff = float(np.abs(got.astype(np.int16) - reference.frames.astype(np.int16)).mean())
            assert diff < 2.0, f"{name} returned different frames (mean abs diff {diff:.2f})"
        print(f"round {r + 1}: " + ", ".join(f"{name} {times[name][-1]:.3f}s" for name in cases))
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    base = medians["pyav every frame to RGB"]
    print(f"\n{'median over ' + str(rounds) + ' rounds':<40}{'seconds':>9}{'vs every frame to RGB':>24}")
    for name, seconds in medians.items():
        print(f"{name:<40}{seconds:>9.3f}{base / seconds:>23.1f}x")
    return base / medians["sample_frames decord (child process)"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--clip", type=Path, default=None, help="a video to use instead of the cached 60 s 720p clip")
    args = parser.parse_args(argv)
    clip = args.clip or ensure_clip()
    speedup = run(clip, args.rounds, args.frames)
    print(f"video_speedup: {speedup:.1f}x")


if __name__ == "__main__":
    main()
