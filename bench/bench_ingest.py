"""Whole-collection ingest against a loop of single analyses, same model, same kind of store, in one run.

    python -m bench.bench_ingest [--clips 200] [--frames 16] [--batch-size 32] [--workers N] [--rounds 3]
                                 [--loop-threads N] [--model-threads N]

The clips are short synthetic short-form videos (training.synthetic, encoded with PyAV), drawn from fixed seeds
and cached under data/bench/ingest/, so every run times the same files. Each round ingests them twice into fresh
stores (SQLite files in a temporary folder, FULL sync as the app opens them): once as the app stores an upload,
``annotations.analyses.record_analysis`` per file, and once with ``annotations.ingest.ingest`` (decode worker
processes feeding one model that batches frames across videos). The order of the two alternates between rounds,
and each figure is the median over the rounds: the loop's speed alone moved by up to 16 % between single runs on
one machine. It prints videos/s for both, the packing bound (the loop's wall time over its work spread on every
core: the best any overlap of the same work can do) and, last, the ratio. The loop's work is its CPU time per video
with one torch thread, measured on the first ``--work-clips`` clips: with more threads the CPU time also counts
torch's threads spinning while they wait for each other, which is not work an overlap has to do. Beside it, the
loop's steps per video (decode, score, store) with one thread, and scoring as the loop ran: the steps an overlap
can win back are the ones the loop runs on one core.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench.clips import BENCH_DIR

CLIP_DIR = BENCH_DIR / "ingest"


def ensure_clips(count: int, num_frames: int = 36, size: tuple[int, int] = (640, 360), fps: float = 12.0,
                 folder: Path | None = None) -> Path:
    """A folder of ``count`` distinct synthetic clips (seed i for clip i), rendering only the missing ones.

    `size` is (height, width), as training.synthetic takes it. Each clip is written under a temporary name
    and renamed, so two benchmarks started side by side never read a half-written clip.

    >>> ensure_clips(2)  # doctest: +SKIP
    PosixPath('.../data/bench/ingest/640x360-36f')
    """
    from training.synthetic import make_clip, write_clip_once

    folder = folder or CLIP_DIR / f"{size[0]}x{size[1]}-{num_frames}f"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        write_clip_once(folder / f"clip_{i:04d}.mp4",
                        lambda i=i: make_clip(1000 + i, num_frames=num_frames, fps=fps, size=size)[0], fps)
    return folder


def run_loop(lm, paths: list[Path], root: Path, num_frames: int, limits,
             threads: int | None = None) -> tuple[float, float, dict[str, float]]:
    """record_analysis per file into a fresh store (with ``threads`` torch threads, if given); returns wall
    seconds, the CPU seconds of the process (every thread: decoder, model, encoder, SQLite) and the wall
    seconds of each of its steps summed over the files (``Analysis.timings``: decode, score, store)."""
    import torch

    import annotations as store
    from annotations.analyses import record_analysis

    db = store.open_store(root / "loop.db", root / "loop-media")
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    steps: dict[str, float] = {}
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        for path in paths:
            timings = record_analysis(lm, db, path, num_frames=num_frames, limits=limits,
                                      collection="bench").analysis.timings
            for step in ("decode", "score", "store"):
                steps[step] = steps.get(step, 0.0) + timings[step]
    finally:
        torch.set_num_threads(before)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    assert db["videos"].count == len(paths)
    db.close()
    return seconds, cpu_seconds, steps


def run_ingest(lm, folder: Path, count: int, root: Path, num_frames: int, batch_size: int, workers: int | None,
               limits, model_threads: int | None = None, overlap_scoring: bool | None = None) -> float:
    """annotations.ingest.ingest over the folder into a fresh store; returns its IngestSummary (seconds, and
    where the main thread waited)."""
    import annotations as store
    from annotations.ingest import IngestConfig, ingest, read_source

    root.mkdir(parents=True, exist_ok=True)
    db = store.open_store(root / "ingest.db", root / "ingest-media")
    collection = read_source(folder, "bench")
    collection.videos = collection.videos[:count]
    config = IngestConfig(num_frames=num_frames, batch_size=batch_size, workers=workers, limits=limits,
                          report_path=root / "report.jsonl", progress=False, model_threads=model_threads,
                          overlap_scoring=overlap_scoring)
    summary = ingest(collection, db, lm, config)
    assert summary.stored == count and db["videos"].count == count, summary.describe()
    db.close()
    return summary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--clip-frames", type=int, default=36, help="frames in each clip (12 fps)")
    parser.add_argument("--height", type=int, default=640)
    parser.add_argument("--width", type=int, default=360)
    parser.add_argument("--frames", type=int, default=16, help="frames sampled per video")
    parser.add_argument("--batch-size", type=int, default=32, help="ingest: frames per forward across videos")
    parser.add_argument("--workers", type=int, default=None, help="ingest: decode processes (default: one per CPU)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both runs; figures are medians")
    parser.add_argument("--loop-threads", type=int, default=None,
                        help="torch threads of the record_analysis loop (default: torch's own, as the app runs)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--work-clips", type=int, default=40,
                        help="clips the loop's work per video is measured on, with one torch thread (0: skip)")
    parser.add_argument("--model-threads", type=int, default=None,
                        help="ingest: torch threads of the model (default: the CPUs the decode workers leave)")
    args = parser.parse_args(argv)

    from core.config import ModelSpec, load_settings
    from core.engine import load_model, score_frames

    settings = load_settings()
    folder = ensure_clips(args.clips, args.clip_frames, (args.height, args.width))
    paths = sorted(folder.glob("clip_*.mp4"))[:args.clips]
    lm = load_model(ModelSpec(args.model) if args.model else settings.model, settings.engine)
    from core.video import sample_frames

    score_frames(lm, sample_frames(paths[0], num_frames=4, limits=settings.video).frames)  # warm-up
    loops, loop_cpus, loop_scores, ingests = [], [], [], []
    for round_ in range(args.rounds):
        order = ("loop", "ingest") if round_ % 2 == 0 else ("ingest", "loop")
        for kind in order:
            with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
                if kind == "loop":
                    seconds, cpu_seconds, steps = run_loop(lm, paths, Path(tmp), args.frames, settings.video,
                                                           args.loop_threads)
                    loops.append(seconds)
                    loop_cpus.append(cpu_seconds)
                    loop_scores.append(steps["score"] / len(paths))
                else:
                    ingests.append(run_ingest(lm, folder, len(paths), Path(tmp), args.frames, args.batch_size,
                                              args.workers, settings.video, args.model_threads).seconds)
            print(f"round {round_ + 1} {kind}: {len(paths) / (loops if kind == 'loop' else ingests)[-1]:.2f} videos/s",
                  flush=True)
    work_s = one_thread_steps = None
    if args.work_clips:
        with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
            some = paths[:args.work_clips]
            _, work_cpu, one_thread_steps = run_loop(lm, some, Path(tmp), args.frames, settings.video, threads=1)
            work_s = work_cpu / len(some)
            one_thread_steps = {step: seconds / len(some) for step, seconds in one_thread_steps.items()}
    loop_s, ingest_s = statistics.median(loops), statistics.median(ingests)
    print(f"clips: {len(paths)} x {args.clip_frames} frames {args.width}x{args.height}, {args.frames} sampled per "
          f"video, model {lm.version} on {lm.device.type}, {os.cpu_count()} CPUs")
    threads = f"{args.loop_threads} torch threads" if args.loop_threads else "torch's default threads"
    print(f"record_analysis loop ({threads}): {len(paths) / loop_s:.2f} videos/s ({loop_s:.1f} s)")
    print(f"ingest (batch {args.batch_size}): {len(paths) / ingest_s:.2f} videos/s ({ingest_s:.1f} s)")
    # The same work packed perfectly on every core: the most any overlap of decode, encode and model can
    # give over the loop on this machine, unless the work itself shrinks.
    from annotations.ingest import count_available_cpus

    cpus = count_available_cpus()
    loop_cpu = statistics.median(loop_cpus)
    print(f"loop CPU: {1000 * loop_cpu / len(paths):.0f} ms per video with {threads}", end="")
    if work_s is not None:
        packed = work_s * len(paths) / cpus
        print(f", {1000 * work_s:.0f} ms with one (its work); that work packed on {cpus} cores would take "
              f"{packed:.1f} s: packing bound {loop_s / packed:.2f}x")
    else:
        print()
    if one_thread_steps is not None:
        print(describe_steps(one_thread_steps, statistics.median(loop_scores), threads))
    print(f"ingest_speedup: {loop_s / ingest_s:.2f}")


def describe_steps(one_thread: dict[str, float], loop_score: float, threads: str) -> str:
    """Where a video's time goes in the loop, with one torch thread and as the loop ran: an overlap of decoding,
    scoring and storing can only win back the steps that run on one core in the loop, so the model's share of
    the work and how much faster its threads already score in the loop set how far the ingest can pull ahead.

    >>> print(describe_steps({"decode": 0.1, "score": 0.6, "store": 0.3}, 0.4, "2 torch threads"))
    loop steps per video: decode 100, score 600, store 300 ms with one torch thread (scoring 60 % of them); \
with 2 torch threads, score 400 ms (1.50x)
    """
    total = sum(one_thread.values())
    steps = ", ".join(f"{step} {1000 * seconds:.0f}" for step, seconds in one_thread.items())
    return (f"loop steps per video: {steps} ms with one torch thread (scoring {100 * one_thread['score'] / total:.0f}"
            f" % of them); with {threads}, score {1000 * loop_score:.0f} ms ({one_thread['score'] / loop_score:.2f}x)")


if __name__ == "__main__":
    main()
