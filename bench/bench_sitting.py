"""A labeler's sitting: 2,000 frames labelled by keyboard alone in one browser page, block by block.

    python -m bench.bench_sitting [--frames 2000] [--block 200]

A collection of synthetic short-form clips (the ingest bench's cached clips, 16 frames each) is ingested into a
throwaway store, one `python app.py` serves it (tests/app_process.py), and headless Chromium signs in as a
labeler, loads the unlabeled queue and labels `--frames` frames with the keys a labeler uses (n, 1-4, Enter,
y then 2), each key once the previous answer's frame and its heatmap are on screen (tests/labeler.py), so the
queue refills itself from the store many times over. Per block of `--block` frames it prints the median and
p95 time from a key to the next frame on screen and to its heatmap, the page's JavaScript heap and element
count, and the app's resident memory: a sitting that slows down or grows as it goes shows here, block
against block, in one run. Then it checks that the store holds exactly the labels that were keyed, and
prints last `sitting_p95_drift: X`, the last block's p95 key-to-next-frame over the first block's (1.0: no
slower at the end of the sitting than at its start).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.bench_ingest import ensure_clips
from bench.bench_load import app_memory
from core.config import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests"))
from app_process import running_app  # noqa: E402  (tests/app_process.py: start the app, capture its log)
from labeler import (CHROMIUM, CHROMIUM_ARGS, KEYS, MEASURE, Labeler, read_keyed_labels,  # noqa: E402
                     sign_in_and_load)

FRAMES_PER_CLIP = 16
# The keys of a plain sitting, in turn: a no, each layout, accept the model, a yes then a layout.
CYCLE = ("n", "1", "2", "3", "4", "Enter", "y2", "n")
# Read in the page after each block: its JavaScript heap (Chromium's performance.memory) and its elements.
PAGE_SIZE = ("() => ({heap: performance.memory ? performance.memory.usedJSHeapSize : 0,"
             " nodes: document.getElementsByTagName('*').length})")


def ingest_collection(root: Path, clips: int) -> None:
    """The first `clips` cached clips, ingested by the command line into the store the app will open."""
    folder = ensure_clips(clips)
    chosen = root / "collection"
    chosen.mkdir()
    for path in sorted(folder.glob("clip_*.mp4"))[:clips]:
        (chosen / path.name).symlink_to(path)
    env = dict(os.environ, SLUDGELENS_DB=str(root / "store.db"), SLUDGELENS_MEDIA=str(root / "media"))
    command = [sys.executable, "-m", "annotations", "ingest", str(chosen), "--frames", str(FRAMES_PER_CLIP),
               "--collection", "sitting", "--no-progress", "--report", str(root / "ingest.jsonl")]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the ingest failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


def summarise_block(timings: list[dict]) -> dict:
    """Median and p95 ms from a key to the next frame and to its heatmap, over the keys that moved on."""
    moved = [t for t in timings if t["frame"] and t["frame"] != t["from"]]
    to_frame = np.asarray([t["frameAt"] - t["t0"] for t in moved], dtype=float)
    to_heat = np.asarray([t["heatAt"] - t["t0"] for t in moved], dtype=float)
    return {"keys": len(timings), "frame_p50": float(np.median(to_frame)),
            "frame_p95": float(np.percentile(to_frame, 95)), "heat_p50": float(np.median(to_heat)),
            "heat_p95": float(np.percentile(to_heat, 95))}


HEADER = (f"{'frames':>6} {'s':>5} {'frame50':>8} {'frame95':>8} {'heat50':>8} {'heat95':>8} {'heap MB':>8}"
          f" {'nodes':>7} {'app MB':>7}   (times in ms from a key to the next frame / its heatmap on screen)")


def format_row(row: dict) -> str:
    return (f"{row['labelled']:>6} {row['seconds']:>5.0f} {row['frame_p50']:>8.0f} {row['frame_p95']:>8.0f}"
            f" {row['heat_p50']:>8.0f} {row['heat_p95']:>8.0f} {row['heap'] / 2**20:>8.1f} {row['nodes']:>7}"
            f" {row['rss'] / 2**20:>7.0f}")


def check_store(db_path: Path, intended: dict[int, tuple[bool, str | None]]) -> list[str]:
    """What differs between the store and the labels keyed: the frames the labeler touched, their current labels."""
    touched, current = read_keyed_labels(db_path)
    problems = []
    if touched != set(intended):
        problems.append(f"{len(touched ^ set(intended))} frames touched or keyed but not both")
    wrong = [f for f, label in intended.items() if current.get(f) != label]
    if wrong:
        problems.append(f"{len(wrong)} frames whose current label is not the one keyed (first: {wrong[:5]})")
    return problems


def run(frames: int, block: int) -> float:
    from playwright.sync_api import sync_playwright

    clips = -(-frames // FRAMES_PER_CLIP) + 4  # a few more frames than the sitting takes
    with tempfile.TemporaryDirectory(prefix="sitting-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        ingest_collection(root, clips)
        print(f"collection: {clips} clips x {FRAMES_PER_CLIP} frames ingested in {time.perf_counter() - started:.0f} s")
        with running_app(root) as app, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, "--enable-precise-memory-info"])
            page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
            page.set_default_timeout(90_000)
            sign_in_and_load(page, app.url)
            page.evaluate(MEASURE, list(KEYS))
            page.wait_for_function("document.querySelector('#label-explain .sl-explain').dataset.frame !== ''",
                                   timeout=120_000)
            labeler = Labeler(page)
            rows = []
            print(HEADER)
            sitting = time.perf_counter()
            i = 0
            while len(labeler.intended) < frames:
                first_key = len(labeler.timings)
                block_started = time.perf_counter()
                goal = min(frames, len(labeler.intended) + block)
                while len(labeler.intended) < goal:
                    labeler.label(CYCLE[i % len(CYCLE)])
                    i += 1
                row = summarise_block(labeler.timings[first_key:])
                row.update(page.evaluate(PAGE_SIZE), labelled=len(labeler.intended),
                           seconds=time.perf_counter() - block_started, rss=app_memory(app.process.pid))
                rows.append(row)
                print(format_row(row), flush=True)
            total = time.perf_counter() - sitting
            browser.close()
            log = app.log_path.read_text(errors="replace")
        problems = check_store(root / "store.db", labeler.intended)
    print(f"{frames} frames in {total / 60:.1f} min ({frames / total:.1f} frames/s, the labeler's own think time"
          f" not counted); keys pressed: {len(labeler.timings)}; tracebacks in the app log: {log.count('Traceback')}")
    print(f"app memory: {rows[0]['rss'] / 2**20:.0f} MB after the first block, {rows[-1]['rss'] / 2**20:.0f} MB"
          f" after the last; page heap {rows[0]['heap'] / 2**20:.1f} -> {rows[-1]['heap'] / 2**20:.1f} MB")
    print("store: every keyed label is the frame's current label" if not problems else
          "store: " + "; ".join(problems))
    drift = rows[-1]["frame_p95"] / rows[0]["frame_p95"]
    if problems:
        raise SystemExit(f"labels lost or wrong: {problems}")
    return drift


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=2000, help="frames to label in the sitting")
    parser.add_argument("--block", type=int, default=200, help="frames per row of the table")
    args = parser.parse_args(argv)
    drift = run(args.frames, args.block)
    print(f"sitting_p95_drift: {drift:.2f}")


if __name__ == "__main__":
    main()
