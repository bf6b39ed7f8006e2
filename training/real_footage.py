"""The real-footage check: clips composed from pictures the models never saw, judged the way the app does.

Each clip is one layout for its whole length (a single scene, or a vertical, horizontal, picture-in-picture
or collage composite), composed from the held-out packages only (``real-holdout``: other photographers,
other illustrators, another game's textures), moving as footage does, at real short-form and landscape
sizes, and encoded as H.264 with PyAV. Two composers make the clips, half each:

* ``renderer``: the training renderer (``training.synthetic``) with the held-out pictures and game, and
  none of its procedural scenes (those are training sources): captions, dividers, letterbox, an app's
  interface, colour jitter and the single scenes with straight edges that are not a split;
* ``plain``: a few lines of plain compositing (``make_plain_clips``): still pictures cropped to fill their
  tiles, moving by a slow zoom and pan, pasted with nothing else, as an editor stacks two clips;
* ``footage``: the same plain compositing of real videos as they move (``make_footage_clips``): camera
  footage (a cockatoo, an office, a dog, bikes, a man in a car) and an animated short, from the held-out
  footage packages, so a single scene is a real shot and a stack is two real shots playing at once.

The app's own path then decodes and samples each clip (``core.analyze.analyze_video``) and the model
decides it. Figures, over all clips and per composer:

* video level: the verdict (majority of sampled frames, ties to sludge) against the clip's truth;
* single-scene frames called not sludge; sludge frames called sludge;
* layout accuracy over sludge frames (the highest of the model's layout scores).

``bench/bench_real_video.py`` runs it at full size; ``tests/test_real_footage.py`` at a small one.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core.vocabulary import LAYOUTS, NO_LAYOUT
from training import synthetic

# The clip kinds: a single scene and the four sludge layouts.
CLIP_LAYOUTS = ("single",) + LAYOUTS
# Real sizes, (height, width): portrait short-form and landscape footage.
REAL_SIZES = ((1920, 1080), (720, 1280))


@dataclass(frozen=True)
class RealClip:
    """One encoded clip and what it truly shows."""

    path: Path
    # "none" for a single scene, else one of LAYOUTS.
    layout: str
    size: tuple[int, int]
    # Where its streams come from, by package ("gnome", "ukui", "game:openarena"): what a model misreads,
    # told apart by the kind of picture.
    sources: tuple[str, ...] = ()
    # What made it: "renderer" (make_real_clips) or "plain" (make_plain_clips).
    composer: str = "renderer"

    @property
    def sludge(self) -> bool:
        return self.layout != NO_LAYOUT


def make_real_clips(folder: str | os.PathLike, per_layout: int = 4, sizes: tuple[tuple[int, int], ...] = REAL_SIZES,
                    num_frames: int = 24, fps: float = 12.0, seed: int = 50_000,
                    pool: str = "real-holdout") -> list[RealClip]:
    """Render and encode `per_layout` clips of each kind per size with the training renderer, from the
    pool's pictures and game only (or reuse ones already in `folder`).

    Clip k of a kind draws its spec from seed ``seed + k + 1000 x kind``, redrawn (``+ 10_000`` a time) while
    any stream is one of the renderer's procedural scenes, which every pool shares with training. The file is
    named by the seed it was drawn from and written once (``synthetic.write_clip_once``).

    >>> clips = make_real_clips("/tmp/real", per_layout=1, sizes=((64, 36),), num_frames=4)  # doctest: +SKIP
    >>> [c.layout for c in clips]  # doctest: +SKIP
    ['none', 'vertical', 'horizontal', 'pip', 'other']
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clips: list[RealClip] = []
    for size in sizes:
        for kind in CLIP_LAYOUTS:
            for k in range(per_layout):
                layout = NO_LAYOUT if kind == "single" else kind
                spec_seed, spec = draw_heldout_spec(seed + k + 1000 * CLIP_LAYOUTS.index(kind), num_frames, fps,
                                                    size, pool, kind)
                path = synthetic.write_clip_once(folder / f"{size[0]}x{size[1]}-{num_frames}f-{kind}-s{spec_seed}.mp4",
                                                 lambda spec=spec: synthetic.render_clip(spec)[0], fps)
                clips.append(RealClip(path, layout, size, name_sources(spec)))
    return clips


def draw_heldout_spec(seed: int, num_frames: int, fps: float, size: tuple[int, int], pool: str,
                      kind: str) -> tuple[int, synthetic.ClipSpec]:
    """The first clip spec from `seed` on (in steps of 10_000) none of whose streams is a procedural scene,
    and the seed that drew it. Drawing a spec is cheap (no pixels).

    >>> seed, spec = draw_heldout_spec(50_000, 4, 12.0, (64, 36), "real-holdout", "vertical")
    >>> [stream.source in synthetic.PROCEDURAL_NOUNS for stream in spec.segments[0].frame.streams]
    [False, False]
    """
    for attempt in range(200):
        spec_seed = seed + 10_000 * attempt
        spec = synthetic.draw_clip_spec(spec_seed, num_frames, fps, size, pool=pool, layouts=(kind,))
        streams = [stream.source for segment in spec.segments for stream in segment.frame.streams]
        if not set(streams) & set(synthetic.PROCEDURAL_NOUNS):
            return spec_seed, spec
    raise RuntimeError(f"no {kind} clip of held-out sources only in 200 draws from seed {seed}")


@dataclass(frozen=True)
class PlainStream:
    """One picture moving as a phone or an editor moves a still: a slow zoom and a pan across the clip."""

    picture: str
    zoom: tuple[float, float]  # at the first and the last frame (1.0: the picture just fills its tile)
    centre: tuple[tuple[float, float], tuple[float, float]]  # relative crop centre, first and last frame

    def render(self, width: int, height: int, progress: float) -> np.ndarray:
        """The stream at `progress` (0..1 through the clip), cropped to fill a width x height tile."""
        from training.imagery import load_image

        image = load_image(self.picture)
        zoom = self.zoom[0] + (self.zoom[1] - self.zoom[0]) * progress
        (x0, y0), (x1, y1) = self.centre
        cx, cy = x0 + (x1 - x0) * progress, y0 + (y1 - y0) * progress
        crop_w = min(image.width, image.height * width / height) / zoom
        crop_h = crop_w * height / width
        left = float(np.clip(cx * image.width - crop_w / 2, 0, image.width - crop_w))
        top = float(np.clip(cy * image.height - crop_h / 2, 0, image.height - crop_h))
        tile = image.resize((width, height), Image.BILINEAR, box=(left, top, left + crop_w, top + crop_h))
        return np.asarray(tile)


def draw_plain_stream(rng: np.random.Generator, picture: str) -> PlainStream:
    """A picture's slow move: a zoom of 5-20 % over the clip from 1.0-1.15, between two central crop points."""
    z0 = float(rng.uniform(1.0, 1.15))
    centre = tuple((float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.35, 0.65))) for _ in range(2))
    return PlainStream(picture, (z0, z0 + float(rng.uniform(0.05, 0.2))), centre)


def plain_tiles(rng: np.random.Generator, layout: str, size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Pixel boxes (x0, y0, x1, y1) of a layout's streams, the main stream first.

    >>> plain_tiles(np.random.default_rng(0), "horizontal", (100, 200))[1][2]
    200
    """
    H, W = size
    if layout == NO_LAYOUT:
        return [(0, 0, W, H)]
    if layout == "vertical":
        y = round(H * rng.uniform(0.4, 0.6))
        return [(0, 0, W, y), (0, y, W, H)]
    if layout == "horizontal":
        x = round(W * rng.uniform(0.4, 0.6))
        return [(0, 0, x, H), (x, 0, W, H)]
    if layout == "pip":
        w = round(W * rng.uniform(0.3, 0.45))
        h = min(round(w * (9 / 16 if rng.random() < 0.5 else 16 / 9)), round(H * 0.45))
        margin = round(min(H, W) * 0.04)
        x0 = margin if rng.random() < 0.5 else W - margin - w
        y0 = margin if rng.random() < 0.5 else H - margin - h
        return [(0, 0, W, H), (x0, y0, x0 + w, y0 + h)]
    x, y = round(W * rng.uniform(0.4, 0.6)), round(H * rng.uniform(0.4, 0.6))
    if rng.random() < 0.5:  # a two-by-two grid
        return [(0, 0, x, y), (x, 0, W, y), (0, y, x, H), (x, y, W, H)]
    return [(0, 0, W, y), (0, y, x, H), (x, y, W, H)]  # one wide tile above two side by side


def render_plain_clip(streams: list[PlainStream], tiles: list[tuple[int, int, int, int]], size: tuple[int, int],
                      num_frames: int) -> np.ndarray:
    """Frames (num_frames, H, W, 3): each stream pasted into its tile, later tiles over earlier ones."""
    frames = np.zeros((num_frames, *size, 3), dtype=np.uint8)
    for t in range(num_frames):
        progress = t / max(num_frames - 1, 1)
        for stream, (x0, y0, x1, y1) in zip(streams, tiles):
            frames[t, y0:y1, x0:x1] = stream.render(x1 - x0, y1 - y0, progress)
    return frames


def draw_plain_layouts(folder: Path, sizes: tuple[tuple[int, int], ...], per_layout: int, seed: int,
                       num_frames: int):
    """What the plain composers iterate: per size, clip kind and clip k, its layout, the file it is cached
    under in `folder` (``1920x1080-24f-vertical-60000.mp4``: size, length, kind and seed, so a cached clip is
    found by name; the folder is made), its own rng (seeded by all four, so a clip never depends on the
    others) and the tiles its streams fill, drawn first from that rng.

    >>> [(layout, path.name) for _, layout, path, _, _ in draw_plain_layouts(Path("/tmp/plain"), ((64, 36),), 1,
    ...                                                                       60_000, 24)][:2]
    [('none', '64x36-24f-single-60000.mp4'), ('vertical', '64x36-24f-vertical-60000.mp4')]
    """
    folder.mkdir(parents=True, exist_ok=True)
    for size in sizes:
        for kind in CLIP_LAYOUTS:
            for k in range(per_layout):
                layout = NO_LAYOUT if kind == "single" else kind
                rng = np.random.default_rng([seed, k, CLIP_LAYOUTS.index(kind), *size])
                path = folder / f"{size[0]}x{size[1]}-{num_frames}f-{kind}-{seed + k}.mp4"
                yield size, layout, path, rng, plain_tiles(rng, layout, size)


def make_plain_clips(folder: str | os.PathLike, per_layout: int = 4, sizes: tuple[tuple[int, int], ...] = REAL_SIZES,
                     num_frames: int = 24, fps: float = 12.0, seed: int = 60_000,
                     pool: str = "real-holdout") -> list[RealClip]:
    """Clips composed by plain code instead of the training renderer: still pictures of the pool's packages
    only (no procedural scenes, no game textures), each cropped to fill its tile and moving by a slow zoom
    and pan, pasted side by side, stacked, inset or tiled with no divider, caption, border, interface or
    colour grading, then H.264-encoded. Nothing in them comes from what the training frames are drawn with,
    so a model cannot lean on the renderer's habits. Cached in `folder` like make_real_clips.

    >>> clips = make_plain_clips("/tmp/plain", per_layout=1, sizes=((64, 36),), num_frames=4)  # doctest: +SKIP
    >>> [c.layout for c in clips]  # doctest: +SKIP
    ['none', 'vertical', 'horizontal', 'pip', 'other']
    """
    from training.imagery import check_pool_installed, list_images

    part = pool.split("-", 1)[1]
    check_pool_installed(part, pool)  # as every draw from a real pool is: a partial pool makes other clips
    pictures = list_images(part)
    if len(pictures) < 4:
        raise ValueError(f"pool {pool!r} has {len(pictures)} pictures installed; plain clips need at least 4")
    clips: list[RealClip] = []
    for size, layout, path, rng, tiles in draw_plain_layouts(Path(folder), sizes, per_layout, seed, num_frames):
        chosen = rng.choice(len(pictures), size=len(tiles), replace=False)
        streams = [draw_plain_stream(rng, pictures[int(i)]) for i in chosen]
        render = functools.partial(render_plain_clip, streams, tiles, size, num_frames)
        synthetic.write_clip_once(path, render, fps)
        names = (s.picture.split("/", 1)[0] for s in streams)
        clips.append(RealClip(path, layout, size, tuple(dict.fromkeys(names)), composer="plain"))
    return clips


@dataclass(frozen=True)
class FootageStream:
    """One real video playing in a tile from a moment on, cropped to fill it around a relative centre."""

    video: str
    # Where it starts, as a share of the time the video leaves to play the clip from there (0: its start).
    start: float
    centre: tuple[float, float]

    def render(self, width: int, height: int, num_frames: int, fps: float) -> list[np.ndarray]:
        """The stream's frames, each cropped to fill a width x height tile."""
        from training.imagery import read_video_segment, video_duration

        start_s = self.start * max(video_duration(self.video) - num_frames / fps, 0.0)
        tiles = []
        for image in read_video_segment(self.video, start_s, num_frames, fps):
            crop_w = min(image.width, image.height * width / height)
            crop_h = min(image.height, crop_w * height / width)
            left = float(np.clip(self.centre[0] * image.width - crop_w / 2, 0, image.width - crop_w))
            top = float(np.clip(self.centre[1] * image.height - crop_h / 2, 0, image.height - crop_h))
            tiles.append(np.asarray(image.resize((width, height), Image.BILINEAR,
                                                 box=(left, top, left + crop_w, top + crop_h))))
        return tiles


def render_footage_clip(streams: list[FootageStream], tiles: list[tuple[int, int, int, int]], size: tuple[int, int],
                        num_frames: int, fps: float) -> np.ndarray:
    """Frames (num_frames, H, W, 3): each video playing in its tile, later tiles over earlier ones."""
    frames = np.zeros((num_frames, *size, 3), dtype=np.uint8)
    for stream, (x0, y0, x1, y1) in zip(streams, tiles):
        for t, tile in enumerate(stream.render(x1 - x0, y1 - y0, num_frames, fps)):
            frames[t, y0:y1, x0:x1] = tile
    return frames


def make_footage_clips(folder: str | os.PathLike, per_layout: int = 4, sizes: tuple[tuple[int, int], ...] = REAL_SIZES,
                       num_frames: int = 24, fps: float = 12.0, seed: int = 70_000,
                       pool: str = "real-holdout") -> list[RealClip]:
    """Clips of real video: the pool's footage packages' videos, each playing from a random moment and
    cropped to fill its tile, laid out as make_plain_clips lays out pictures (a single shot, or two to four
    shots stacked, side by side, inset or tiled), then H.264-encoded. Cached in `folder` like the others.

    >>> clips = make_footage_clips("/tmp/footage", per_layout=1, sizes=((64, 36),), num_frames=4)  # doctest: +SKIP
    >>> [c.layout for c in clips]  # doctest: +SKIP
    ['none', 'vertical', 'horizontal', 'pip', 'other']
    """
    from training.imagery import SOURCES, check_pool_installed, list_videos

    part = pool.split("-", 1)[1]
    check_pool_installed(part, pool)
    videos = [(s.name, v) for s in SOURCES if s.pool == part and s.kind == "footage" for v in list_videos(s.name)]
    if len(videos) < 4:
        raise ValueError(f"pool {pool!r} has {len(videos)} videos installed; footage clips need at least 4")
    clips: list[RealClip] = []
    for size, layout, path, rng, tiles in draw_plain_layouts(Path(folder), sizes, per_layout, seed, num_frames):
        chosen = [videos[int(i)] for i in rng.choice(len(videos), size=len(tiles), replace=False)]
        starts = [float(rng.uniform(0.0, 1.0)) for _ in chosen]
        centres = [(float(rng.uniform(0.35, 0.65)), float(rng.uniform(0.4, 0.6))) for _ in chosen]
        streams = [FootageStream(video, start, centre) for (_, video), start, centre in zip(chosen, starts, centres)]
        render = functools.partial(render_footage_clip, streams, tiles, size, num_frames, fps)
        synthetic.write_clip_once(path, render, fps)
        names = (name for name, _ in chosen)
        clips.append(RealClip(path, layout, size, tuple(dict.fromkeys(names)), composer="footage"))
    return clips


def name_sources(spec: synthetic.ClipSpec) -> tuple[str, ...]:
    """The distinct sources of a clip's streams, by package or procedural kind, in the order they appear.

    >>> name_sources(synthetic.draw_clip_spec(2, num_frames=4, layouts=("vertical",)))
    ('chelsea', 'runner')
    """
    names = [stream.source.split("/", 1)[0] for seg in spec.segments for stream in seg.frame.streams]
    return tuple(dict.fromkeys(names))


def format_shares(shares: dict[str, float]) -> str:
    """A figure's shares by name, as the bench and the cards print them.

    >>> format_shares({"gnome": 0.6875, "ukui": 1.0})
    'gnome 69%, ukui 100%'
    """
    return ", ".join(f"{name} {share:.0%}" for name, share in shares.items())


def check_real_footage(lm, clips: list[RealClip], num_frames: int = 16) -> dict:
    """Analyze every clip through the app's path and return the figures (see the module docstring) over all
    clips, then per composer under "by_composer", with one row per clip under "rows".

    >>> check_real_footage(lm, clips)["video_accuracy"]  # doctest: +SKIP
    0.95
    """
    from core.analyze import analyze_video

    rows = []
    for clip in clips:
        analysis = analyze_video(lm, clip.path, num_frames=num_frames)
        labels = [s.label for s in analysis.scores]
        layouts = [max(s.layout_scores, key=s.layout_scores.get) for s in analysis.scores]
        rows.append({"clip": clip.path.name, "composer": clip.composer, "truth": clip.layout,
                     "size": list(clip.size), "sources": list(clip.sources),
                     "verdict": bool(analysis.verdict.label), "right": bool(analysis.verdict.label) == clip.sludge,
                     "sludge_frames": int(sum(labels)), "frames": len(labels),
                     "layout_votes": {name: layouts.count(name) for name in sorted(set(layouts))}})
    composers = dict.fromkeys(row["composer"] for row in rows)
    return {**summarise_rows(rows),
            "by_composer": {name: summarise_rows([r for r in rows if r["composer"] == name]) for name in composers},
            "rows": rows}


def summarise_rows(rows: list[dict]) -> dict:
    """The check's figures from its per-clip rows (each row counts its sampled frames and their votes).

    >>> row = {"truth": "vertical", "size": [64, 36], "sources": ["gnome"], "right": True, "sludge_frames": 3,
    ...        "frames": 4, "layout_votes": {"vertical": 2, "other": 2}}
    >>> f = summarise_rows([row]); f["sludge_frames_found"], f["layout_accuracy"]
    (0.75, 0.5)
    """
    sludge = [row for row in rows if row["truth"] != NO_LAYOUT]
    singles = [row for row in rows if row["truth"] == NO_LAYOUT]

    def share(hits: int, total: int) -> float | None:
        return round(hits / total, 4) if total else None

    by_layout = {}
    for kind in (NO_LAYOUT,) + LAYOUTS:
        hits = [row["right"] for row in rows if row["truth"] == kind]
        if hits:
            by_layout[kind] = round(float(np.mean(hits)), 4)
    # Per sludge layout and frame shape: the share of frames whose layout is right (a layout can fail for
    # one shape only, as side-by-side splits in landscape footage do).
    layout_by_shape: dict[str, dict[str, list[int]]] = {}
    for row in sludge:
        shape = synthetic.name_orientation(row["size"])
        tally = layout_by_shape.setdefault(row["truth"], {}).setdefault(shape, [0, 0])
        tally[0] += row["layout_votes"].get(row["truth"], 0)
        tally[1] += row["frames"]
    single_by_source: dict[str, list[float]] = {}
    for row in singles:
        for source in row["sources"]:
            single_by_source.setdefault(source, []).append(1 - row["sludge_frames"] / row["frames"])
    return {
        "clips": len(rows),
        "video_accuracy": round(float(np.mean([row["right"] for row in rows])), 4) if rows else None,
        "single_frames_not_sludge": share(sum(r["frames"] - r["sludge_frames"] for r in singles),
                                          sum(r["frames"] for r in singles)),
        "sludge_frames_found": share(sum(r["sludge_frames"] for r in sludge), sum(r["frames"] for r in sludge)),
        "layout_accuracy": share(sum(r["layout_votes"].get(r["truth"], 0) for r in sludge),
                                 sum(r["frames"] for r in sludge)),
        "video_accuracy_by_layout": by_layout,
        "layout_accuracy_by_shape": {kind: {shape: round(hit / total, 4) for shape, (hit, total) in shapes.items()}
                                     for kind, shapes in layout_by_shape.items()},
        # Per source of the single-scene clips: the share of their frames called not sludge.
        "single_not_sludge_by_source": {k: round(float(np.mean(v)), 4) for k, v in sorted(single_by_source.items())},
    }


def check_examples(lm, folder: str | os.PathLike = synthetic.EXAMPLES_DIR, num_frames: int = 16) -> dict:
    """The app's bundled examples at video level: each verdict against the clip's truth (a clip is sludge
    when most of its frames are).

    >>> check_examples(lm)["right"]  # doctest: +SKIP
    5
    """
    from core.analyze import analyze_video

    rows = []
    for k, (name, layouts) in enumerate(synthetic.EXAMPLE_CLIPS.items()):
        spec = synthetic.draw_example_spec(k, layouts)
        sludge = [seg.frame.truth.sludge for seg in spec.segments for _ in range(seg.start, seg.stop)]
        truth = float(np.mean(sludge)) >= 0.5
        analysis = analyze_video(lm, Path(folder) / name, num_frames=num_frames)
        rows.append({"example": name, "truth": truth, "verdict": bool(analysis.verdict.label),
                     "majority": analysis.verdict.majority, "right": bool(analysis.verdict.label) == truth})
    return {"examples": len(rows), "right": sum(row["right"] for row in rows), "rows": rows}
