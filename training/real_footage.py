"""The real-footage check: clips composed from pictures the models never saw, judged the way the app does.

Each clip is one layout for its whole length (a single scene, or a vertical, horizontal, picture-in-picture
or collage composite), composed from the held-out packages only (``real-holdout``: other photographers,
other illustrators, another game's textures), moving as footage does, at real short-form and landscape
sizes, and encoded as H.264 with PyAV. The app's own path then decodes and samples it
(``core.analyze.analyze_video``) and the model decides it. Figures:

* video level: the verdict (majority of sampled frames, ties to sludge) against the clip's truth;
* single-scene frames called not sludge; sludge frames called sludge;
* layout accuracy over sludge frames (the highest of the model's layout scores).

``bench/bench_real_video.py`` runs it at full size; ``tests/test_real_footage.py`` at a small one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
    # Where its streams come from, by package or procedural kind ("gnome", "game:openarena", "buildings"):
    # what a model misreads, told apart by the kind of picture.
    sources: tuple[str, ...] = ()

    @property
    def sludge(self) -> bool:
        return self.layout != NO_LAYOUT


def make_real_clips(folder: str | os.PathLike, per_layout: int = 4, sizes: tuple[tuple[int, int], ...] = REAL_SIZES,
                    num_frames: int = 24, fps: float = 12.0, seed: int = 50_000,
                    pool: str = "real-holdout") -> list[RealClip]:
    """Render and encode `per_layout` clips of each kind per size (or reuse ones already in `folder`).

    Clip k of a kind and size draws seed ``seed + k``; a file is written under a temporary name and renamed,
    so a cached clip is always whole.

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
                path = folder / f"{size[0]}x{size[1]}-{num_frames}f-{kind}-{seed + k}.mp4"
                # Drawing the spec is cheap (no pixels): it names the clip's sources even when it is cached.
                spec = synthetic.draw_clip_spec(seed + k + 1000 * CLIP_LAYOUTS.index(kind), num_frames, fps,
                                                size, pool=pool, layouts=(kind,))
                if not (path.is_file() and path.stat().st_size > 0):
                    frames, _ = synthetic.render_clip(spec)
                    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.mp4")
                    synthetic.write_clip(tmp, frames, fps)
                    os.replace(tmp, path)
                clips.append(RealClip(path, layout, size, name_sources(spec)))
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
    """Analyze every clip through the app's path and return the figures (see the module docstring), with one
    row per clip under "clips".

    >>> check_real_footage(lm, clips)["video_accuracy"]  # doctest: +SKIP
    0.95
    """
    from core.analyze import analyze_video

    rows = []
    single_ok, sludge_ok, layout_ok = [], [], []
    for clip in clips:
        analysis = analyze_video(lm, clip.path, num_frames=num_frames)
        labels = [s.label for s in analysis.scores]
        layouts = [max(s.layout_scores, key=s.layout_scores.get) for s in analysis.scores]
        if clip.sludge:
            sludge_ok += labels
            layout_ok += [name == clip.layout for name in layouts]
        else:
            single_ok += [not label for label in labels]
        rows.append({"clip": clip.path.name, "truth": clip.layout, "size": list(clip.size),
                     "sources": list(clip.sources),
                     "verdict": bool(analysis.verdict.label), "right": bool(analysis.verdict.label) == clip.sludge,
                     "sludge_frames": int(sum(labels)), "frames": len(labels),
                     "layout_votes": {name: layouts.count(name) for name in sorted(set(layouts))}})
    by_layout = {}
    for kind in (NO_LAYOUT,) + LAYOUTS:
        hits = [row["right"] for row in rows if row["truth"] == kind]
        if hits:
            by_layout[kind] = round(float(np.mean(hits)), 4)
    # Per sludge layout and frame shape: the share of frames whose layout is right (a layout can fail for
    # one shape only, as side-by-side splits in landscape footage do).
    layout_by_shape: dict[str, dict[str, list[int]]] = {}
    for row in rows:
        if row["truth"] != NO_LAYOUT:
            shape = synthetic.name_orientation(row["size"])
            tally = layout_by_shape.setdefault(row["truth"], {}).setdefault(shape, [0, 0])
            tally[0] += row["layout_votes"].get(row["truth"], 0)
            tally[1] += row["frames"]
    single_by_source: dict[str, list[float]] = {}
    for row in rows:
        if row["truth"] == NO_LAYOUT:
            for source in row["sources"]:
                single_by_source.setdefault(source, []).append(1 - row["sludge_frames"] / row["frames"])
    return {
        "clips": len(rows),
        "video_accuracy": round(float(np.mean([row["right"] for row in rows])), 4),
        "single_frames_not_sludge": round(float(np.mean(single_ok)), 4) if single_ok else None,
        "sludge_frames_found": round(float(np.mean(sludge_ok)), 4) if sludge_ok else None,
        "layout_accuracy": round(float(np.mean(layout_ok)), 4) if layout_ok else None,
        "video_accuracy_by_layout": by_layout,
        "layout_accuracy_by_shape": {kind: {shape: round(hit / total, 4) for shape, (hit, total) in shapes.items()}
                                     for kind, shapes in layout_by_shape.items()},
        # Per source of the single-scene clips: the share of their frames called not sludge.
        "single_not_sludge_by_source": {k: round(float(np.mean(v)), 4) for k, v in sorted(single_by_source.items())},
        "rows": rows,
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
