"""The learning-loop experiment: do corrections made through the store's queue make a better model?

Reads top to bottom: seed -> model -> data -> (per repeat) oracle -> per noise kind: raw labels -> model X
-> corrections -> model Y -> eval -> report.

1. Data. Synthetic clips with known per-frame truth in a domain the base gets wrong in a fixed direction.
   Besides ordinary synthetic clips (the layouts the base was trained on), two styles its training never
   includes (``training.synthetic`` draws neither): ``stickers``, one scene with a few die-cut stickers
   (faces, hearts, stars) on it, which is NOT sludge, but whose pasted, outlined shapes look like the
   insets the base learned to call sludge; and ``blend_stack``, two unrelated streams stacked with a soft,
   feathered seam and graded to one palette, which IS sludge (vertical) but shows none of the hard borders
   and colour breaks the base learned to look for, so it passes as one scene. One pool of clips is shared
   by every repeat; the held-out set is fresh clips of the same mix on photos the pool never shows.
2. Raw labels. Truth with ``noise`` (12 %) of the frame labels flipped. ``uniform`` (the headline) draws
   the flips from all frames alike; ``semantic`` draws them from the new styles' frames first (a blended
   stack read as one scene, stickers read as insets): the flips then sit where the queue looks
   first, which favours the loop by construction, so it is reported beside the headline, never as it.
   ``clip`` (on request) draws whole videos uniformly and flips all their frames, as when raw labels come
   per video (a manifest row without a frame index) and a labeler misjudged the video: near-copies of one
   scene then agree on the wrong label instead of contradicting each other. They are imported as the
   labeler "raw-gt" through ``annotations.import_ground_truth`` into a fresh store per repeat and noise kind.
3. Model X. The base fine-tuned (``training.finetune``: the card's LoRA on the LM + the projector, plus
   LoRA on the vision tower's last 2 blocks) on the training export of the raw labels. X scores every
   stored frame; its predictions feed the queue.
4. Corrections. A scripted labeler takes frames from the store's queue (``next_frames``, by default the
   ``label-issue`` strategy: cleanlab's label quality of each frame's label under X and the labels beside
   it in its video, lowest first) and sets each to the truth through ``correct_label``, the call a
   person's correction makes, until ``budget`` frames have been looked at.
5. Model Y. The same base, fine-tuned with the same seed on the export after the corrections. With
   ``rounds`` > 1 the loop goes round again: that model scores the pool, the queue re-ranks the frames not
   looked at yet, ``budget`` more are looked at, and the base is fine-tuned on the new export. Y is the last
   round's model; the first round's (Y1) is reported beside it.
6. Evaluation. Frame accuracy (and the card's table) of the base, X, Y and an oracle (the base fine-tuned
   on the pool's clean truth, once per repeat) on the clean held-out set, never in any store.

Each repeat draws its own noise and training seeds. The report gives every figure per repeat and as mean
+- sample std over the repeats: base, oracle, X, Y, Y - X and oracle - base. The last line printed is the
headline, ``gain_pp: <mean Y - X in points under uniform noise>``, and Y1 - X is reported beside it.

    python -m training.loop_experiment                          # 3 repeats x 2 noise kinds x 2 rounds
    python -m training.loop_experiment --repeats 1 --noise-kinds uniform --pool-clips 60 --heldout-clips 30
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

import annotations as store
from annotations.analyses import score_stored_frames
from annotations.exports import EXPLANATIONS
from annotations.metrics import card_metrics
from core import vocabulary
from core.config import EMBEDDED_BLIP2, REPO_ROOT, EngineConfig, ModelSpec
from core.engine import load_model, score_frames
from training import synthetic
from training.cli import parse_config
from training.evaluate import format_markdown
from training.finetune import CARD_ADAPT, FeatureBank, FinetuneConfig, check_adapt, run

LABELER = "loop-labeler"
NOISE_KINDS = ("uniform", "semantic", "clip")
HEADLINE_NOISE = "uniform"


@dataclass
class LoopConfig:
    """The experiment's knobs. The defaults (3 repeats x 2 noise kinds x 2 rounds, 21 fine-tunes of ~3 min
    each on one core) take about 70 min, or about 40 min as two processes, one per noise kind; each size says
    why it is what it is."""

    base: str = str(EMBEDDED_BLIP2)
    seed: int = 0
    # The stores, exports and report of the run (replaced at each run; git-ignored under data/).
    work_dir: str = str(REPO_ROOT / "data" / "loop_experiment")
    # X, Y and the oracles land here as model versions the app lists (a rerun replaces them).
    checkpoints_dir: str = str(REPO_ROOT / "data" / "checkpoints")
    name_prefix: str = "loop"

    # --- data: clips of `clip_frames` frames at `fps`, `frames_per_clip` of them kept, evenly spaced
    # 300 clips x 2 frames = 600 pool frames, ~500 of them in the export's train split (80/10/10 by video):
    # enough for the oracle to learn both new styles, few enough that a fine-tune takes a minute or two.
    pool_clips: int = 300
    # 120 clips x 2 frames = 240 held-out frames: one frame is 0.4 pp, so a 5 pp effect is 12 frames.
    heldout_clips: int = 120
    # Frames of one clip are near-copies: 2 per clip (not 8) buys more distinct scenes per frame scored, and
    # gives the export's 10 % validation split ~30 videos to pick each fine-tune's best step on.
    frames_per_clip: int = 2
    clip_frames: int = 24
    fps: float = 12.0
    # Share of clips per style (STYLES): ordinary synthetic clips the base knows, and the two styles its
    # training never includes ("round_pip", "diagonal", "blend_split" and "single" can be mixed in too).
    style_mix: dict = field(default_factory=lambda: {"plain": 0.4, "stickers": 0.3, "blend_stack": 0.3})
    # The held-out set uses photos the pool never shows, so it measures the styles, not the footage.
    heldout_pool: str = "holdout"

    # --- the loop
    # Share of frame labels flipped: the vqwen card's estimate of the noise in raw human labels.
    noise: float = 0.12
    # Noise kinds run side by side, each in its own store; "uniform" is the headline (see the docstring).
    # "clip" (whole videos flipped) runs only when asked: it is a third of the run's time again.
    noise_kinds: tuple[str, ...] = ("uniform", "semantic")
    # Frames the scripted labeler looks at per round (and sets to the truth): a fifth of the pool, under
    # twice the 72 labels the noise flips: room to fix most flips if X ranks them first, far from
    # relabelling everything in one round.
    budget: int = 120
    # Queue strategies worked in turn until the budget is spent (annotations.queue.STRATEGIES).
    strategies: tuple[str, ...] = ("label-issue",)
    # Rounds of the loop: look at `budget` frames, fine-tune, let the new model rank the queue, look again.
    # A labeler's day works this way: after a retrain the queue re-ranks what is left by a model that has
    # learnt from the fixes, and a frame already looked at never comes back. 1 is X -> looks -> Y; with 2,
    # Y1 (the first round's model) is reported beside the final Y.
    rounds: int = 2
    # Independent repeats: each draws its own noise and training seeds; the headline is their mean.
    repeats: int = 3
    # Also fine-tune on the pool's clean truth (once per repeat): the ceiling the corrections move toward,
    # and the check that clean labels teach the base something at all.
    oracle: bool = True

    # --- fine-tuning (the card's recipe; learning rates raised for a small model trained in minutes)
    # What the fine-tune adapts (training.finetune --adapt). The new styles differ from what the base knows
    # in what the vision side sees (a feathered seam, pasted outlines), so a frozen tower cannot tell them
    # from their look-alikes and clean labels have little left to teach: with the card's recipe
    # (CARD_ADAPT: LoRA on the LM + the projector) X ended 2.6 pp under the oracle and the corrections
    # won back 1 pp. LoRA on the tower's last 2 blocks as well lets the labels reach the features.
    adapt: tuple[str, ...] = CARD_ADAPT + ("vision",)
    # The tower's last blocks that "vision" adapts. All 4 were tried: the flips then cost X less, not more
    # (training/README.md).
    vision_blocks: int = 2
    epochs: float = 10.0
    # 0 = epochs decide; > 0 caps each fine-tune (tests, quick trials).
    max_steps: int = 0
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 1e-3
    projector_lr: float = 1e-4
    eval_every: int = 25
    # Tiny matrices gain nothing from a second thread, and on a busy machine threads wait on each other.
    threads: int = 1
    progress: bool = False


# ---------------------------------------------------------------- data: the styles


@dataclass
class Clip:
    """Sampled frames of one synthetic clip, their truth, and how it was drawn."""

    name: str
    style: str
    frames: np.ndarray  # (n, H, W, 3) uint8
    indices: list[int]
    truths: list[synthetic.FrameTruth]


def draw_single_spec(seed: int, size: tuple[int, int], pool: str, avoid: tuple[str, ...] = ()) -> synthetic.FrameSpec:
    """A one-segment single-stream frame spec whose sources are not in `avoid`."""
    for k in range(50):
        spec = synthetic.draw_clip_spec(seed * 101 + k, num_frames=1, size=size, pool=pool, layouts=("single",))
        if not set(spec.segments[0].frame.truth.sources) & set(avoid):
            return spec.segments[0].frame
    raise RuntimeError("could not draw a single stream from another source")


def make_round_mask(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy - (h - 1) / 2) ** 2 / (h / 2) ** 2 + (xx - (w - 1) / 2) ** 2 / (w / 2) ** 2) <= 1.0


def pick_colour(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> np.ndarray:
    return rng.integers(lo, hi, size=3).astype(np.float32)


def draw_sticker(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float,
                 colour: tuple[int, int, int]) -> None:
    """One die-cut sticker (white outline): a smiling face, a heart or a star."""
    white, ink = (255, 255, 255), (20, 20, 20)
    if shape == "face":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour, outline=white, width=max(2, round(r * 0.12)))
        draw.ellipse((cx - r * 0.45, cy - r * 0.35, cx - r * 0.15, cy - r * 0.05), fill=ink)
        draw.ellipse((cx + r * 0.15, cy - r * 0.35, cx + r * 0.45, cy - r * 0.05), fill=ink)
        draw.arc((cx - r * 0.55, cy - r * 0.25, cx + r * 0.55, cy + r * 0.6), 20, 160, fill=ink,
                 width=max(2, round(r * 0.1)))
        return
    if shape == "heart":
        points = [(cx + r * 16 * math.sin(a) ** 3 / 17, cy - r * (13 * math.cos(a) - 5 * math.cos(2 * a)
                   - 2 * math.cos(3 * a) - math.cos(4 * a)) / 17) for a in np.linspace(0, 2 * math.pi, 40)]
    else:
        points = [(cx + r * (1 if k % 2 == 0 else 0.45) * math.sin(k * math.pi / 5),
                   cy - r * (1 if k % 2 == 0 else 0.45) * math.cos(k * math.pi / 5)) for k in range(10)]
    draw.polygon(points, fill=colour, outline=white, width=max(2, round(r * 0.12)))


def grade_to_palette(image: np.ndarray, dark: np.ndarray, light: np.ndarray, strength: float) -> np.ndarray:
    """Map an image's normalised luminance onto a dark -> light duotone, mixed with the original by strength."""
    x = image.astype(np.float32)
    lum = x.mean(-1, keepdims=True)
    lum = np.clip((lum - lum.mean()) / (lum.std() + 1e-3) * 0.22 + 0.5, 0, 1)
    return strength * (dark + (light - dark) * lum) + (1 - strength) * x


def render_style(style: str, seed: int, times: list[float], size: tuple[int, int], pool: str):
    """Frames (len(times), H, W, 3) of a clip in one of the new styles, and its truth.

    >>> frames, truth = render_style("blend_stack", 0, [0.0, 0.5], (448, 252), "train")
    >>> frames.shape, truth.sludge, truth.layout
    ((2, 448, 252, 3), True, 'vertical')
    """
    rng = np.random.default_rng(seed)
    H, W = size
    frames = np.empty((len(times), H, W, 3), dtype=np.uint8)
    main = draw_single_spec(seed, size, pool)
    if style == "stickers":
        count = int(rng.integers(2, 5))
        shapes = [("face", "heart", "star")[int(i)] for i in rng.integers(0, 3, size=count)]
        radii = W * rng.uniform(0.09, 0.18, size=count)
        centres = np.stack([rng.uniform(radii, W - radii), rng.uniform(radii, H - radii)], axis=1)
        colours = [tuple(int(c) for c in pick_colour(rng, 60, 256)) for _ in range(count)]
        bob = rng.uniform(-8, 8, size=(count, 2))  # stickers drift a few px per second, as an editor animates them
        for k, t in enumerate(times):
            frame = Image.fromarray(synthetic.render_frame(main, size, t))
            draw = ImageDraw.Draw(frame)
            for shape, r, (cx, cy), colour, (dx, dy) in zip(shapes, radii, centres, colours, bob):
                draw_sticker(draw, shape, cx + dx * t, cy + dy * t, r, colour)
            frames[k] = np.asarray(frame)
        return frames, synthetic.FrameTruth(
            False, "none", "A single stream with a few stickers on it.",
            "Not sludge: one scene; the stickers are graphics, not a second stream.", sources=main.truth.sources)
    other = draw_single_spec(seed + 7919, size, pool, avoid=main.truth.sources)
    sources = main.truth.sources + other.truth.sources
    if style in ("blend_stack", "blend_split"):
        first, second = main.streams[0], other.streams[0]  # top and bottom, or left and right
        stacked = style == "blend_stack"
        extent = H if stacked else W  # a stack blends down the frame, a split across it
        seam, width = rng.uniform(0.35, 0.65) * extent, rng.uniform(0.1, 0.25) * extent
        ramp = np.clip((np.arange(extent, dtype=np.float32) - (seam - width / 2)) / width, 0, 1)
        blend = ramp[:, None, None] if stacked else ramp[None, :, None]
        dark, light = pick_colour(rng, 0, 90), pick_colour(rng, 150, 256)
        strength = rng.uniform(0.75, 1.0)
        for k, t in enumerate(times):
            a = np.asarray(synthetic.render_stream(first, W, H, t))
            b = np.asarray(synthetic.render_stream(second, W, H, t))
            a, b = grade_to_palette(a, dark, light, strength), grade_to_palette(b, dark, light, strength)
            frames[k] = np.clip(a * (1 - blend) + b * blend, 0, 255).astype(np.uint8)
        layout, placed = ("vertical", "stacked top and bottom") if stacked else ("horizontal", "side by side")
        return frames, synthetic.FrameTruth(
            True, layout, f"Two streams {placed}, blended at the seam, in one colour grade.",
            "Sludge: two unrelated streams share the frame; the seam is only blurred.", sources=sources)
    if style == "round_pip":
        d = int(W * rng.uniform(0.35, 0.55))
        cx, cy = rng.uniform(d / 2 + 4, W - d / 2 - 4), rng.uniform(d / 2 + 4, H - d / 2 - 4)
        x0, y0 = int(cx - d / 2), int(cy - d / 2)
        mask, ring = make_round_mask(d, d), make_round_mask(d + 6, d + 6)
        colour = np.array(((255, 255, 255), (0, 0, 0), (255, 200, 0))[int(rng.integers(3))], dtype=np.uint8)
        for k, t in enumerate(times):
            frame = synthetic.render_frame(main, size, t)
            inset = synthetic.render_frame(other, (d, d), t)
            frame[y0 - 3:y0 + d + 3, x0 - 3:x0 + d + 3][ring] = colour
            frame[y0:y0 + d, x0:x0 + d][mask] = inset[mask]
            frames[k] = frame
        return frames, synthetic.FrameTruth(True, "pip", "", "", sources=sources)
    if style == "diagonal":
        left, right = rng.uniform(0.25, 0.75, size=2) * H
        if abs(left - right) < 0.2 * H:
            right = min(max(left + (0.3 * H if left < H / 2 else -0.3 * H), 0), H)
        yy, xx = np.mgrid[0:H, 0:W]
        below = yy > left + (right - left) * xx / max(W - 1, 1)
        for k, t in enumerate(times):
            frame = synthetic.render_frame(main, size, t)
            frame[below] = synthetic.render_frame(other, size, t)[below]
            frames[k] = frame
        return frames, synthetic.FrameTruth(True, "other", "", "", sources=sources)
    raise ValueError(f"unknown style {style!r}; expected one of {', '.join(STYLES)}")


# Style -> the truth it carries ("mixed": ordinary synthetic clips, whose segments carry their own).
STYLES = {"plain": "mixed", "single": "not sludge", "stickers": "not sludge", "blend_stack": "sludge (vertical)",
          "blend_split": "sludge (horizontal)", "round_pip": "sludge (pip)", "diagonal": "sludge (other)"}
# The styles the base's training never includes: the semantic noise falls on their frames first.
NEW_STYLES = ("stickers", "blend_stack", "blend_split", "round_pip", "diagonal")


def make_clips(seed: int, count: int, cfg: LoopConfig, pool: str, prefix: str) -> list[Clip]:
    """`count` clips drawn by style from cfg.style_mix, `frames_per_clip` frames each, with per-frame truth.

    >>> [c.style for c in make_clips(0, 3, LoopConfig(frames_per_clip=1), "train", "pool")]
    ['stickers', 'plain', 'plain']
    """
    unknown = set(cfg.style_mix) - set(STYLES)
    if unknown:
        raise ValueError(f"unknown styles {sorted(unknown)} in style_mix; expected some of {', '.join(STYLES)}")
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
            frames, truth = render_style(style, clip_seed, times, size, pool)
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


# ---------------------------------------------------------------- raw labels


def flip_labels(truth: dict[int, synthetic.FrameTruth], rate: float, seed: int,
                prefer: set[int] = frozenset(), clips: dict[int, str] | None = None) -> dict[int, tuple[bool, str]]:
    """Raw labels: (sludge, layout) per frame, with round(rate x frames) sludge labels flipped by a seed.

    The flips are drawn from `prefer` first (semantic noise: the frames people misread), then from the
    rest; with no `prefer` they are uniform over all frames. With `clips` (frame id -> its video) whole
    videos are drawn uniformly instead, every frame of a drawn video flipped, until the count is reached
    (the last video may overshoot it by its other frames). A flipped sludge frame gets layout "none"; a
    flipped single stream gets a random sludge layout (one per video when whole videos flip).

    >>> truth = {1: synthetic.FrameTruth(True, "pip", "", ""), 2: synthetic.FrameTruth(False, "none", "", "")}
    >>> sorted(flip_labels(truth, 0.5, seed=0).values())  # the single stream flipped to a sludge layout
    [(True, 'pip'), (True, 'pip')]
    >>> truth[3] = synthetic.FrameTruth(False, "none", "", "")
    >>> raw = flip_labels(truth, 0.3, seed=1, clips={1: "a", 2: "b", 3: "b"})
    >>> sorted(f for f in raw if raw[f][0] != truth[f].sludge) in ([1], [2, 3])
    True
    """
    rng = np.random.default_rng(seed)
    frame_ids = sorted(truth)
    count = round(rate * len(frame_ids))
    layout_of: dict[int, str] = {}
    if clips is not None:
        by_clip: dict[str, list[int]] = {}
        for frame_id in frame_ids:
            by_clip.setdefault(clips[frame_id], []).append(frame_id)
        flipped: set[int] = set()
        for clip in rng.permutation(sorted(by_clip)).tolist():
            if len(flipped) >= count:
                break
            layout = vocabulary.LAYOUTS[int(rng.integers(len(vocabulary.LAYOUTS)))]
            flipped |= set(by_clip[clip])
            layout_of.update((f, layout) for f in by_clip[clip])
    else:
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
            raw[frame_id] = (True, layout_of.get(frame_id)
                             or vocabulary.LAYOUTS[int(rng.integers(len(vocabulary.LAYOUTS)))])
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


def write_clean_export(raw_export: Path, truth: dict[int, synthetic.FrameTruth], out: Path) -> Path:
    """The raw export with every label set to the truth (same frames, same splits): the oracle's data. The
    explanation is the export's sentence for the true label, so the explain task agrees with the truth too."""
    records = [json.loads(line) for line in (raw_export / "training.jsonl").read_text().splitlines()]
    for record in records:
        t = truth[record["frame_id"]]
        record.update(sludge=t.sludge, layout=t.layout, explanation=EXPLANATIONS[t.layout if t.sludge else "none"],
                      provenance="raw")
        record["image"] = str((raw_export / record["image"]).resolve())
    out.mkdir(parents=True)
    (out / "training.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (out / "manifest.json").write_text(json.dumps({"snapshot_id": "clean-truth", "counts": {}}) + "\n")
    return out


# ---------------------------------------------------------------- the scripted labeler


def work_queue(db, labeler: str, truth: dict[int, synthetic.FrameTruth], budget: int,
               strategies: tuple[str, ...], model_id: str, batch: int = 16) -> dict:
    """Look at up to `budget` frames from the queue, strategy by strategy, and set each to its truth.

    Every frame looked at gets a sludge event (a fix or a confirmation) through ``correct_label``, naming
    the revision the queue showed; a wrong layout is fixed too. Returns counts of what was done.

    >>> work_queue(db, "loop-labeler", truth, 120, ("label-issue",), "x@1")["fixed"]  # doctest: +SKIP
    61
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
    """The card's table for a model on clips with known truth (frames scored by core.engine.score_frames),
    plus frame accuracy per style."""
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


def summarise(values: list[float]) -> dict:
    """Mean and sample standard deviation (None for a single value) of per-repeat figures.

    >>> summarise([1.0, 2.0, 3.0])
    {'values': [1.0, 2.0, 3.0], 'mean': 2.0, 'std': 1.0}
    """
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return {"values": [round(float(v), 2) for v in values], "mean": round(float(np.mean(values)), 2),
            "std": None if std is None else round(std, 2)}


# ---------------------------------------------------------------- one repeat


class Finetuner:
    """Runs the experiment's fine-tunes: same base, same recipe, one shared bank of frozen vision features;
    X, Y and the oracle of a repeat differ only in their export."""

    def __init__(self, cfg: LoopConfig, bank: FeatureBank | None):
        self.cfg, self.bank = cfg, bank

    def config(self, export: Path, name: str, db_path: Path, seed: int) -> FinetuneConfig:
        """The FinetuneConfig of one model of the experiment; it refuses a bad ``adapt`` on creation."""
        cfg = self.cfg
        return FinetuneConfig(
            export=str(export), base=cfg.base, name=name, out_dir=cfg.checkpoints_dir, seed=seed,
            threads=cfg.threads, adapt=cfg.adapt, vision_blocks=cfg.vision_blocks, epochs=cfg.epochs,
            max_steps=cfg.max_steps, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum, lr=cfg.lr,
            projector_lr=cfg.projector_lr, eval_every=cfg.eval_every, log_every=0, progress=cfg.progress,
            db=str(db_path), media=str(db_path.parent / "media"), register=True)

    def finetune(self, export: Path, name: str, db, db_path: Path, seed: int, timings: dict):
        """Fine-tune the base on an export; returns the FinetuneResult and the saved model, loaded."""
        mark = time.time()
        result = run(self.config(export, name, db_path, seed), bank=self.bank, db=db)
        timings[name] = round(time.time() - mark, 1)
        return result, load_model(ModelSpec(str(result.folder)))


def prepare_store(cfg: LoopConfig, work: Path, pool: list[Clip], kind: str, noise_seed: int) -> dict:
    """A fresh store of the pool with raw labels of one noise kind, and its training export."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    db_path = work / "store.db"
    db = store.open_store(db_path, work / "media")
    truth, styles = store_clips(db, pool, cfg.fps)
    misread = {f for f, style in styles.items() if style in NEW_STYLES}
    clips = {f: store.get_frame(db, f)["video_id"] for f in truth} if kind == "clip" else None
    raw = flip_labels(truth, cfg.noise, noise_seed, prefer=misread if kind == "semantic" else set(), clips=clips)
    import_raw_labels(db, raw, work / "raw_labels.jsonl")
    manifest = store.export_training_set(db, work / "export-raw")
    flipped = [f for f in truth if raw[f][0] != truth[f].sludge]
    return {"db": db, "db_path": db_path, "truth": truth, "styles": styles, "export": work / "export-raw",
            "manifest": manifest, "flipped": len(flipped),
            "flipped_new_styles": sum(styles[f] in NEW_STYLES for f in flipped)}


def run_loop(cfg: LoopConfig, tuner: Finetuner, prepared: dict, heldout: list[Clip], kind: str, repeat: int,
             train_seed: int, timings: dict) -> dict:
    """X on the raw labels -> per round: the scripted labeler works the queue ranked by the newest model, and
    the base is fine-tuned again on the corrected export -> every model scored on the held-out set. Y is the
    last round's model."""
    db, db_path, truth = prepared["db"], prepared["db_path"], prepared["truth"]
    tag = f"{kind}-r{repeat}"
    x, lm_x = tuner.finetune(prepared["export"], f"{cfg.name_prefix}-x-{tag}", db, db_path, train_seed, timings)
    store.add_labeler(db, LABELER, "reviewer")
    ranker, lm_ranker = x, lm_x
    rounds, done = [], {"looked": 0, "fixed": 0, "layout_fixed": 0}
    for number in range(1, cfg.rounds + 1):
        last = number == cfg.rounds
        score_stored_frames(lm_ranker, db, sorted(truth))  # the queue ranks every stored frame by these scores
        mark = time.time()
        looked = work_queue(db, LABELER, truth, cfg.budget, cfg.strategies, ranker.model_id)
        timings[f"corrections-{tag}-{number}"] = round(time.time() - mark, 1)
        for key in done:
            done[key] += looked[key]
        folder = db_path.parent / ("export-corrected" if last else f"export-corrected-{number}")
        # Named: the store holds the base's and the rankers' predictions (no pseudo-labels go in; the id is
        # only recorded).
        manifest = store.export_training_set(db, folder, model_id=ranker.model_id)
        wrong = sum(1 for f in store.current_labels(db) if f["sludge"] != truth[f["frame_id"]].sludge)
        name = f"{cfg.name_prefix}-y-{tag}" if last else f"{cfg.name_prefix}-y{number}-{tag}"
        y, lm_y = tuner.finetune(folder, name, db, db_path, train_seed, timings)
        mark = time.time()
        figures = evaluate_clips(lm_y, heldout)
        timings[f"heldout-{tag}-{number}"] = round(time.time() - mark, 1)
        rounds.append({"round": number, "ranked_by": ranker.model_id, "corrections": looked,
                       "wrong_after_corrections": wrong, "export": manifest["snapshot_id"],
                       "export_dir": str(folder), "model": y.model_id, "best_step": y.train.best_step,
                       "figures": figures, "accuracy_pct": round(100 * figures["frames"]["accuracy"], 2)})
        ranker, lm_ranker = y, lm_y
    # Y scores no pool frames (no round follows it to rank); run() stored each model's predictions on its
    # export's test split, which is what the app's Review tab sets side by side.
    mark = time.time()
    figures = {"x": evaluate_clips(lm_x, heldout), "y": rounds[-1]["figures"]}
    timings[f"heldout-{tag}"] = round(time.time() - mark, 1)
    accuracy = {k: round(100 * v["frames"]["accuracy"], 2) for k, v in figures.items()}
    return {
        "noise": kind, "repeat": repeat, "store": str(db_path), "pool_frames": len(truth),
        "flipped": prepared["flipped"], "flipped_new_styles": prepared["flipped_new_styles"],
        "corrections": done, "wrong_after_corrections": rounds[-1]["wrong_after_corrections"],
        "exports": {"raw": prepared["manifest"]["snapshot_id"], "corrected": rounds[-1]["export"],
                    "corrected_dir": rounds[-1]["export_dir"]},
        "models": {"x": x.model_id, "y": rounds[-1]["model"]},
        "best_steps": {"x": x.train.best_step, "y": rounds[-1]["best_step"]},
        "accuracy_pct": accuracy, "gain_pp": round(accuracy["y"] - accuracy["x"], 2), "figures": figures,
        "rounds": [{k: v for k, v in r.items() if k != "figures"} for r in rounds],
    }


def run_repeat(cfg: LoopConfig, repeat: int, pool: list[Clip], heldout: list[Clip], tuner: Finetuner) -> dict:
    """One repeat: its own noise and training seeds, a store per noise kind, one oracle for all of them."""
    seeds = {"noise": cfg.seed + 1000 * repeat + 1, "train": cfg.seed + 1000 * repeat + 2}
    timings: dict[str, float] = {}
    work = Path(cfg.work_dir) / f"repeat-{repeat}"
    mark = time.time()
    prepared = {kind: prepare_store(cfg, work / kind, pool, kind, seeds["noise"]) for kind in cfg.noise_kinds}
    timings["stores"] = round(time.time() - mark, 1)
    out: dict = {"repeat": repeat, "seeds": seeds, "loops": {}, "timings_s": timings}
    if cfg.oracle:
        first = prepared[cfg.noise_kinds[0]]
        clean = write_clean_export(first["export"], first["truth"], work / "export-clean")
        oracle, lm_oracle = tuner.finetune(clean, f"{cfg.name_prefix}-oracle-r{repeat}", first["db"],
                                           first["db_path"], seeds["train"], timings)
        figures = evaluate_clips(lm_oracle, heldout)
        out["oracle"] = {"model": oracle.model_id, "best_step": oracle.train.best_step, "figures": figures,
                         "accuracy_pct": round(100 * figures["frames"]["accuracy"], 2)}
        print(f"repeat {repeat}: oracle {out['oracle']['accuracy_pct']:.2f} % by style "
              f"{figures['accuracy_by_style']}", flush=True)
    for kind in cfg.noise_kinds:
        out["loops"][kind] = run_loop(cfg, tuner, prepared[kind], heldout, kind, repeat, seeds["train"], timings)
        prepared[kind]["db"].conn.close()
    return out


# ---------------------------------------------------------------- the report


def summarise_repeats(base_pct: float, repeats: list[dict], kinds: tuple[str, ...]) -> dict:
    """Per-repeat figures and their mean +- sample std: base, oracle, oracle - base, and per noise kind X, Y,
    Y - X (all frame accuracy on the held-out set, in % or points)."""
    rows = {"base": summarise([base_pct] * len(repeats))}
    if all("oracle" in r for r in repeats):
        oracle = [r["oracle"]["accuracy_pct"] for r in repeats]
        rows["oracle"] = summarise(oracle)
        rows["oracle_gain_pp"] = summarise([o - base_pct for o in oracle])
    for kind in kinds:
        loops = [r["loops"][kind] for r in repeats]
        rows[f"{kind}.x"] = summarise([lp["accuracy_pct"]["x"] for lp in loops])
        rows[f"{kind}.y"] = summarise([lp["accuracy_pct"]["y"] for lp in loops])
        rows[f"{kind}.gain_pp"] = summarise([lp["accuracy_pct"]["y"] - lp["accuracy_pct"]["x"] for lp in loops])
        if len(loops[0]["rounds"]) > 1:  # the first round's model beside the last one's
            first = [lp["rounds"][0]["accuracy_pct"] for lp in loops]
            rows[f"{kind}.y1"] = summarise(first)
            rows[f"{kind}.gain1_pp"] = summarise([f - lp["accuracy_pct"]["x"] for f, lp in zip(first, loops)])
    return rows


ROW_NAMES = {"base": "base", "oracle": "oracle (clean truth)", "oracle_gain_pp": "oracle - base (pp)",
             "x": "X (raw labels)", "y": "Y (after every round of the queue's corrections)",
             "gain_pp": "**Y - X (pp)**", "y1": "Y1 (after the first round only)", "gain1_pp": "Y1 - X (pp)"}


def format_summary(summary: dict, title: str) -> str:
    """The summary as a markdown table: one row per figure, one column per repeat, then mean +- std."""
    n = len(next(iter(summary.values()))["values"])
    lines = [f"**{title}**", "", "| held-out frame accuracy (%) | " + " | ".join(f"r{i}" for i in range(n))
             + " | mean ± std |", "|---|" + "---:|" * (n + 1)]
    for key, row in summary.items():
        kind, _, what = key.rpartition(".")
        name = f"{kind}: {ROW_NAMES[what]}" if kind else ROW_NAMES[what]
        std = "n/a" if row["std"] is None else f"{row['std']:.2f}"
        values = " | ".join(f"{v:.2f}" for v in row["values"])
        lines.append(f"| {name} | {values} | {row['mean']:.2f} ± {std} |")
    return "\n".join(lines) + "\n"


def format_styles(base: dict, repeats: list[dict], kinds: tuple[str, ...]) -> str:
    """Frame accuracy per style, mean over the repeats: where the base is wrong and what each model fixed."""
    columns = {"base": [base]}
    if all("oracle" in r for r in repeats):
        columns["oracle"] = [r["oracle"]["figures"] for r in repeats]
    for kind in kinds:
        columns[f"X {kind}"] = [r["loops"][kind]["figures"]["x"] for r in repeats]
        columns[f"Y {kind}"] = [r["loops"][kind]["figures"]["y"] for r in repeats]
    styles = sorted(base["accuracy_by_style"])
    lines = ["| style | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for style in styles:
        cells = [100 * np.mean([f["accuracy_by_style"][style] for f in figs]) for figs in columns.values()]
        lines.append(f"| {style} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- main


def check_config(cfg: LoopConfig) -> None:
    """Refuse a bad config before minutes of data and training, not after."""
    bad = set(cfg.noise_kinds) - set(NOISE_KINDS)
    if bad or not cfg.noise_kinds:
        raise ValueError(f"noise_kinds must be some of {', '.join(NOISE_KINDS)}, got {list(cfg.noise_kinds)}")
    bad = set(cfg.strategies) - set(store.STRATEGIES)
    if bad:
        raise ValueError(f"unknown queue strategies {sorted(bad)}; expected some of {', '.join(store.STRATEGIES)}")
    if cfg.rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {cfg.rounds}")
    if cfg.repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {cfg.repeats}")
    unknown = set(cfg.style_mix) - set(STYLES)
    if unknown:
        raise ValueError(f"unknown styles {sorted(unknown)} in style_mix; expected some of {', '.join(STYLES)}")
    check_adapt(cfg.adapt)


def run_experiment(cfg: LoopConfig) -> dict:
    """The whole experiment; returns the report it also writes to work_dir/report.{json,md}."""
    check_config(cfg)
    started = time.time()
    # seed
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)

    # model: the base as the app loads it, measured on the held-out set before anything is trained
    base = load_model(ModelSpec(cfg.base), EngineConfig(device="cpu"))

    # data: one pool and one held-out set for every repeat (repeats differ in their noise and training)
    work = Path(cfg.work_dir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pool = make_clips(cfg.seed, cfg.pool_clips, cfg, "train", "pool")
    heldout = make_clips(cfg.seed + 1, cfg.heldout_clips, cfg, cfg.heldout_pool, "heldout")
    print(f"pool {sum(len(c.indices) for c in pool)} frames in {len(pool)} clips, held-out "
          f"{sum(len(c.indices) for c in heldout)} frames in {len(heldout)} clips ({time.time() - started:.0f}s)",
          flush=True)
    base_figures = evaluate_clips(base, heldout)
    base_pct = round(100 * base_figures["frames"]["accuracy"], 2)
    print(f"base held-out accuracy {base_pct:.2f} % by style {base_figures['accuracy_by_style']}", flush=True)

    # The frozen vision side is the base's in every run, so its features are computed once for all of them.
    tuner = Finetuner(cfg, FeatureBank(base))
    repeats = []
    for repeat in range(cfg.repeats):
        result = run_repeat(cfg, repeat, pool, heldout, tuner)
        line = f"repeat {repeat}: base {base_pct:.2f}"
        if "oracle" in result:
            line += f", oracle {result['oracle']['accuracy_pct']:.2f}"
        for kind, lp in result["loops"].items():
            line += (f"; {kind}: flipped {lp['flipped']}, fixed {lp['corrections']['fixed']} of "
                     f"{lp['corrections']['looked']} looked at, X {lp['accuracy_pct']['x']:.2f} Y by round "
                     + " ".join(f"{r['accuracy_pct']:.2f}" for r in lp["rounds"]))
        print(f"{line} ({time.time() - started:.0f}s)", flush=True)
        repeats.append(result)

    summary = summarise_repeats(base_pct, repeats, cfg.noise_kinds)
    headline = HEADLINE_NOISE if HEADLINE_NOISE in cfg.noise_kinds else cfg.noise_kinds[0]
    report = {
        "config": asdict(cfg),
        "headline_noise": headline,
        "gain_pp": summary[f"{headline}.gain_pp"]["mean"],
        "summary": summary,
        "base": base_figures,
        "repeats": repeats,
        "seconds": round(time.time() - started, 1),
    }
    n_frames, n_clips = base_figures["frames"]["n"], base_figures["videos"]["n"]
    table = format_summary(summary, f"Clean held-out set: {n_frames} frames of {n_clips} clips; {cfg.repeats} "
                                    f"repeat(s); {cfg.noise:.0%} label noise; headline: {headline} noise")
    styles = format_styles(base_figures, repeats, cfg.noise_kinds)
    cards = {"base": base_figures}
    if "oracle" in repeats[0]:
        cards["oracle (r0)"] = repeats[0]["oracle"]["figures"]
    for kind in cfg.noise_kinds:
        cards.update({f"X {kind} (r0)": repeats[0]["loops"][kind]["figures"]["x"],
                      f"Y {kind} (r0)": repeats[0]["loops"][kind]["figures"]["y"]})
    markdown = (table + "\nFrame accuracy (%) by style, mean over the repeats:\n\n" + styles + "\n"
                + format_markdown(cards, "The card's table, repeat 0") + f"\ngain_pp: {report['gain_pp']}\n")
    (work / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    (work / "report.md").write_text(markdown)
    print(table + "\n" + styles, flush=True)
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
