"""Many clients at once: latency of /analyze and the app's memory over rounds of load, in one app process.

    python -m bench.bench_load [--clients 8] [--per-client 5] [--rounds 3] [--frames 8]

One `python app.py` runs on a throwaway store (tests/app_process.py). Each round, every client (its own
gradio_client.Client, in its own thread) sends `--per-client` analyses of clips no one sent before
(training.synthetic, encoded with PyAV), one after another, plus one refused upload from the bad-input
corpus (tests/bad_inputs.py), so refusals are under load too. The model runs one call at a time (the app's
model queue), so a request's latency is its wait in the queue plus its own analysis.

Printed per round: p50 / p95 / max latency of the analyses, the app's resident memory (psutil: the app and
its children, a decord child among them when decord is the decoder) after the round, and ratios against
round 1, side by side. The app's memory after round 1 holds the model and the first allocations; what it
gains after that is growth that more load would keep adding, so it must stay under 10 %. The last line is
the p95 latency over every analysis of the run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from core.config import REPO_ROOT
from training.synthetic import make_clip, write_clip

sys.path.insert(0, str(REPO_ROOT / "tests"))
from app_process import running_app  # noqa: E402  (tests/app_process.py: start the app, capture its log)
from bad_inputs import write_corpus  # noqa: E402

# What the memory of the app may gain after its first round, as a share of it.
MAX_GROWTH = 0.10
# Analyses one client sends alone before the load (the first one also warms the app up).
SOLO = 4
# The parts of an analysis the app times (the result's "timings_s").
PHASES = ("decode", "score", "store", "total")


def make_clips(folder: Path, count: int, frames: int) -> list[Path]:
    """`count` distinct synthetic clips (different layouts, photos and motion), 224x126 px."""
    return [write_clip(folder / f"clip-{i:03d}.mp4", make_clip(1000 + i, num_frames=frames, size=(224, 126))[0])
            for i in range(count)]


def app_memory(pid: int) -> int:
    """Resident bytes of the app and all its children."""
    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_client(url: str, clips: list[Path], bad: Path, frames: int, latencies: list[float], errors: list[str],
               phases: list[dict] | None = None):
    client = Client(url, verbose=False)
    for clip in clips:
        started = time.perf_counter()
        try:
            result = client.predict(handle_file(str(clip)), frames, "", api_name="/analyze")
        except Exception as err:  # counted and shown: a bench must not hide a failure
            errors.append(f"{clip.name}: {type(err).__name__}: {err}")
            continue
        latencies.append(time.perf_counter() - started)
        if phases is not None:
            phases.append(result.get("timings_s", {}))
        if result["verdict"]["frames"] != len(result["frames"]):
            errors.append(f"{clip.name}: incomplete verdict {result['verdict']}")
    try:
        client.predict(handle_file(str(bad)), frames, "", api_name="/analyze")
        errors.append(f"{bad.name}: accepted")
    except AppError:
        pass


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-client", type=int, default=5, help="analyses per client per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=8, help="frames sampled per analysis")
    parser.add_argument("--clip-frames", type=int, default=24, help="frames in each synthetic clip (12 fps)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        per_round = args.clients * args.per_client
        print(f"rendering {per_round * args.rounds + SOLO} clips ...", flush=True)
        clips = make_clips(root / "clips", per_round * args.rounds + SOLO, args.clip_frames)
        solo_clips, clips = clips[:SOLO], clips[SOLO:]
        refusals = [c.path for c in write_corpus(root / "bad") if c.expect == "error" and c.upload
                    and "size" not in c.name]
        (root / "app").mkdir()
        with running_app(root / "app") as app:
            # One client alone first: what an analysis costs with nobody else waiting (and the warm-up).
            solo: list[float] = []
            run_client(app.url, solo_clips, refusals[0], args.frames, solo, [])
            alone = statistics.median(solo[1:])
            start_memory = app_memory(app.process.pid)
            rows, every = [], []
            for number in range(args.rounds):
                batch = clips[number * per_round:(number + 1) * per_round]
                latencies: list[float] = []
                errors: list[str] = []
                phases: list[dict] = []
                threads = [threading.Thread(target=run_client, args=(
                    app.url, batch[k * args.per_client:(k + 1) * args.per_client],
                    refusals[(number * args.clients + k) % len(refusals)], args.frames, latencies, errors, phases))
                    for k in range(args.clients)]
                started = time.perf_counter()
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                wall = time.perf_counter() - started
                memory = app_memory(app.process.pid)
                rows.append({"round": number + 1, "n": len(latencies), "p50": percentile(latencies, 50),
                             "p95": percentile(latencies, 95), "max": max(latencies, default=float("nan")),
                             "wall": wall, "rss": memory, "errors": errors,
                             "phases": {name: statistics.median(p.get(name, 0.0) for p in phases)
                                        for name in PHASES} if phases else {}})
                every += latencies
                for error in errors:
                    print(f"  round {number + 1} error: {error}")
            log = app.log_path.read_text(encoding="utf-8", errors="replace")

    first = rows[0]
    print(f"{args.clients} clients x {args.per_client} analyses x {args.rounds} rounds, {args.frames} frames each; "
          f"app memory after warm-up {start_memory / 2**20:.0f} MiB")
    print(f"{'round':>5} {'n':>4} {'p50 s':>7} {'p95 s':>7} {'max s':>7} {'wall s':>7} {'rss MiB':>8} "
          f"{'p95/r1':>7} {'rss/r1':>7} {'errors':>6}")
    for row in rows:
        print(f"{row['round']:>5} {row['n']:>4} {row['p50']:>7.2f} {row['p95']:>7.2f} {row['max']:>7.2f} "
              f"{row['wall']:>7.1f} {row['rss'] / 2**20:>8.0f} {row['p95'] / first['p95']:>7.2f} "
              f"{row['rss'] / first['rss']:>7.3f} {len(row['errors']):>6}")
    print("median seconds of each part of one analysis, inside the app (queue wait excluded):")
    print(f"{'round':>5} " + " ".join(f"{name:>8}" for name in PHASES))
    for row in rows:
        print(f"{row['round']:>5} " + " ".join(f"{row['phases'].get(name, float('nan')):>8.3f}" for name in PHASES))
    growth = rows[-1]["rss"] / first["rss"] - 1
    throughput = sum(r["n"] for r in rows) / sum(r["wall"] for r in rows)
    print(f"one client alone: {alone:.2f} s per analysis (median of {len(solo) - 1}); under load: throughput "
          f"{throughput:.2f} analyses/s, p95 {percentile(every, 95) / alone:.1f}x the lone analysis with "
          f"{args.clients} clients sharing one model queue")
    print(f"rss growth after round 1: {growth:+.1%} (limit {MAX_GROWTH:.0%}): {'ok' if growth < MAX_GROWTH else 'OVER'}")
    print(f"tracebacks in the app log: {log.count('Traceback')}; refusals logged: {log.count('refused analyze: ')}")
    failed = sum(len(r["errors"]) for r in rows)
    if failed:
        print(f"failed requests: {failed}")
    print(f"load_p95_s: {percentile(every, 95):.3f}")


if __name__ == "__main__":
    main()
