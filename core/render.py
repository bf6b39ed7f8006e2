"""Pictures of explanations: heatmaps over frames, token masks, and a grid of per-query maps.

Pure PIL/numpy; the colormap is a small built-in table (matplotlib's *inferno*, sampled at nine stops and
interpolated), so drawing a heatmap needs no plotting library; ``colour_scale`` and ``render_colour_scale``
give the key to its colours. Every function takes a frame as a
(H, W, 3) uint8 array and returns a ``PIL.Image``; ``np.asarray(image)`` gives the uint8 array back.

A model sees only part of some frames (LLaVA's processor centre-crops a square), so the drawing functions
take ``region=(left, top, right, bottom)``: the map is laid over that box and the rest of the frame is
dimmed to show the model never saw it.

    >>> frame = np.zeros((448, 252, 3), np.uint8)
    >>> heatmap = np.random.default_rng(0).random((16, 16))
    >>> render_heatmap(frame, heatmap).size, render_mask(frame, heatmap > 0.5).size
    ((252, 448), (252, 448))
    >>> np.asarray(render_query_grid(frame, [heatmap] * 32, heatmap)).dtype
    dtype('uint8')
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

# matplotlib's "inferno" at 0, 1/8, ..., 1: perceptually uniform and readable in greyscale.
INFERNO = np.array(
    [
        (0, 0, 4), (31, 12, 72), (85, 15, 109), (136, 34, 106), (186, 54, 85),
        (227, 89, 51), (249, 140, 10), (249, 201, 50), (252, 255, 164),
    ],
    dtype=np.float32,
)

Region = tuple[int, int, int, int]


def normalise_heatmap(heatmap) -> np.ndarray:
    """Scale a map to [0, 1] by its own minimum and maximum (a flat map becomes all zeros).

    >>> normalise_heatmap(np.array([[1.0, 3.0], [2.0, 5.0]])).tolist()
    [[0.0, 0.5], [0.25, 1.0]]
    """
    h = np.asarray(heatmap, dtype=np.float32)
    lo, hi = float(np.nanmin(h)), float(np.nanmax(h))
    if not math.isfinite(lo) or hi - lo <= 1e-12:
        return np.zeros_like(h)
    return (h - lo) / (hi - lo)


def colorize(values, table: np.ndarray = INFERNO) -> np.ndarray:
    """Map values in [0, 1] to RGB uint8 through a colour table (linear between its stops).

    >>> colorize(np.array([0.0, 1.0])).tolist()
    [[0, 0, 4], [252, 255, 164]]
    """
    v = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)
    stops = np.linspace(0.0, 1.0, len(table))
    rgb = np.stack([np.interp(v, stops, table[:, c]) for c in range(3)], axis=-1)
    return np.round(rgb).astype(np.uint8)


def upsample_heatmap(heatmap, size: tuple[int, int]) -> np.ndarray:
    """Smoothly resize a (gh, gw) map to (width, height) = `size` with bicubic interpolation, kept in [0, 1].

    >>> upsample_heatmap(np.eye(4), (32, 16)).shape
    (16, 32)
    """
    h = np.asarray(heatmap, dtype=np.float32)
    big = Image.fromarray(h, mode="F").resize(size, Image.Resampling.BICUBIC)
    return np.clip(np.asarray(big, dtype=np.float32), 0.0, 1.0)


def full_region(frame: np.ndarray) -> Region:
    """The whole frame as a region."""
    return (0, 0, frame.shape[1], frame.shape[0])


def render_heatmap(
    frame: np.ndarray, heatmap, alpha: float = 0.6, region: Region | None = None, gamma: float = 0.5
) -> Image.Image:
    """The frame with a normalised, smoothly upsampled, colour-mapped map blended over `region`.

    Attention maps are peaky (a few patches hold most of the mass), so the normalised map is raised to
    `gamma` (0.5: square root) before colouring; the order of the values is kept, the tail becomes visible.
    The blend weight grows with the value (``alpha * (0.25 + 0.75 * value)``), so cold areas keep the
    picture readable and hot areas are clearly coloured.

    >>> render_heatmap(np.zeros((448, 252, 3), np.uint8), np.eye(16)).size
    (252, 448)
    """
    frame = _as_rgb(frame)
    left, top, right, bottom = region or full_region(frame)
    heat = upsample_heatmap(normalise_heatmap(heatmap) ** gamma, (right - left, bottom - top))
    out = _dim_outside(frame, (left, top, right, bottom))
    patch = out[top:bottom, left:right].astype(np.float32)
    weight = (alpha * (0.25 + 0.75 * heat))[..., None]
    out[top:bottom, left:right] = np.round(patch * (1 - weight) + colorize(heat) * weight).astype(np.uint8)
    return Image.fromarray(out)


def render_mask(
    frame: np.ndarray, mask, grid: tuple[int, int] | None = None, region: Region | None = None, dim: float = 0.25
) -> Image.Image:
    """The frame with dropped patches darkened and tinted, kept patches untouched, and the kept area outlined.

    `mask` is (gh, gw) bool, or flat (gh * gw,) with `grid` given (a square grid is assumed otherwise).

    >>> render_mask(np.zeros((448, 252, 3), np.uint8), np.eye(16, dtype=bool).ravel(), (16, 16)).size
    (252, 448)
    """
    frame = _as_rgb(frame)
    m = np.asarray(mask, dtype=bool)
    if m.ndim == 1:
        side = int(round(math.sqrt(m.size)))
        m = m.reshape(grid or (side, side))
    left, top, right, bottom = region or full_region(frame)
    big = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((right - left, bottom - top), Image.Resampling.NEAREST)) > 127
    out = _dim_outside(frame, (left, top, right, bottom))
    patch = out[top:bottom, left:right].astype(np.float32)
    tint = np.array([20, 30, 60], dtype=np.float32)
    dropped = patch * dim + tint * (1 - dim)
    patch = np.where(big[..., None], patch, dropped)
    # A one-pixel outline where kept meets dropped, so small kept islands stay visible.
    edge = np.zeros_like(big)
    edge[1:, :] |= big[1:, :] != big[:-1, :]
    edge[:, 1:] |= big[:, 1:] != big[:, :-1]
    patch[edge] = (255, 214, 0)
    out[top:bottom, left:right] = np.round(patch).astype(np.uint8)
    return Image.fromarray(out)


def render_query_grid(
    frame: np.ndarray,
    per_query,
    mean=None,
    cols: int = 8,
    tile_width: int = 96,
    region: Region | None = None,
    labels: Sequence[str] | None = None,
) -> Image.Image:
    """A BLIPren-style sheet: one small heatmap overlay per Q-Former query, then the mean map, labelled.

    `per_query` is (Q, gh, gw); `mean` (gh, gw) is appended as the last tile when given.

    >>> render_query_grid(np.zeros((448, 252, 3), np.uint8), np.ones((32, 16, 16)), np.ones((16, 16))).size
    (768, 925)
    """
    frame = _as_rgb(frame)
    maps = [np.asarray(m) for m in per_query]
    names = list(labels) if labels is not None else [f"q{i}" for i in range(len(maps))]
    if mean is not None:
        maps.append(np.asarray(mean))
        names.append("mean")
    scale = tile_width / frame.shape[1]
    tile_h = max(1, int(round(frame.shape[0] * scale)))
    small = np.asarray(Image.fromarray(frame).resize((tile_width, tile_h), Image.Resampling.BILINEAR))
    small_region = None
    if region is not None:
        small_region = tuple(int(round(v * s)) for v, s in zip(region, (scale, tile_h / frame.shape[0]) * 2))
    label_h = 14
    rows = math.ceil(len(maps) / cols)
    sheet = Image.new("RGB", (cols * tile_width, rows * (tile_h + label_h)), (16, 16, 16))
    draw = ImageDraw.Draw(sheet)
    for i, (m, name) in enumerate(zip(maps, names)):
        x, y = (i % cols) * tile_width, (i // cols) * (tile_h + label_h)
        sheet.paste(render_heatmap(small, m, region=small_region), (x, y + label_h))
        draw.text((x + 3, y + 1), name, fill=(235, 235, 235))
    return sheet


def colour_scale(table: np.ndarray = INFERNO, gamma: float = 0.5, ticks: int = 5) -> dict:
    """The key to :func:`render_heatmap`'s colours: CSS colour stops, and tick labels as shares of the map's peak.

    A heatmap colours ``value ** gamma`` of the map normalised to its own peak, so the colour at position x
    along the scale stands for ``x ** (1 / gamma)`` of the peak: with gamma 0.5 the middle of the scale is a
    quarter of the peak. Returns {"stops": [(position, "#rrggbb"), ...], "ticks": [(position, "25%"), ...]}.

    >>> scale = colour_scale()
    >>> scale["stops"][0], scale["stops"][-1]
    ((0.0, '#000004'), (1.0, '#fcffa4'))
    >>> [label for _, label in scale["ticks"]]
    ['0%', '6%', '25%', '56%', '100%']
    """
    positions = np.linspace(0.0, 1.0, len(table))
    stops = [(round(float(x), 4), "#{:02x}{:02x}{:02x}".format(*(int(round(c)) for c in rgb)))
             for x, rgb in zip(positions, table)]
    marks = [(round(float(x), 4), f"{float(x) ** (1.0 / gamma):.0%}") for x in np.linspace(0.0, 1.0, ticks)]
    return {"stops": stops, "ticks": marks}


def render_colour_scale(width: int = 256, height: int = 12, table: np.ndarray = INFERNO) -> Image.Image:
    """The heatmap colours as a horizontal bar, low on the left (a picture of :func:`colour_scale`).

    >>> bar = render_colour_scale(64, 4)
    >>> bar.size, bar.getpixel((0, 0)), bar.getpixel((63, 0))
    ((64, 4), (0, 0, 4), (252, 255, 164))
    """
    row = colorize(np.linspace(0.0, 1.0, width))
    return Image.fromarray(np.ascontiguousarray(np.repeat(row[None], height, axis=0)))


def _as_rgb(frame) -> np.ndarray:
    a = np.asarray(frame)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    return np.ascontiguousarray(a[..., :3], dtype=np.uint8)


def _dim_outside(frame: np.ndarray, region: Region, factor: float = 0.45) -> np.ndarray:
    left, top, right, bottom = region
    out = np.round(frame.astype(np.float32) * factor).astype(np.uint8)
    out[top:bottom, left:right] = frame[top:bottom, left:right]
    return out
