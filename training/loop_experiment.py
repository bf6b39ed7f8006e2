"""The learning-loop experiment: do corrections made through the store's queue make a better model?

Reads top to bottom: seed -> model -> data -> raw labels -> model X -> corrections -> model Y -> eval.

1. Data. Synthetic clips with known per-frame truth in a domain the base model has not seen: besides the
   ordinary layouts it was trained on, sludge comes in two new styles, a round picture-in-picture inset
   (layout "pip") and a diagonal split (layout "other"). They go into a fresh store (frames, videos).
2. Raw labels. Truth with ``noise`` (12 %) of the frame labels flipped by a seed, imported as the
   labeler "raw-gt" through ``annotations.import_ground_truth``. The noise is semantic by default, like
   the card's: the flips fall on the new styles' sludge frames, which raw labelers read as "not sludge"
   (``noise_kind="uniform"`` spreads them over all frames instead).
3. Model X. The base fine-tuned (LoRA, ``training.finetune``) on the training export of the raw labels.
   X scores every stored frame; its predictions feed the queue.
4. Corrections. A scripted labeler takes frames from the store's queue (``next_frames``: disagreement
   between X and the labels first, then X's most uncertain frames) and sets each to the truth through
   ``correct_label``, the call a person's correction makes, until ``budget`` frames have been looked at.
5. Model Y. The same base, fine-tuned the same way on the export after the corrections.
6. Evaluation. Frame accuracy (and the rest of the card's table) of the base, X and Y on a clean held-out
   set: fresh clips from the same domain (other seeds), scored against their truth, never in the store.
   An oracle fine-tuned on the clean truth of the pool shows how much of the noise the loop won back.

The store and checkpoints stay behind (``work_dir``, ``data/checkpoints/loop-x``/``loop-y``), so the app
can set X and Y side by side. The last line printed is the headline, ``gain_pp: <Y - X in points>``.

    python -m training.loop_experiment                    # ~5-10 min on 2 CPU cores
    python -m training.loop_experiment --repeats 3 --budget 200
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

import annotations as store
from annotations.analyses import score_stored_frames
from annotations.metrics import card_metrics
from core import vocabulary
from core.config import EMBEDDED_BLIP2, REPO_ROOT, EngineConfig, ModelSpec
from core.engine import load_model, score_frames
from training import synthetic
from training.cli import parse_config
from training.evaluate import format_markdown
from training.finetune import FeatureBank, FinetuneConfig, run

# The two sludge styles of the new domain, and the truth each carries.
NEW_STYLES = {"round_pip": "pip", "diagonal": "other"}
LABELER = "loop-labeler"


@dataclass
class LoopConfig:
    """The experiment's knobs; defaults fit ~10 minutes on 2 CPU cores."""

    base: str = str(EMBEDDED_BLIP2)
    seed: int = 0
    # The store, exports and report of the run (replaced at each run; git-ignored under data/).
    work_dir: str = str(REPO_ROOT / "data" / "loop_experiment")
    # X and Y land here as model versions the app lists.
    checkpoints_dir: str = str(REPO_ROOT / "data" / "checkpoints")
    name_prefix: str = "loop"

    # --- data: clips of `clip_frames` frames at `fps`, of which every `clip_frames // frames_per_clip`-th is kept
    pool_clips: int = 160
    heldout_clips: int = 60
    frames_per_clip: int = 8
    clip_frames: int = 24
    fps: float = 12.0
    # Share of clips per style: ordinary synthetic clips (layouts the base knows, 1-3 segments),
    # single-stream clips, and the two new sludge styles.
    style_mix: dict = field(default_factory=lambda: {"plain": 0.4, "single": 0.2, "round_pip": 0.2, "diagonal": 0.2})
    # The held-out set uses photos the pool never shows, so it measures the styles, not the footage.
    heldout_pool: str = "holdout"

    # --- the loop
    # The vqwen card's estimate of semantic noise in raw human labels.
    noise: float = 0.12
    # "semantic": the flips fall first on the new styles' sludge frames, which raw labelers call "not
    # sludge" (a round inset reads as a face-cam, a diagonal cut as one scene): the card's noise is of this
    # kind, a systematic misreading of the strict definition. "uniform": flips drawn from all frames alike,
    # which a model trained on them mostly averages away.
    noise_kind: str = "semantic"
    # Frames the scripted labeler looks at (and sets to the truth): about a tenth of the pool.
    budget: int = 128
    strategies: tuple[str, ...] = ("disagreement", "uncertain")
    # Independent repeats with other noise seeds; the headline is their mean.
    repeats: int = 1
    # Also fine-tune on the pool's clean truth, the ceiling the corrections move toward.
    oracle: bool = True

    # --- fine-tuning (the card's recipe; learning rates raised for a small model trained in minutes)
    epochs: float = 10.0
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 1e-3
    projector_lr: float = 1e-4
    eval_every: int = 25
    # Tiny matrices gain nothing from a second thread, and on a busy machine threads wait on each other.
    threads: int = 1
    progress: bool = False


# ---------------------------------------------------------------- data


@dataclass
class Clip:
    """Sampled frames of one synthetic clip, their truth, and how it was drawn."""

    name: str
    style: str
    frames: np.ndarray  # (n, H, W, 3) uint8
    indices: list[int]
    truths: list[synthetic.FrameTruth]


def _single_spec(seed: int, size: tuple[int, int], pool: str, avoid: tuple[str, ...] = ()):
    """A one-segment single-stream clip spec whose source is not in `avoid`."""
    for k in range(50):
        spec = synthetic.draw_clip_spec(seed * 101 + k, num_frames=1, size=size, pool=pool, layouts=("single",))
        if not set(spec.segments[0].frame.truth.sources) & set(avoid):
            return spec.segments[0].frame
    raise RuntimeError("could not draw a single stream from another source")


def _round_mask(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy - (h - 1) / 2) ** 2 / (h / 2) ** 2 + (xx - (w - 1) / 2) ** 2 / (w / 2) ** 2) <= 1.0


def render_new_style(style: str, seed: int, times: list[float], size: tuple[int, int], pool: str):
    """Frames of a clip in one of the new sludge styles: two unrelated single streams composed by a mask.

    >>> frames, truth = render_new_style("diagonal", 0, [0.0, 0.5], (448, 252), "train")
    >>> frames.shape, truth.layout
    ((2, 448, 252, 3), 'other')
    """
    rng = np.random.default_rng(seed)
    H, W = size
    main = _single_spec(seed, size, pool)
    other = _single_spec(seed + 7919, size, pool, avoid=main.truth.sources)
    frames = np.empty((len(times), H, W, 3), dtype=np.uint8)
    if style == "round_pip":
        d = int(W * rng.uniform(0.35, 0.55))
        cx, cy = rng.uniform(d / 2 + 4, W - d / 2 - 4), rng.uniform(d / 2 + 4, H - d / 2 - 4)
        x0, y0 = int(cx - d / 2), int(cy - d / 2)
        mask = _round_mask(d, d)
        ring = _round_mask(d + 6, d + 6)
        colour = np.array(((255, 255, 255), (0, 0, 0), (255, 200, 0))[int(rng.integers(3))], dtype=np.uint8)
        for k, t in enumerate(times):
            frame = synthetic.render_frame(main, size, t)
            inset = synthetic.render_frame(other, (d, d), t)
            frame[y0 - 3:y0 + d + 3, x0 - 3:x0 + d + 3][ring] = colour
            frame[y0:y0 + d, x0:x0 + d][mask] = inset[mask]
            frames[k] = frame
    elif style == "diagonal":
        left, right = rng.uniform(0.25, 0.75, size=2) * H
        if abs(left - right) < 0.2 * H:
            right = min(max(left + (0.3 * H if left < H / 2 else -0.3 * H), 0), H)
        yy, xx = np.mgrid[0:H, 0:W]
        below = yy > left + (right - left) * xx / max(W - 1, 1)
        for k, t in enumerate(times):
            frame = synthetic.render_frame(main, size, t)
            frame[below] = synthetic.render_frame(other, size, t)[below]
            frames[k] = frame
    else:
        raise ValueError(f"unknown style {style!r}; expected one of {', '.join(NEW_STYLES)}")
    truth = synthetic.FrameTruth(True, NEW_STYLES[style], "", "", sources=main.truth.sources + other.truth.sources)
    return frames, truth


def make_clips(seed: int, count: int, cfg: LoopConfig, pool: str, prefix: str) -> list[Clip]:
    """`count` clips drawn by style from cfg.style_mix, `frames_per_clip` frames each, with per-frame truth.

    >>> [c.style for c in make_clips(0, 3, LoopConfig(), "train", "pool")]
    ['round_pip', 'plain', 'plain']
    """
    rng = np.random.default_rng(seed)
    names, weights = list(cfg.style_mix), np.array(list(cfg.style_mix.values()), dtype=float)
    step = max(1, cfg.clip_frames // cfg.frames_per_clip)
    indices = list(range(0, cfg.clip_frames, step))[:cfg.frames_per_clip]
    times = [i / cfg.fps for i in indices]
    size = (448, 252)
    clips = []
    for k in range(count):
        style = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        clip_seed = int(rng.integers(1 << 31))
        if style in NEW_STYLES:
            frames, truth = render_new_style(style, clip_seed, times, size, pool)
            truths = [truth] * len(indices)
        else:
            layouts = ("single",) if style == "single" else None
            spec = synthetic.draw_clip_spec(clip_seed, cfg.clip_frames, cfg.fps, size, pool=pool, layouts=layouts)
            frames = np.empty((len(indices), *size, 3), dtype=np.uint8)
            truths = []
            for j, i in enumerate(indices):
                segment = next(s for s in spec.segments if s.start <= i < s.stop)
                frames[j] = synthetic.render_frame(segment.frame, size, i / cfg.fps)
                truths.append(segment.frame.truth)
        clips.append(Clip(f"{prefix}-{k:04d}-{style}", style, frames, indices, truths))
    return clips


def store_clips(db, clips: list[Clip], fps: float) -> tuple[dict[int, synthetic.FrameTruth], dict[int, str]]:
    """Add the clips' videos and frames to the store; returns frame id -> truth, and frame id -> clip style.

    >>> truth, styles = store_clips(db, clips, 12.0)  # doctest: +SKIP
    """
    truth, styles = {}, {}
    for clip in clips:
        video_id = store.add_video(db, clip.name.encode(), clip.name, {"fps": fps, "style": clip.style})
        ids = store.add_frames(db, video_id, clip.frames, [i / fps for i in clip.indices], clip.indices)
        truth.update(zip(ids, clip.truths))
        styles.update((i, clip.style) for i in ids)
    return truth, styles


def flip_labels(truth: dict[int, synthetic.FrameTruth], rate: float, seed: int,
                prefer: set[int] = frozenset()) -> dict[int, tuple[bool, str]]:
    """Raw labels: (sludge, layout) per frame, with round(rate x frames) sludge labels flipped by a seed.

    The flips are drawn from `prefer` first (semantic noise: the frames people misread), then from the
    rest. A flipped sludge frame gets layout "none"; a flipped single stream gets a random sludge layout.

    >>> truth = {1: synthetic.FrameTruth(True, "pip", "", ""), 2: synthetic.FrameTruth(False, "none", "", "")}
    >>> sorted(flip_labels(truth, 0.5, seed=0).values())  # the single stream flipped to a sludge layout
    [(True, 'pip'), (True, 'pip')]
    """
    rng = np.random.default_rng(seed)
    frame_ids = sorted(truth)
    count = round(rate * len(frame_ids))
    first = sorted(set(prefer) & set(frame_ids))
    flipped = set(rng.choice(first, size=min(count, len(first)), replace=False).tolist()) if first else set()
    rest = [f for f in frame_ids if f not in flipped]
    flipped |= set(rng.choice(rest, size=count - len(flipped), replace=False).tolist())
    raw = {}
    for frame_id in frame_ids:
        t = truth[frame_id]
        if frame_id not in flipped:
            raw[frame_id] = (t.sludge, t.layout)
        elif t.sludge:
            raw[frame_id] = (False, "none")
        else:
            raw[frame_id] = (True, vocabulary.LAYOUTS[int(rng.integers(len(vocabulary.LAYOUTS)))])
    return raw


def import_raw_labels(db, raw: dict[int, tuple[bool, str]], path: Path) -> dict:
    """Write the raw labels as a ground-truth JSONL file and import it (labeler "raw-gt")."""
    rows = []
    for frame_id, (sludge, layout) in sorted(raw.items()):
        frame = store.get_frame(db, frame_id)
        rows.append({"video": frame["video_id"], "frame_index": frame["frame_index"], "sludge": sludge,
                     "layout": layout})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return store.import_ground_truth(db, path)


# ---------------------------------------------------------------- the scripted labeler


def work_queue(db, labeler: str, truth: dict[int, synthetic.FrameTruth], budget: int,
               strategies: tuple[str, ...], model_id: str, batch: int = 16) -> dict:
    """Look at up to `budget` frames from the queue, strategy by strategy, and set each to its truth.

    Every frame looked at gets a sludge event (a fix or a confirmation) through ``correct_label``, naming
    the revision the queue showed; a wrong layout is fixed too. Returns counts of what was done.

    >>> work_queue(db, "loop-labeler", truth, 128, ("disagreement", "uncertain"), "x@1")["fixed"]  # doctest: +SKIP
    97
    """
    done = {"looked": 0, "fixed": 0, "layout_fixed": 0, "by_strategy": {}}
    for strategy in strategies:
        looked_here = 0
        while done["looked"] < budget:
            frames = store.next_frames(db, labeler, strategy, n=min(batch, budget - done["looked"]),
                                       model_id=model_id)
            if not frames:
                break
            for frame in frames:
                t = truth[frame["frame_id"]]
                event = store.correct_label(db, frame["frame_id"], "sludge", t.sludge, labeler,
                                            seen_revision=frame["revision"], model_seen=model_id,
                                            note=f"queue: {frame['reason']}")
                done["fixed"] += frame["sludge"] != t.sludge
                layout = t.layout if t.sludge else "none"
                if frame["layout"] != layout:
                    store.correct_label(db, frame["frame_id"], "layout", layout, labeler,
                                        seen_revision=event.revision, model_seen=model_id)
                    done["layout_fixed"] += 1
                done["looked"] += 1
                looked_here += 1
        done["by_strategy"][strategy] = looked_here
    store.release_frames(db, labeler)
    return done


# ---------------------------------------------------------------- evaluation


def evaluate_clips(lm, clips: list[Clip], batch_size: int = 16) -> dict:
    """The card's table for a model on clips with known truth (frames scored by core.engine.score_frames)."""
    y_true, y_pred, videos, layout_true, layout_pred = [], [], [], [], []
    by_style: dict[str, list[bool]] = {}
    for clip in clips:
        scores = score_frames(lm, clip.frames, batch_size=batch_size)
        for score, truth in zip(scores, clip.truths):
            y_true.append(truth.sludge)
            y_pred.append(score.label)
            videos.append(clip.name)
            layout_true.append(truth.layout)
            layout_pred.append(max(score.layout_scores, key=score.layout_scores.get))
            by_style.setdefault(clip.style, []).append(score.label == truth.sludge)
    metrics = card_metrics(y_true, y_pred, videos, layout_true, layout_pred)
    metrics["accuracy_by_style"] = {s: round(float(np.mean(v)), 6) for s, v in sorted(by_style.items())}
    return metrics


# ---------------------------------------------------------------- one repeat


def finetune_config(cfg: LoopConfig, export: Path, name: str, db_path: Path, seed: int) -> FinetuneConfig:
    """The fine-tuning run for one model of the experiment (X, Y and the oracle differ only in the export)."""
    return FinetuneConfig(
        export=str(export), base=cfg.base, name=name, out_dir=cfg.checkpoints_dir, seed=seed, threads=cfg.threads,
        epochs=cfg.epochs, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum, lr=cfg.lr,
        projector_lr=cfg.projector_lr, eval_every=cfg.eval_every, log_every=0, progress=cfg.progress,
        db=str(db_path), media=str(db_path.parent / "media"), register=True,
    )


def run_repeat(cfg: LoopConfig, repeat: int, pool: list[Clip], heldout: list[Clip], bank: FeatureBank) -> dict:
    """One pass of the loop with its own store and noise seed; returns the figures of X, Y (and the oracle)."""
    seed = cfg.seed + 1000 * repeat
    work = Path(cfg.work_dir) / f"repeat-{repeat}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    db_path = work / "store.db"
    db = store.open_store(db_path, work / "media")
    timings: dict[str, float] = {}
    started = time.time()

    # data and raw labels
    truth, styles = store_clips(db, pool, cfg.fps)
    misread = {f for f, style in styles.items() if style in NEW_STYLES and truth[f].sludge}
    raw = flip_labels(truth, cfg.noise, seed, prefer=misread if cfg.noise_kind == "semantic" else set())
    flipped = sum(raw[f][0] != truth[f].sludge for f in truth)
    import_raw_labels(db, raw, work / "raw_labels.jsonl")
    raw_export = work / "export-raw"
    manifest_raw = store.export_training_set(db, raw_export)
    timings["store"] = time.time() - started

    def finetune(export: Path, name: str):
        mark = time.time()
        result = run(finetune_config(cfg, export, name, db_path, seed), bank=bank, db=db)
        timings[name] = time.time() - mark
        return result

    # model X on the raw labels; its predictions on every stored frame feed the queue
    suffix = f"-r{repeat}" if cfg.repeats > 1 else ""
    x = finetune(raw_export, f"{cfg.name_prefix}-x{suffix}")
    lm_x = load_model(ModelSpec(str(x.folder)))
    frame_ids = sorted(truth)
    score_stored_frames(lm_x, db, frame_ids)

    # the scripted labeler works the queue, then the corrected labels are exported
    store.add_labeler(db, LABELER, "reviewer")
    mark = time.time()
    done = work_queue(db, LABELER, truth, cfg.budget, cfg.strategies, x.model_id)
    timings["corrections"] = time.time() - mark
    fixed_export = work / "export-corrected"
    manifest_fixed = store.export_training_set(db, fixed_export)
    remaining = sum(1 for f in store.current_labels(db) if f["sludge"] != truth[f["frame_id"]].sludge)

    # model Y on the corrected labels, from the same base
    y = finetune(fixed_export, f"{cfg.name_prefix}-y{suffix}")
    lm_y = load_model(ModelSpec(str(y.folder)))
    score_stored_frames(lm_y, db, frame_ids)

    mark = time.time()
    figures = {"x": evaluate_clips(lm_x, heldout), "y": evaluate_clips(lm_y, heldout)}
    timings["heldout_eval"] = time.time() - mark
    oracle_id = None
    if cfg.oracle:
        clean_dir = work / "export-clean"
        clean_records = [json.loads(line) for line in (raw_export / "training.jsonl").read_text().splitlines()]
        for record in clean_records:
            t = truth[record["frame_id"]]
            record.update(sludge=t.sludge, layout=t.layout, provenance="raw")
            record["image"] = str((raw_export / record["image"]).resolve())
        clean_dir.mkdir()
        (clean_dir / "training.jsonl").write_text("".join(json.dumps(r) + "\n" for r in clean_records))
        (clean_dir / "manifest.json").write_text(json.dumps({"snapshot_id": "clean-truth", "counts": {}}) + "\n")
        oracle = finetune(clean_dir, f"{cfg.name_prefix}-oracle{suffix}")
        oracle_id = oracle.model_id
        figures["oracle"] = evaluate_clips(load_model(ModelSpec(str(oracle.folder))), heldout)
    db.conn.close()
    return {
        "repeat": repeat, "seed": seed, "store": str(db_path), "pool_frames": len(truth), "flipped": flipped,
        "corrections": done, "wrong_after_corrections": remaining,
        "exports": {"raw": manifest_raw["snapshot_id"], "corrected": manifest_fixed["snapshot_id"]},
        "models": {"x": x.model_id, "y": y.model_id, "oracle": oracle_id},
        "best_steps": {"x": x.train.best_step, "y": y.train.best_step},
        "figures": figures, "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }


# ---------------------------------------------------------------- main


def run_experiment(cfg: LoopConfig) -> dict:
    """The whole experiment; returns the report it also writes to work_dir/report.{json,md}."""
    if cfg.noise_kind not in ("semantic", "uniform"):  # before minutes of data and training, not after
        raise ValueError(f"noise_kind must be 'semantic' or 'uniform', got {cfg.noise_kind!r}")
    started = time.time()
    # seed
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)

    # model: the base as the app loads it, measured on the held-out set before anything is trained
    base = load_model(ModelSpec(cfg.base), EngineConfig(device="cpu"))

    # data: one pool and one held-out set for every repeat (repeats differ in their noise)
    work = Path(cfg.work_dir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pool = make_clips(cfg.seed, cfg.pool_clips, cfg, "train", "pool")
    heldout = make_clips(cfg.seed + 1, cfg.heldout_clips, cfg, cfg.heldout_pool, "heldout")
    print(f"pool {sum(len(c.indices) for c in pool)} frames in {len(pool)} clips, held-out "
          f"{sum(len(c.indices) for c in heldout)} frames in {len(heldout)} clips ({time.time() - started:.0f}s)",
          flush=True)
    base_figures = evaluate_clips(base, heldout)
    print(f"base held-out accuracy {base_figures['frames']['accuracy']:.4f} by style "
          f"{base_figures['accuracy_by_style']}", flush=True)

    # The frozen vision side is the base's in every run, so its features are computed once for all of them.
    bank = FeatureBank(base)
    repeats = []
    for repeat in range(cfg.repeats):
        result = run_repeat(cfg, repeat, pool, heldout, bank)
        f = result["figures"]
        print(f"repeat {repeat}: flipped {result['flipped']}, looked at {result['corrections']['looked']}, "
              f"fixed {result['corrections']['fixed']}, still wrong {result['wrong_after_corrections']}; "
              f"accuracy X {f['x']['frames']['accuracy']:.4f} Y {f['y']['frames']['accuracy']:.4f}"
              + (f" oracle {f['oracle']['frames']['accuracy']:.4f}" if "oracle" in f else ""), flush=True)
        repeats.append(result)

    gains = [100 * (r["figures"]["y"]["frames"]["accuracy"] - r["figures"]["x"]["frames"]["accuracy"])
             for r in repeats]
    report = {
        "config": asdict(cfg),
        "base": base_figures,
        "repeats": repeats,
        "gain_pp": round(float(np.mean(gains)), 2),
        "gains_pp": [round(g, 2) for g in gains],
        "seconds": round(time.time() - started, 1),
    }
    columns = {"base": base_figures}
    for r in repeats:
        tag = f" (r{r['repeat']})" if cfg.repeats > 1 else ""
        columns.update({f"X raw{tag}": r["figures"]["x"], f"Y corrected{tag}": r["figures"]["y"]})
        if "oracle" in r["figures"]:
            columns[f"oracle{tag}"] = r["figures"]["oracle"]
    table = format_markdown(columns, f"Clean held-out set: {base_figures['frames']['n']} frames of "
                                     f"{base_figures['videos']['n']} clips")
    (work / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    (work / "report.md").write_text(table + f"\ngain_pp: {report['gain_pp']} (per repeat {report['gains_pp']})\n")
    print(table, flush=True)
    print(f"report in {work}, {report['seconds']:.0f}s", flush=True)
    return report


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(LoopConfig, argv, prog="python -m training.loop_experiment",
                       description=__doc__.split("\n\n")[0])
    report = run_experiment(cfg)
    print(f"gain_pp: {report['gain_pp']}")
    return report


if __name__ == "__main__":
    main()
