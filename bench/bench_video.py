"""Sampling 16 frames from a 60 s 720p clip: core.video against decoding every frame with PyAV.

    python -m bench.bench_video [--rounds 3] [--frames 16] [--clip PATH]

Side by side in each round, on the same file (data/bench/clip_60s_1280x720_30fps.mp4, made once by
bench.clips.ensure_clip: h264, 30 fps, a keyframe every 2 s):

* sample_frames, pyav, snap      what the app does: planned times within reach of a keyframe take it
                                 (``VideoLimits.keyframe_snap_s``), PyAV in the app's process, runs
                                 between groups of pictures side by side, each frame scaled to the working
                                 size (``VideoLimits.decode_max_side``, 1024 px) as it is decoded
* ..., source size               the same at the source's 1280x720 (``decode_max_side=0``)
* sample_frames, decord, snap    the other decoder (``decoder="decord"``) on the same frames, in its
                                 killable child process, two single-threaded readers side by side
* sample_frames, ..., exact      the exact planned frames: each costs the keyframe before it and every
                                 frame up to it
* decord in process, exact       decord alone, to show what the child process costs
* PyAV, every frame to RGB       the read-everything loader (decode and convert all, keep 16)
* PyAV, every frame decoded      the same without converting the frames it throws away

Every case's frames are checked against a reference at its own size. Medians over the rounds, of wall
time and of CPU time (this process and the decord child: the machine is shared, and CPU time shows the
work whatever else runs); the last line is the headline: every-frame-to-RGB wall time / the app's.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import psutil

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


def cpu_seconds() -> float:
    """CPU time of this process and its live children (the decord child) so far."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def time_call(fn):
    """(wall seconds, CPU seconds, result) of one call."""
    start, cpu = time.perf_counter(), cpu_seconds()
    out = fn()
    return time.perf_counter() - start, cpu_seconds() - cpu, out


def run(clip: Path, rounds: int, frames: int) -> float:
    limits = VideoLimits()  # the app's: PyAV, planned times snapped to keyframes within reach
    exact = replace(limits, keyframe_snap_s=0.0)
    decord = replace(limits, decoder="decord")
    source = replace(limits, decode_max_side=0)
    references = {"snap": sample_frames(clip, num_frames=frames, limits=limits),
                  "exact": sample_frames(clip, num_frames=frames, limits=exact),
                  "snap, source size": sample_frames(clip, num_frames=frames, limits=source),
                  "exact, source size": sample_frames(clip, num_frames=frames, limits=replace(exact, decode_max_side=0))}
    meta, indices = references["exact"].meta, references["exact"].indices
    working = references["snap"].frames.shape
    print(f"clip: {clip} ({meta.width}x{meta.height}, {meta.duration_s:.0f} s, {meta.fps:g} fps, {meta.codec}, "
          f"{meta.size_bytes / 1e6:.1f} MB); sampling {len(indices)} frames at {working[2]}x{working[1]}; "
          f"{limits.decode_threads} decode threads")
    print(f"exact frames  {indices}\nkeyframe snap {references['snap'].indices}")
    cases = {  # name -> (call, the reference its frames must match)
        "sample_frames pyav, snap (the app)": (lambda: sample_frames(clip, frames, limits=limits), "snap"),
        "sample_frames pyav, snap, source size": (lambda: sample_frames(clip, frames, limits=source),
                                                  "snap, source size"),
        "sample_frames decord, snap": (lambda: sample_frames(clip, frames, limits=decord), "snap"),
        "sample_frames pyav, exact": (lambda: sample_frames(clip, frames, limits=exact), "exact"),
        "sample_frames decord, exact": (lambda: sample_frames(clip, frames, limits=replace(exact, decoder="decord")),
                                        "exact"),
        "decord in process, exact": (lambda: decord_in_process(clip, indices, limits.decode_threads),
                                     "exact, source size"),
        "pyav every frame to RGB": (lambda: decode_every_frame(clip, indices, True, limits.decode_threads),
                                    "exact, source size"),
        "pyav every frame decoded": (lambda: decode_every_frame(clip, indices, False, limits.decode_threads),
                                     "exact, source size"),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    for r in range(rounds):
        for name, (fn, ref) in cases.items():
            seconds, cpu_s, out = time_call(fn)
            times[name].append(seconds)
            cpu[name].append(cpu_s)
            got = out.frames if hasattr(out, "frames") else out
            if hasattr(out, "meta"):
                expected = "pyav" if "pyav" in name else "decord"
                assert out.meta.decoder == expected, f"{name} decoded with {out.meta.decoder}"
            diff = float(np.abs(got.astype(np.int16) - references[ref].frames.astype(np.int16)).mean())
            assert diff < 2.0, f"{name} returned different frames (mean abs diff {diff:.2f})"
        print(f"round {r + 1}: " + ", ".join(f"{name} {times[name][-1]:.3f}s" for name in cases))
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    cpu_medians = {name: statistics.median(ts) for name, ts in cpu.items()}
    base, cpu_base = medians["pyav every frame to RGB"], cpu_medians["pyav every frame to RGB"]
    # CPU seconds (this process and the decord child) hardly depend on what else the machine runs; wall
    # seconds do, and the headline is wall time, what a person waits for.
    print(f"\n{'median over ' + str(rounds) + ' rounds':<42}{'seconds':>9}{'vs every frame to RGB':>24}"
          f"{'CPU s':>9}{'CPU ratio':>11}")
    for name, seconds in medians.items():
        print(f"{name:<42}{seconds:>9.3f}{base / seconds:>23.1f}x{cpu_medians[name]:>9.3f}"
              f"{cpu_base / cpu_medians[name]:>10.1f}x")
    print(f"exact frames (pyav): {base / medians['sample_frames pyav, exact']:.1f}x")
    app = "sample_frames pyav, snap (the app)"
    print(f"the app, best round against best round: {min(times['pyav every frame to RGB']) / min(times[app]):.1f}x; "
          f"by CPU time: {cpu_base / cpu_medians[app]:.1f}x")
    return base / medians[app]


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
