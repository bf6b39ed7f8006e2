"""Collection ingest on a GPU with the vqwen-qformer architecture at full size: frames/s per batch size.

    python -m bench.bench_gpu_ingest [--clips 200] [--batch-sizes 32 64 128 256 512] [--depth full]
                                     [--also-batches 256] [--also-switch-ms 0.5]
    python -m bench.bench_gpu_ingest --depth reduced --clips 4 --batch-sizes 4 8 --device cpu   # a dry run

The model is Blip2ForConditionalGeneration at the real checkpoint's widths and depths (EVA-CLIP-G/14: 39
layers of 1408; Q-Former: 12 layers of 768 with 32 queries; Qwen3-4B: 36 layers of 2560, vocabulary 151936),
random weights, saved as a checkpoint and loaded back by ``core.engine.load_model``: the path a hub checkpoint
takes, in bf16 on CUDA. Random weights score as fast as trained ones, and nothing is downloaded.

For each batch size, smallest first, it times ``score_frames`` alone on frames already decoded (what the model
can take), until the GPU runs out of memory or a bigger batch gains under 5 %: the batch size that fills the
GPU, and where a batch's time goes (pixels, vision side, LM with and without the shared prefix). It then
ingests the clips (``annotations.ingest.ingest``: decode worker processes, one per CPU, feeding that batch
size) into a fresh store twice, side by side: scoring between the stores, then overlapped with them in a
scoring thread (the default on a GPU), and prints frames/s end to end for both, with where the model's
process waited (``IngestSummary.waits``). ``--also-batches`` and ``--also-switch-ms`` add overlapped runs at
other batch sizes and Python thread switch intervals, side by side. The clips are bench_ingest's (synthetic
360x640 short-form clips, cached under data/bench/ingest/). The last line is the overlapped run's
``ingest_frames_per_s: X``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.bench_ingest import ensure_clips, run_ingest

# How much a doubled batch must gain to count as "not yet full".
MIN_GAIN = 0.05


def build_checkpoint(folder: Path, depth: str, device: str) -> None:
    """Write a random vqwen-qformer-shaped checkpoint (bf16 when built on CUDA) to `folder`.

    ``depth`` "full" is the real checkpoint's depth (about 5 B parameters: ~10 GB in bf16); "reduced" is the
    test suite's shape (true widths, one or two layers per part), for a dry run on a CPU.
    """
    from training.tiny_models import VQWEN_QFORMER_SHAPE, save_real_shape_checkpoint

    shape = VQWEN_QFORMER_SHAPE
    if depth == "full":
        shape = replace(shape, vision_layers=39, qformer_layers=12, text_layers=36)
    save_real_shape_checkpoint(folder, "blip2", shape, device)


def wait_for_device(lm) -> None:
    """Let the GPU finish what was queued on it, so a timer read next counts it (a no-op on a CPU)."""
    import torch

    if lm.device.type == "cuda":
        torch.cuda.synchronize()


def time_scoring(lm, frames, batch_size: int, rounds: int = 3) -> float | None:
    """Frames/s of ``score_frames`` at one batch size (best of `rounds`), or None when it runs out of memory."""
    import torch

    from core.engine import score_frames

    batch = [frames[i % len(frames)] for i in range(batch_size)]
    best = None
    try:
        score_frames(lm, batch, batch_size=batch_size)  # warm-up: kernels, allocator
        for _ in range(rounds):
            wait_for_device(lm)
            started = time.perf_counter()
            score_frames(lm, batch, batch_size=batch_size)
            wait_for_device(lm)
            rate = batch_size / (time.perf_counter() - started)
            best = rate if best is None else max(best, rate)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return None
    return best


def time_stages(lm, frames, batch_size: int, rounds: int = 3) -> dict[str, float]:
    """Milliseconds per batch of each step of ``score_frames`` (best of `rounds`): the pixels (resize and
    normalise), the vision side (tower and Q-Former), and the LM's answer pass both ways, side by side: one full
    left-padded row per question (``lm rows``) and the shared prefix read once from a cache (``lm shared``, what
    ``score_frames`` runs). Where the time goes."""
    import torch

    from core import vocabulary
    from core.engine import answer_logits, answer_with_shared_prefix, prepare_pixels

    batch = [frames[i % len(frames)] for i in range(batch_size)]
    best: dict[str, float] = {}
    with torch.inference_mode():
        for round_ in range(rounds + 1):  # round 0 warms up
            times = {}
            wait_for_device(lm)
            started = time.perf_counter()
            pixels = prepare_pixels(lm, batch)
            wait_for_device(lm)
            times["pixels"] = time.perf_counter() - started
            started = time.perf_counter()
            visual = lm.family.encode(lm.model, pixels)
            wait_for_device(lm)
            times["vision"] = time.perf_counter() - started
            for name, answer in (("lm rows", answer_logits), ("lm shared", answer_with_shared_prefix)):
                started = time.perf_counter()
                answer(lm, visual, [vocabulary.CLASSIFY, vocabulary.LAYOUT])
                wait_for_device(lm)
                times[name] = time.perf_counter() - started
            if round_:
                best = {k: min(v * 1000, best.get(k, float("inf"))) for k, v in times.items()}
    return best


def find_filling_batch(lm, frames, sizes: list[int]) -> tuple[int, dict[int, float | None]]:
    """The batch size that fills the device: the last before running out of memory or gaining < MIN_GAIN."""
    rates: dict[int, float | None] = {}
    chosen = None
    for size in sorted(sizes):
        rate = time_scoring(lm, frames, size)
        rates[size] = rate
        if rate is None:
            break
        print(f"score_frames batch {size}: {rate:.1f} frames/s", flush=True)
        if chosen is not None and rate < rates[chosen] * (1 + MIN_GAIN):
            break
        chosen = size
    if chosen is None:
        raise SystemExit(f"no batch size of {sorted(sizes)} fits on {lm.device}")
    return chosen, rates


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--frames", type=int, default=16, help="frames sampled per video")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    parser.add_argument("--depth", choices=("full", "reduced"), default="full")
    parser.add_argument("--device", default="auto", help="auto: cuda when present, else cpu")
    parser.add_argument("--workers", type=int, default=None, help="decode processes (default: one per CPU)")
    parser.add_argument("--also-batches", type=int, nargs="*", default=[],
                        help="overlapped ingest also at these batch sizes, after the headline run")
    parser.add_argument("--also-switch-ms", type=float, nargs="*", default=[],
                        help="overlapped ingest also with Python's thread switch interval at these values (ms; "
                             "the scoring thread and the storing thread share the GIL)")
    args = parser.parse_args(argv)

    import torch

    from annotations.ingest import count_available_cpus
    from core.config import EngineConfig, ModelSpec, load_settings
    from core.engine import load_model
    from core.video import sample_frames

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    settings = load_settings()
    folder = ensure_clips(args.clips)
    paths = sorted(folder.glob("clip_*.mp4"))[:args.clips]
    with tempfile.TemporaryDirectory(prefix="bench-gpu-ingest-") as tmp:
        checkpoint = Path(tmp) / "vqwen-qformer-shape"
        started = time.perf_counter()
        build_checkpoint(checkpoint, args.depth, device)
        lm = load_model(ModelSpec(str(checkpoint)), EngineConfig(device=device))
        params = sum(p.numel() for p in lm.model.parameters())
        print(f"model: vqwen-qformer shape, {args.depth} depth, {params / 1e9:.2f} B parameters, {lm.dtype} on "
              f"{lm.device} (built, saved and loaded in {time.perf_counter() - started:.0f} s)", flush=True)
        frames = [f for p in paths[:8] for f in sample_frames(p, num_frames=args.frames, limits=settings.video).frames]
        batch, rates = find_filling_batch(lm, frames, args.batch_sizes)
        peak = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device.startswith("cuda") else ""
        print(f"batch that fills {lm.device}: {batch} ({rates[batch]:.1f} frames/s scoring alone{peak})", flush=True)
        stages = time_stages(lm, frames, batch)
        print("per batch of " + str(batch) + ": " + ", ".join(f"{k} {v:.1f} ms" for k, v in stages.items()), flush=True)
        print(f"shared prefix gain on the LM: {stages['lm rows'] / stages['lm shared']:.2f}x", flush=True)
        # Side by side in one run: scoring in this process's thread between stores, then overlapped with them
        # (the default on a GPU).
        rates_by_mode = {}
        for overlap in (False, True):
            summary = run_ingest(lm, folder, len(paths), Path(tmp) / f"overlap-{overlap}", args.frames, batch,
                                 args.workers, settings.video, overlap_scoring=overlap)
            seconds = summary.seconds
            rates_by_mode[overlap] = len(paths) * args.frames / seconds
            print(f"ingest{' overlapped' if overlap else ''}: {len(paths)} clips x {args.frames} frames in "
                  f"{seconds:.1f} s, {count_available_cpus()} CPUs, batch {batch}: {len(paths) / seconds:.2f} "
                  f"videos/s, {rates_by_mode[overlap]:.1f} frames/s ({summary.describe_waits()})", flush=True)
        # Variants of the overlapped run, side by side with it; the headline stays the default configuration.
        default_switch = sys.getswitchinterval()
        variants = [(size, None) for size in args.also_batches]
        variants += [(size, ms) for size in [batch, *args.also_batches] for ms in args.also_switch_ms]
        for n, (size, ms) in enumerate(variants):
            sys.setswitchinterval(default_switch if ms is None else ms / 1000)
            try:
                summary = run_ingest(lm, folder, len(paths), Path(tmp) / f"variant-{n}", args.frames, size,
                                     args.workers, settings.video, overlap_scoring=True)
            finally:
                sys.setswitchinterval(default_switch)
            switch = f"switch interval {default_switch * 1000 if ms is None else ms:g} ms"
            print(f"ingest overlapped, batch {size}, {switch}: {len(paths) * args.frames / summary.seconds:.1f} "
                  f"frames/s ({summary.describe_waits()})", flush=True)
    print(f"overlap gain: {rates_by_mode[True] / rates_by_mode[False]:.2f}x")
    print(f"ingest_frames_per_s: {rates_by_mode[True]:.1f}")


if __name__ == "__main__":
    main()
