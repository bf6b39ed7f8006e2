"""Peak memory of `python -m core analyze` on a 4000x4000 clip, decoder child included.

    python -m bench.bench_memory [--frames 64] [--clip PATH] [--interval-ms 20] [--no-unbounded]

The clip (data/bench/clip_4000x4000_3s_24fps.mp4, made once with PyAV: libx264 ultrafast, a flat
gradient with moving blocks, so it is small and quick to encode) is analyzed by the command line in a
subprocess while this process samples the resident memory (RSS) of that process and of all its
children (a decord child among them, when decord is the decoder) every `--interval-ms` with psutil.
Side by side in one run:

* bounded     the app's settings: every frame is scaled right after decoding so its longest side is at
              most ``VideoLimits.decode_max_side`` (1024 px)
* unbounded   the same command with the bound lifted (``SLUDGELENS_DECODE_MAX_SIDE=0``): frames kept at
              the source's 4000x4000

For each it prints the peak RSS of every process and the peak of the whole tree (the sum over its
processes at one sample). The last line is the bounded tree's peak in MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import psutil

from core.config import REPO_ROOT

BENCH_DIR = REPO_ROOT / "data" / "bench"


def paint(i: int, size: int, base: np.ndarray) -> np.ndarray:
    """Frame `i`: a fixed gradient with two blocks that move, so frames differ and compress well.

    >>> paint(0, 64, np.zeros((64, 64, 3), np.uint8)).shape
    (64, 64, 3)
    """
    frame = base.copy()
    block = size // 8
    for k, colour in enumerate(((230, 40, 40), (40, 40, 230))):
        x = (i * 37 * (k + 1)) % (size - block)
        y = size // 4 + k * size // 2
        frame[y:y + block, x:x + block] = colour
    return frame


def ensure_large_clip(path: Path | None = None, size: int = 4000, seconds: int = 3, fps: int = 24) -> Path:
    """A cached `size` x `size` h264 clip, encoded once with cheap settings (written aside, then renamed).

    >>> ensure_large_clip()  # doctest: +SKIP
    PosixPath('.../data/bench/clip_4000x4000_3s_24fps.mp4')
    """
    path = path or BENCH_DIR / f"clip_{size}x{size}_{seconds}s_{fps}fps.mp4"
    if path.is_file() and path.stat().st_size > 0:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    base = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size))],
                    axis=-1).astype(np.uint8)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "30"})
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        for i in range(seconds * fps):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(paint(i, size, base), format="rgb24")))
        container.mux(stream.encode(None))
    os.replace(tmp, path)
    return path


def describe(process: psutil.Process) -> str:
    """A short name for a process of the tree: its command line after the interpreter."""
    try:
        cmd = process.cmdline()
    except psutil.Error:
        return f"pid {process.pid}"
    return " ".join(cmd[1:4]) if len(cmd) > 1 else " ".join(cmd)


def measure(clip: Path, frames: int, interval_s: float, env_extra: dict[str, str]) -> dict:
    """Run the analysis in a subprocess; sample the RSS of its process tree until it ends."""
    env = {**os.environ, **env_extra}
    cmd = [sys.executable, "-m", "core", "analyze", str(clip), "--frames", str(frames), "--json"]
    started = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(child.pid)
    peaks: dict[int, tuple[str, int]] = {}
    tree_peak = 0
    while child.poll() is None:
        total = 0
        try:
            members = [root, *root.children(recursive=True)]
        except psutil.Error:
            members = []
        for proc in members:
            try:
                rss = proc.memory_info().rss
            except psutil.Error:
                continue
            total += rss
            name, best = peaks.get(proc.pid, (None, 0))
            peaks[proc.pid] = (name or describe(proc), max(best, rss))
        tree_peak = max(tree_peak, total)
        time.sleep(interval_s)
    out, err = child.communicate()
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({child.returncode}): {err.strip()[-2000:]}")
    result = json.loads(out)
    return {"tree_peak": tree_peak, "peaks": peaks, "seconds": time.perf_counter() - started,
            "frames": len(result["frames"]), "video": result["video"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--clip", type=Path, default=None, help="a video to use instead of the cached 4000x4000 clip")
    parser.add_argument("--interval-ms", type=float, default=20.0)
    parser.add_argument("--no-unbounded", action="store_true", help="skip the run with the bound lifted")
    args = parser.parse_args(argv)
    clip = args.clip or ensure_large_clip()
    print(f"clip: {clip} ({clip.stat().st_size / 1e6:.2f} MB); python -m core analyze --frames {args.frames}")
    cases = {"bounded": {}}
    if not args.no_unbounded:
        cases["unbounded"] = {"SLUDGELENS_DECODE_MAX_SIDE": "0"}
    results = {}
    for name, env in cases.items():
        r = results[name] = measure(clip, args.frames, args.interval_ms / 1000, env)
        v = r["video"]
        print(f"\n{name}: {r['frames']} frames of a {v['width']}x{v['height']} video, decoded by {v['decoder']}, "
              f"{r['seconds']:.1f} s")
        for pid, (proc, peak) in sorted(r["peaks"].items()):
            print(f"  peak {peak / 2**20:8.0f} MB  pid {pid}  {proc}")
        print(f"  peak {r['tree_peak'] / 2**20:8.0f} MB  process tree")
    bounded = results["bounded"]["tree_peak"] / 2**20
    if "unbounded" in results:
        unbounded = results["unbounded"]["tree_peak"] / 2**20
        print(f"\nunbounded / bounded peak: {unbounded / bounded:.2f}x ({unbounded:.0f} MB vs {bounded:.0f} MB)")
    print(f"peak_rss_mb: {bounded:.0f}")


if __name__ == "__main__":
    main()
