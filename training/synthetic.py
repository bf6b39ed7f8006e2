"""Synthetic short-form frames and clips with ground truth, for training and testing the tiny models.

A frame is built from "streams": random crops (zoom, pan, colour jitter) of real photos that ship inside
installed packages (scikit-image's bundled ``skimage.data`` images and scikit-learn's two sample photos),
or procedural content (stripes, gradients, noise, plasma, bouncing balls, game-like scenes, a chat screen,
a landscape). Sludge frames put two or more streams from *different* sources into one frame in one of the
layouts of :data:`LAYOUTS`; single-stream frames (layout ``"none"``) show one stream, sometimes as a
distractor made to look split (mirrored halves, a black band, a sharp horizon, a zoomed inset of the
same scene, a thick border). Every frame carries a :class:`FrameTruth` with a short grounded
description and a one-sentence explanation.

Drawing is split in two: a frame *spec* is drawn from a random generator once, then rendered at any
time ``t`` (seconds), so clips move their content smoothly and can change layout between segments.

    >>> import numpy as np
    >>> frame, truth = make_frame(np.random.default_rng(0), layout="vertical")
    >>> frame.shape, truth.sludge, truth.layout
    ((448, 252, 3), True, 'vertical')
"""

from __future__ import annotations

import argparse
import colorsys
import functools
import io
import math
import os
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

from core.vocabulary import LAYOUTS
from training import imagery
from training.imagery import load_photo

# "train"/"holdout": scikit-image's photos and the procedural sources, always installed (tests, examples).
# "real-train"/"real-holdout": the pictures of whole packages (training.imagery), split by package: what the
# embedded models learn from and what the real-footage check draws from.
POOLS = ("train", "holdout", "real-train", "real-holdout")
REAL_POOLS = ("real-train", "real-holdout")
# Non-sludge layouts draw_frame_spec accepts besides LAYOUTS: any single stream, a plain one, a distractor.
FRAME_KINDS = ("none", "single", "distractor")


# Real photos, by the name used in truth `sources`, with the plain noun used in descriptions.
PHOTO_NOUNS = {
    "astronaut": "an astronaut",
    "chelsea": "a cat",
    "coffee": "a coffee cup",
    "rocket": "a rocket",
    "camera": "a man with a camera",
    "horse": "a horse silhouette",
    "hubble_deep_field": "a starry sky",
    "immunohistochemistry": "a stained tissue sample",
    "page": "a page of text",
    "text": "a sign with text",
    "brick": "a brick wall",
    "grass": "grass",
    "gravel": "gravel",
    "retina": "an eye scan",
    "logo": "a logo",
    "colorwheel": "a colour wheel",
    "clock": "a clock",
    "cell": "a cell under a microscope",
    "coins": "coins",
    "moon": "the surface of the moon",
    "motorcycle": "a motorcycle",
    "china": "a temple",
    "flower": "a flower",
}
# The holdout photos never appear in the train pool, so tests can measure generalisation to unseen footage.
HOLDOUT_PHOTOS = ("coins", "moon", "motorcycle", "china", "flower")
TRAIN_PHOTOS = tuple(name for name in PHOTO_NOUNS if name not in HOLDOUT_PHOTOS)

# Procedural sources are shared by both pools: they are generated, not footage.
PROCEDURAL_NOUNS = {
    "stripes": "a striped texture",
    "gradient": "a colour gradient",
    "checker": "a checkerboard pattern",
    "plasma": "a swirling colourful pattern",
    "noise": "a cloudy noise texture",
    "blobs": "colourful bouncing balls",
    "runner": "a game-like scene",
    "platformer": "a side-scrolling game-like scene",
    "chat": "a chat screen",
    "landscape": "a landscape with a sharp horizon",
    "buildings": "a city skyline",
}
GAME_SOURCES = ("runner", "platformer")

# Deeper zooms crop a portrait tile of a landscape photo down to texture (a cat becomes fur), which
# would make the description ungrounded; the zoomed-inset distractor is allowed up to 4x on purpose.
_MAX_ZOOM = 1.8
# Weights of the sludge layouts when a frame's layout is random; vertical is the short-form norm.
_LAYOUT_WEIGHTS = {"vertical": 0.35, "horizontal": 0.2, "pip": 0.25, "other": 0.2}
# Share of single-stream frames drawn as distractors (one scene made to look split).
_DISTRACTOR_SHARE = 0.3
_DISTRACTORS = ("mirror", "band", "horizon", "zoom_inset", "border")
# Real pools: a composite of two crops of one picture is sludge (two streams, whatever they show), so a zoomed
# inset of the same scene would contradict it and is left out; single scenes with strong straight edges
# (a horizon, a skyline, an app's interface bars) come in instead.
_REAL_DISTRACTORS = ("mirror", "band", "horizon", "skyline", "border", "ui_bars")
# Real pools: share of composites whose streams are crops of one picture.
_SAME_PICTURE_SHARE = 0.2
# Real pools: share of the other composites whose streams are all of one kind (two videos, two photos, two
# game scenes): without them a change of look between streams would tell sludge, and two real videos
# stacked would pass as one scene.
_SAME_KIND_SHARE = 0.5
# Real pools: share of streams that are pictures (photos, illustrations), stills of real video (camera
# noise, motion blur, compression: what a model that has seen only photos calls sludge), games and
# procedural textures.
_REAL_MIX = {"picture": 0.55, "footage": 0.2, "game": 0.125, "procedural": 0.125}
# Share of each split layout's composites whose last stream is a game-like scene, as short-form sludge puts
# gameplay under the talking head (scaled by StreamStyle.game_last_scale).
_GAME_LAST = {"vertical": 0.4, "horizontal": 0.25, "pip": 0.2}
_CAPTIONS = (
    "wait for it",
    "part 2",
    "watch till the end",
    "this is so satisfying",
    "no way this happened",
    "day 14 of trying",
    "the ending though",
    "how did he do that",
    "rate this 1-10",
    "I can't stop watching",
    "best moment so far",
    "try not to laugh",
    "pov: you finally relax",
    "this took 3 hours",
)
# Grass, sand, sea, earth, snow: the ground under a landscape's horizon.
_GROUNDS = ((70, 120, 50), (200, 170, 110), (40, 90, 150), (110, 80, 50), (225, 228, 235))
_CORNERS = ("top left", "top right", "bottom left", "bottom right")


@dataclass(frozen=True)
class FrameTruth:
    """What a synthetic frame shows; the labels the tiny models learn and the tests check."""

    sludge: bool
    # One of LAYOUTS, or "none" for single-stream frames.
    layout: str
    # Short grounded description: layout, what each stream shows, caption bars; never a show/game name.
    description: str
    # One sentence why the frame is or is not sludge.
    explanation: str
    # A single scene made to look split (mirrored halves, black band, sharp horizon, zoomed inset, border).
    distractor: bool = False
    # Source names of the streams drawn (PHOTO_NOUNS / PROCEDURAL_NOUNS keys), so pools can be audited.
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class StreamSpec:
    """One stream: a source plus how it is cropped, moved and colour-jittered over time."""

    source: str
    # Seeds the procedural content (colours, shapes) so it is the same at every time t.
    seed: int
    # 1 = the largest crop of the photo with the tile's aspect; larger zooms in.
    zoom: float = 1.0
    # Crop position as a share of the free range, and its speed (share per second, bounces at edges).
    cx: float = 0.5
    cy: float = 0.5
    vx: float = 0.0
    vy: float = 0.0
    # Relative zoom change per second.
    vzoom: float = 0.0
    flip: bool = False
    # Procedural motion speed multiplier.
    speed: float = 1.0
    # Colour jitter: brightness offset (grey levels), contrast and saturation factors, per-channel gains.
    brightness: float = 0.0
    contrast: float = 1.0
    saturation: float = 1.0
    gains: tuple[float, float, float] = (1.0, 1.0, 1.0)
    # Gaussian blur radius in px at the tile's size (soft or out-of-focus footage); 0 = sharp.
    blur: float = 0.0


@dataclass(frozen=True)
class Tile:
    """Where a stream is pasted: a box relative to the frame (x0, y0, x1, y1 in [0, 1])."""

    stream: int
    box: tuple[float, float, float, float]
    # "h" or "v" mirrors the stream (used by the mirrored-halves distractor).
    mirror: str = ""
    # Rounded corners radius and outline, in pixels (picture-in-picture insets).
    radius: int = 0
    outline: int = 0
    outline_colour: tuple[int, int, int] = (255, 255, 255)


@dataclass(frozen=True)
class StreamStyle:
    """How a frame's streams are drawn beyond their kinds (``source_mix``): two habits of the renderer that a
    model can read the label from instead of the seam. The defaults are the renderer's own."""

    # Scale on _GAME_LAST. A game at the bottom tells a stack without looking at its seam; at 0 a game is as
    # likely in any tile, so two photos or two videos stacked are as much a stack as a talking head over play.
    game_last_scale: float = 1.0
    # Share of streams drawn with no colour grading (brightness, contrast, saturation and channel gains left
    # as the source has them). Each stream of a composite is graded on its own, so its seam is also a colour
    # break; real footage pasted plainly has only the break its sources make.
    ungraded_share: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.ungraded_share <= 1.0 or self.game_last_scale < 0.0:
            raise ValueError(f"ungraded_share takes 0..1 and game_last_scale >= 0, not {self.ungraded_share} and "
                             f"{self.game_last_scale}")


RENDERER_STYLE = StreamStyle()


@dataclass(frozen=True)
class Caption:
    """A caption: text centred on a relative height, drawn on a bar or as outlined text."""

    text: str
    y: float
    # "white" or "black" bar, or "clear" (outlined text, no bar).
    style: str
    font_px: int


@dataclass(frozen=True)
class FrameSpec:
    """Everything needed to render one frame at any time t, and its truth."""

    truth: FrameTruth
    streams: tuple[StreamSpec, ...]
    tiles: tuple[Tile, ...]
    background: tuple[int, int, int] = (0, 0, 0)
    # Fill the background with a blurred copy of stream 0 (the common letterbox fill).
    blur_fill: bool = False
    # Lines drawn over the tiles: (x0, y0, x1, y1) relative, thickness px, colour.
    lines: tuple[tuple[tuple[float, float, float, float], int, tuple[int, int, int]], ...] = ()
    # Solid rectangles drawn over the tiles (the black band distractor), relative boxes.
    bands: tuple[tuple[float, float, float, float], ...] = ()
    captions: tuple[Caption, ...] = ()
    watermark: tuple[str, str, int] | None = None  # text, corner, font px
    # Frame border thickness in px and colour (0 = none).
    border: int = 0
    border_colour: tuple[int, int, int] = (255, 255, 255)
    # Seed of a short-form app's interface drawn over everything (status bar, buttons); None = no interface.
    ui_overlay: int | None = None


# ---------------------------------------------------------------------------------------------------
# Sources


def find_heldout_pool(pool: str) -> str:
    """The pool held out from a training pool: the other packages for a real pool, else the other photos.

    >>> find_heldout_pool("real-train"), find_heldout_pool("train")
    ('real-holdout', 'holdout')
    """
    return "real-holdout" if pool in REAL_POOLS else "holdout"


def pool_sources(pool: str) -> tuple[str, ...]:
    """All source names a pool may draw: its photos plus the shared procedural sources.

    >>> "moon" in pool_sources("holdout"), "moon" in pool_sources("train")
    (True, False)
    """
    if pool == "train":
        return TRAIN_PHOTOS + tuple(PROCEDURAL_NOUNS)
    if pool == "holdout":
        return HOLDOUT_PHOTOS + tuple(PROCEDURAL_NOUNS)
    if pool in REAL_POOLS:
        part = pool.split("-", 1)[1]
        imagery.check_pool_installed(part, pool)  # a partial pool would quietly be another data set
        return (imagery.list_images(part) + imagery.list_footage(part) + imagery.list_games(part)
                + tuple(PROCEDURAL_NOUNS))
    raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")


def is_picture(source: str) -> bool:
    """Whether a source is a still picture that streams crop and pan (not a game or procedural scene).

    >>> is_picture("chelsea"), is_picture("plasma/Autumn"), is_picture("game:minetest"), is_picture("stripes")
    (True, True, False, False)
    """
    return source in PHOTO_NOUNS or ("/" in source and not source.startswith("game:"))


def noun_of(source: str) -> str:
    """The plain words a description uses for a source.

    >>> noun_of("chelsea"), noun_of("ukui/city")
    ('a cat', 'a photo')
    """
    if source in PHOTO_NOUNS or source in PROCEDURAL_NOUNS:
        return PHOTO_NOUNS.get(source) or PROCEDURAL_NOUNS[source]
    return imagery.noun_of(source)


@functools.lru_cache(maxsize=8)
def _font(px: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(6, px))


@functools.lru_cache(maxsize=512)
def _fbm_tile(seed: int, n: int = 64) -> np.ndarray:
    """A periodic fractal-noise field in [0, 1] (1/f spectrum), so it can scroll forever."""
    rng = np.random.default_rng(seed)
    freq = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.fftfreq(n)[None, :])
    freq[0, 0] = 1.0
    spectrum = np.fft.fft2(rng.standard_normal((n, n))) / freq**1.7
    spectrum[0, 0] = 0.0
    field_ = np.fft.ifft2(spectrum).real
    field_ -= field_.min()
    return (field_ / max(field_.max(), 1e-6)).astype(np.float32)


def _bounce(x: float) -> float:
    """Triangle wave mapping any real to [0, 1], so pans bounce off the edges."""
    return 1.0 - abs((x % 2.0) - 1.0)


def _vivid(rng: np.random.Generator, value: float = 0.9) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(float(rng.random()), float(rng.uniform(0.55, 1.0)), value)
    return (round(r * 255), round(g * 255), round(b * 255))


def _mix(a: np.ndarray, b: np.ndarray, m: np.ndarray) -> Image.Image:
    """Blend two colours by a mask of shape (h, w) into an RGB image."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    out = a + (b - a) * m[..., None]
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB")


def _grid(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(w, dtype=np.float32)[None, :], np.arange(h, dtype=np.float32)[:, None]


def _ok(xy) -> tuple[float, float, float, float]:
    """A box with x0 <= x1 and y0 <= y1, which PIL requires; tiny frames can invert rounded boxes."""
    x0, y0, x1, y1 = xy
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


class _Draw:
    """ImageDraw whose box shapes accept inverted boxes (they collapse to their sorted extent)."""

    def __init__(self, image: Image.Image) -> None:
        self._draw = ImageDraw.Draw(image)

    def __getattr__(self, name: str):
        return getattr(self._draw, name)

    def rectangle(self, xy, **kwargs) -> None:
        self._draw.rectangle(_ok(xy), **kwargs)

    def ellipse(self, xy, **kwargs) -> None:
        self._draw.ellipse(_ok(xy), **kwargs)

    def rounded_rectangle(self, xy, **kwargs) -> None:
        self._draw.rounded_rectangle(_ok(xy), **kwargs)


# ---------------------------------------------------------------------------------------------------
# Procedural renderers: each draws (w, h) at time t from its seed alone.


def _draw_stripes(seed: int, w: int, h: int, t: float) -> Image.Image:
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0, math.pi)
    period = max(3.0, rng.uniform(0.04, 0.2) * max(w, h))
    phase = t * rng.uniform(0.5, 3.0) * 2 * math.pi
    c1, c2 = _vivid(rng), _vivid(rng, 0.35)
    x, y = _grid(w, h)
    s = np.sin((x * math.cos(theta) + y * math.sin(theta)) * (2 * math.pi / period) + phase)
    mask = (s > 0).astype(np.float32) if rng.random() < 0.6 else s * 0.5 + 0.5
    return _mix(c1, c2, mask)


def _draw_gradient(seed: int, w: int, h: int, t: float) -> Image.Image:
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0, 2 * math.pi)
    hue0, hue1 = rng.random(), rng.random()
    drift = t * rng.uniform(0.02, 0.1)
    c1 = np.array(colorsys.hsv_to_rgb((hue0 + drift) % 1, 0.8, 0.95)) * 255
    c2 = np.array(colorsys.hsv_to_rgb((hue1 + drift) % 1, 0.9, 0.5)) * 255
    x, y = _grid(16, 16)
    m = (x * math.cos(theta) + y * math.sin(theta)) / 15.0
    m = (m - m.min()) / max(float(m.max() - m.min()), 1e-6)
    return _mix(c1, c2, m).resize((w, h), Image.BILINEAR)


def _draw_checker(seed: int, w: int, h: int, t: float) -> Image.Image:
    rng = np.random.default_rng(seed)
    cell = max(2.0, rng.uniform(0.06, 0.2) * w)
    ox, oy = t * rng.uniform(-1, 1) * cell * 2, t * rng.uniform(-1, 1) * cell * 2
    x, y = _grid(w, h)
    mask = ((np.floor((x + ox) / cell) + np.floor((y + oy) / cell)) % 2).astype(np.float32)
    return _mix(_vivid(rng), _vivid(rng, 0.3), mask)


def _draw_plasma(seed: int, w: int, h: int, t: float) -> Image.Image:
    rng = np.random.default_rng(seed)
    gw, gh = max(2, w // 4), max(2, h // 4)
    x, y = _grid(gw, gh)
    x, y = x / gw * 8, y / gw * 8
    f = rng.uniform(0.5, 1.5, size=4)
    v = (
        np.sin(x * f[0] + t * 1.1)
        + np.sin(y * f[1] - t * 0.9)
        + np.sin((x + y) * f[2] * 0.7 + t * 0.6)
        + np.sin(np.sqrt((x - 4) ** 2 + (y - 6) ** 2) * f[3] - t * 1.3)
    )
    phases = rng.random(3)
    rgb = 0.5 + 0.5 * np.cos(2 * math.pi * (v[..., None] * 0.25 + phases[None, None, :]))
    return Image.fromarray((rgb * 255).astype(np.uint8), "RGB").resize((w, h), Image.BILINEAR)


def _sample_fbm(seed: int, gw: int, gh: int, cycles: float, ox: float, oy: float) -> np.ndarray:
    tile = _fbm_tile(seed)
    n = tile.shape[0]
    ix = ((np.arange(gw) / gw * cycles + ox) * n).astype(np.int64) % n
    iy = ((np.arange(gh) / gw * cycles + oy) * n).astype(np.int64) % n
    return tile[iy[:, None], ix[None, :]]


def _draw_noise(seed: int, w: int, h: int, t: float) -> Image.Image:
    rng = np.random.default_rng(seed)
    gw, gh = max(2, w // 3), max(2, h // 3)
    speed = rng.uniform(0.05, 0.3)
    m = _sample_fbm(seed, gw, gh, rng.uniform(0.5, 1.5), t * speed, t * speed * rng.uniform(-1, 1))
    return _mix(_vivid(rng, 0.2), _vivid(rng, 1.0), m).resize((w, h), Image.BILINEAR)


def _draw_blobs(seed: int, w: int, h: int, t: float) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (w, h), _vivid(rng, 0.15))
    draw = _Draw(image)
    for _ in range(int(rng.integers(3, 8))):
        r = rng.uniform(0.05, 0.15) * min(w, h) + 1
        px = r + _bounce(rng.random() * 2 + t * rng.uniform(0.1, 0.6)) * max(w - 2 * r, 0)
        py = r + _bounce(rng.random() * 2 + t * rng.uniform(0.1, 0.6)) * max(h - 2 * r, 0)
        draw.ellipse((px - r, py - r, px + r, py + r), fill=_vivid(rng))
    return image


def _draw_hud(draw: _Draw, w: int, h: int, score: int) -> None:
    px = max(6, round(min(w, h) * 0.08))
    font = _font(px)
    draw.text((w - px * 0.5, px * 0.4), f"{score:05d}", font=font, fill=(255, 255, 255), anchor="ra",
              stroke_width=max(1, px // 8), stroke_fill=(0, 0, 0))
    r = px * 0.4
    draw.ellipse((px * 0.4, px * 0.5, px * 0.4 + 2 * r, px * 0.5 + 2 * r), fill=(250, 210, 40))


def _draw_runner(seed: int, w: int, h: int, t: float) -> Image.Image:
    """A lane-running game-like scene: a road to the horizon, moving dashes, obstacles, a player."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (w, h), _vivid(rng, 1.0))
    draw = _Draw(image)
    speed = rng.uniform(0.6, 1.6)
    yh = h * rng.uniform(0.22, 0.38)
    draw.rectangle((0, yh, w, h), fill=_vivid(rng, 0.55))
    for k in range(3):  # clouds drifting
        cx = (_bounce(rng.random() * 2 + t * 0.05) * 1.4 - 0.2) * w
        cy = yh * rng.uniform(0.2, 0.7)
        r = w * rng.uniform(0.06, 0.12)
        draw.ellipse((cx - 2 * r, cy - r, cx + 2 * r, cy + r), fill=(245, 245, 250))
    vx = w / 2
    top_half, bottom_half = w * 0.06, w * 0.75

    def road_x(lane_pos: float, z: float) -> float:
        """x of a lane position in [-1, 1] at depth z in [0, 1] (0 = horizon, 1 = bottom)."""
        return vx + lane_pos * (top_half + (bottom_half - top_half) * z)

    def depth_y(z: float) -> float:
        return yh + (h - yh) * z

    draw.polygon([(road_x(-1, 0), yh), (road_x(1, 0), yh), (road_x(1, 1), h), (road_x(-1, 1), h)],
                 fill=(90, 90, 100))
    rail = _vivid(rng, 0.9)
    for lane in (-1 / 3, 1 / 3):
        for k in range(10):
            z0 = ((k / 10 + t * speed * 0.5) % 1.0) ** 2
            z1 = min(1.0, z0 + 0.03 + 0.06 * z0)
            width = max(1, round(1 + 4 * z0 * w / 252))
            draw.line((road_x(lane, z0), depth_y(z0), road_x(lane, z1), depth_y(z1)), fill=rail, width=width)
    for k in range(3):  # obstacles coming closer
        z = ((rng.random() + t * speed * 0.35) % 1.0) ** 2
        lane = float(rng.integers(-1, 2)) * 2 / 3
        half = (top_half + (bottom_half - top_half) * z) / 3.5
        x, y = road_x(lane, z), depth_y(z)
        draw.rectangle((x - half, y - half * 1.4, x + half, y), fill=_vivid(rng, 0.8), outline=(20, 20, 20))
    lane_t = _bounce(t * 0.4 + rng.random() * 2) * 2 - 1
    px, py = road_x(lane_t * 2 / 3, 0.92), depth_y(0.92)
    body = w * 0.07
    jump = abs(math.sin(t * math.pi * speed)) * h * 0.05
    draw.rectangle((px - body / 2, py - body * 2 - jump, px + body / 2, py - jump), fill=_vivid(rng, 1.0))
    draw.ellipse((px - body / 2, py - body * 3 - jump, px + body / 2, py - body * 2 - jump), fill=(240, 200, 170))
    _draw_hud(draw, w, h, int(1000 + t * speed * 137 + rng.integers(0, 50000)))
    return image


def _draw_platformer(seed: int, w: int, h: int, t: float) -> Image.Image:
    """A side-scrolling game-like scene: stepped ground, floating blocks, coins, a jumping player."""
    rng = np.random.default_rng(seed)
    sky = np.array(colorsys.hsv_to_rgb(rng.uniform(0.5, 0.65), rng.uniform(0.3, 0.6), 1.0)) * 255
    image = Image.new("RGB", (w, h), tuple(int(c) for c in sky))
    draw = _Draw(image)
    block = max(3.0, h * rng.uniform(0.06, 0.1))
    heights = rng.integers(2, 6, size=32)
    scroll = t * block * rng.uniform(2, 5)
    ground, grass = _vivid(rng, 0.45), _vivid(rng, 0.8)
    first = int(scroll // block)
    for k in range(first, first + int(w / block) + 2):
        x0 = k * block - scroll
        top = h - heights[k % 32] * block
        draw.rectangle((x0, top, x0 + block, h), fill=ground)
        draw.rectangle((x0, top, x0 + block, top + block * 0.25), fill=grass)
        if k % 7 == 3:
            draw.rectangle((x0, top - 3.5 * block, x0 + 2 * block, top - 2.5 * block), fill=(200, 120, 60),
                           outline=(80, 40, 20))
        if k % 5 == 1:
            draw.ellipse((x0 + block * 0.3, top - block * 1.6, x0 + block * 0.7, top - block * 1.0),
                         fill=(250, 210, 40))
    px = w * 0.3
    k = int((px + scroll) // block)
    floor = h - heights[k % 32] * block
    jump = abs(math.sin(t * math.pi * 1.3)) * block * 2.5
    draw.rectangle((px - block * 0.45, floor - block * 1.4 - jump, px + block * 0.45, floor - jump),
                   fill=_vivid(rng, 1.0), outline=(0, 0, 0))
    _draw_hud(draw, w, h, int(t * 250 + rng.integers(0, 9000)))
    return image


def _draw_chat(seed: int, w: int, h: int, t: float) -> Image.Image:
    """A messaging app screen scrolling upwards: header, alternating bubbles of grey text lines."""
    rng = np.random.default_rng(seed)
    dark = rng.random() < 0.4
    bg, ink = ((18, 18, 22), (150, 150, 160)) if dark else ((245, 245, 248), (90, 90, 100))
    image = Image.new("RGB", (w, h), bg)
    draw = _Draw(image)
    unit = max(2.0, w * 0.035)
    mine, theirs = _vivid(rng, 0.85), ((60, 60, 70) if dark else (225, 225, 232))
    messages = []
    for _ in range(24):
        lines = int(rng.integers(1, 4))
        messages.append((bool(rng.random() < 0.5), lines, rng.uniform(0.3, 0.7, size=lines)))
    total = sum(unit * (1.6 * lines + 1.6) for _, lines, _ in messages)
    y = h * 0.1 - (t * unit * 3 * rng.uniform(0.5, 1.5)) % total
    for _repeat in range(3):
        for right, lines, widths in messages:
            bh = unit * 1.6 * lines + unit * 0.6
            if y + bh > 0 and y < h:
                bw = w * float(widths.max()) + unit
                x0 = w - bw - unit if right else unit
                draw.rounded_rectangle((x0, y, x0 + bw, y + bh), radius=unit, fill=mine if right else theirs)
                for i, share in enumerate(widths):
                    ly = y + unit * 0.6 + i * unit * 1.6
                    draw.rectangle((x0 + unit * 0.5, ly, x0 + unit * 0.5 + w * share, ly + unit * 0.7),
                                   fill=(255, 255, 255) if right else ink)
            y += bh + unit
        if y > h:
            break
    draw.rectangle((0, 0, w, h * 0.08), fill=(40, 40, 48) if dark else (255, 255, 255))
    r = h * 0.025
    draw.ellipse((unit, h * 0.04 - r, unit + 2 * r, h * 0.04 + r), fill=_vivid(rng))
    draw.rectangle((unit * 2 + 2 * r, h * 0.03, w * 0.55, h * 0.05), fill=ink)
    draw.rectangle((0, h * 0.93, w, h), fill=(40, 40, 48) if dark else (255, 255, 255))
    draw.rounded_rectangle((unit, h * 0.945, w - unit, h * 0.985), radius=unit, outline=ink)
    return image


def _draw_landscape(seed: int, w: int, h: int, t: float) -> Image.Image:
    """One scene with a sharp horizon: sky gradient and sun above, textured ground or sea below."""
    rng = np.random.default_rng(seed)
    yh = int(h * rng.uniform(0.4, 0.65))
    hue = rng.uniform(0.0, 0.7)
    top = np.array(colorsys.hsv_to_rgb(hue, 0.6, 0.7), np.float32) * 255
    low = np.array(colorsys.hsv_to_rgb((hue + 0.08) % 1, 0.3, 1.0), np.float32) * 255
    ramp = np.linspace(0, 1, max(yh, 1), dtype=np.float32)[:, None, None]
    sky = np.broadcast_to(top + (low - top) * ramp, (max(yh, 1), w, 3))
    ground_colour = np.array(_GROUNDS[int(rng.integers(len(_GROUNDS)))], np.float32) * rng.uniform(0.85, 1.15)
    gh = h - yh
    tex = _sample_fbm(seed, max(2, w // 3), max(2, gh // 3), 1.0, t * 0.05, 0.0)
    tex = np.asarray(Image.fromarray((tex * 255).astype(np.uint8)).resize((w, max(gh, 1)), Image.BILINEAR),
                     np.float32)[..., None] / 255.0
    ground = ground_colour * (0.6 + 0.6 * tex)
    array = np.concatenate([sky, ground[:gh]], axis=0)[:h]
    image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "RGB")
    draw = _Draw(image)
    r = w * rng.uniform(0.05, 0.1)
    sx, sy = w * (rng.uniform(0.15, 0.85) + 0.02 * t), yh * rng.uniform(0.25, 0.6)
    draw.ellipse((sx - r, sy - r, sx + r, sy + r), fill=(255, 240, 200))
    if rng.random() < 0.5 and yh > 4:
        peaks = rng.uniform(0.05, 0.25, size=9) * yh
        shift = t * w * 0.01
        points = [(-w * 0.2 + i * w * 0.175 - shift, yh - peaks[i]) for i in range(9)]
        colour = tuple(int(c * 0.7) for c in low)
        draw.polygon([(-w, yh), *points, (2 * w, yh)], fill=colour)
    return image


def _draw_buildings(seed: int, w: int, h: int, t: float) -> Image.Image:
    """A city skyline: straight-edged blocks with window grids against a sky, panning slowly."""
    rng = np.random.default_rng(seed)
    hue = rng.uniform(0.5, 0.7)
    top = np.array(colorsys.hsv_to_rgb(hue, 0.5, rng.uniform(0.5, 0.95)), np.float32) * 255
    low = np.array(colorsys.hsv_to_rgb((hue + 0.05) % 1, 0.2, 1.0), np.float32) * 255
    ramp = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    image = Image.fromarray(np.broadcast_to(top + (low - top) * ramp, (h, w, 3)).astype(np.uint8), "RGB")
    draw = _Draw(image)
    ground = h * rng.uniform(0.7, 0.95)
    x = -w * 0.3 - (t * w * 0.04) % (w * 0.3)
    while x < w * 1.1:
        bw = w * rng.uniform(0.1, 0.3)
        top_y = ground - h * rng.uniform(0.2, 0.7)
        shade = int(rng.uniform(40, 170))
        draw.rectangle((x, top_y, x + bw, ground), fill=(shade, shade, int(shade * rng.uniform(0.9, 1.2))))
        win = max(2.0, bw / rng.uniform(4, 9))
        lit = tuple(int(c) for c in rng.uniform(180, 255, size=3))
        for wy in np.arange(top_y + win, ground - win, win * 1.6):
            for wx in np.arange(x + win * 0.5, x + bw - win, win * 1.5):
                if rng.random() < 0.6:
                    draw.rectangle((wx, wy, wx + win * 0.8, wy + win), fill=lit)
        x += bw + w * rng.uniform(0.0, 0.05)
    draw.rectangle((0, ground, w, h), fill=tuple(int(c) for c in rng.uniform(30, 90, size=3)))
    return image


def _draw_blockgame(seed: int, w: int, h: int, t: float, textures: tuple[Image.Image, ...]) -> Image.Image:
    """A side view of a block game built from a game's own textures: terrain columns, floating platforms,
    a player and a hotbar, scrolling as the player runs (the look of "parkour" gameplay streams)."""
    rng = np.random.default_rng(seed)
    pick = [textures[int(i)] for i in rng.choice(len(textures), size=min(5, len(textures)), replace=False)]
    b = max(4, round(h * rng.uniform(0.06, 0.13)))
    tiles = [tex.resize((b, b), Image.NEAREST) for tex in pick]
    hue = rng.uniform(0.5, 0.65)
    sky_top = np.array(colorsys.hsv_to_rgb(hue, 0.55, 0.95), np.float32) * 255
    sky_low = np.array(colorsys.hsv_to_rgb(hue, 0.2, 1.0), np.float32) * 255
    ramp = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    image = Image.fromarray(np.broadcast_to(sky_top + (sky_low - sky_top) * ramp, (h, w, 3)).astype(np.uint8))
    scroll = t * b * rng.uniform(2.0, 5.0)
    first = int(scroll // b) - 1
    columns = w // b + 3
    walk = np.cumsum(rng.integers(-1, 2, size=4096)) % 4  # the same terrain at every t, indexed by column
    rows = h // b + 1
    for c in range(columns):
        col = first + c
        x = round(col * b - scroll)
        height = 2 + int(walk[col % 4096]) + rows // 4
        for r in range(height):
            y = h - (r + 1) * b
            tile = tiles[0] if r == height - 1 else (tiles[1] if r > height - 4 else tiles[2])
            image.paste(tile, (x, y))
        if col % 7 == 3:  # a floating platform
            for k in range(3):
                image.paste(tiles[3 % len(tiles)], (x + k * b, h - (height + 4) * b))
    draw = _Draw(image)
    px, py = w * 0.35, h - (rows // 4 + 5) * b + b * abs(math.sin(t * 3.0)) * 1.5
    draw.rectangle((px, py, px + b * 0.8, py + b * 1.8), fill=tuple(int(c) for c in rng.uniform(40, 230, size=3)))
    slot = max(4, round(w * 0.08))
    x0 = (w - slot * 9) / 2
    for k in range(9):  # hotbar
        draw.rectangle((x0 + k * slot, h - slot - 2, x0 + (k + 1) * slot - 1, h - 3), outline=(200, 200, 200),
                       fill=(40, 40, 40))
        if k < len(tiles):
            image.paste(tiles[k].resize((max(1, slot - 6), max(1, slot - 6)), Image.NEAREST),
                        (round(x0 + k * slot + 3), h - slot + 1))
    _draw_hud(draw, w, h, int(100 + t * 37 + rng.integers(0, 900)))
    return image


def _draw_ui_overlay(canvas: Image.Image, seed: int) -> None:
    """A short-form app's interface over the frame: status bar, a column of action buttons on the right,
    and a caption/comment bar with a progress line at the bottom. Straight edges that are not a split."""
    rng = np.random.default_rng(seed)
    W, H = canvas.size
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    alpha = int(rng.uniform(90, 200))
    bar = H * rng.uniform(0.035, 0.06)
    draw.rectangle((0, 0, W, bar), fill=(0, 0, 0, alpha))
    font = _font(max(6, round(bar * 0.6)))
    draw.text((W * 0.05, bar / 2), f"{int(rng.integers(1, 12))}:{int(rng.integers(0, 60)):02d}", font=font,
              fill=(255, 255, 255, 255), anchor="lm")
    r = W * rng.uniform(0.04, 0.06)
    cx = W - r * 1.8
    for k in range(4):
        cy = H * 0.45 + k * r * 3.0
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(255, 255, 255, 210))
    bottom = H * rng.uniform(0.08, 0.14)
    draw.rectangle((0, H - bottom, W, H), fill=(0, 0, 0, alpha))
    draw.text((W * 0.05, H - bottom * 0.6), "@" + "user" + str(int(rng.integers(10, 999))), font=font,
              fill=(255, 255, 255, 255), anchor="lm")
    draw.line((0, H - bottom, W * rng.uniform(0.1, 0.9), H - bottom), fill=(255, 255, 255, 255),
              width=max(1, round(H * 0.005)))
    canvas.paste(Image.alpha_composite(canvas.convert("RGBA"), overlay).convert("RGB"))


_PROCEDURAL = {
    "stripes": _draw_stripes,
    "gradient": _draw_gradient,
    "checker": _draw_checker,
    "plasma": _draw_plasma,
    "noise": _draw_noise,
    "blobs": _draw_blobs,
    "runner": _draw_runner,
    "platformer": _draw_platformer,
    "chat": _draw_chat,
    "landscape": _draw_landscape,
    "buildings": _draw_buildings,
}


def render_stream(spec: StreamSpec, width: int, height: int, t: float = 0.0) -> Image.Image:
    """Render one stream at a tile size and time, colour jitter included.

    >>> render_stream(StreamSpec("chelsea", seed=1, zoom=1.5), 120, 80).size
    (120, 80)
    """
    w, h = max(1, width), max(1, height)
    if spec.source in _PROCEDURAL:
        image = _PROCEDURAL[spec.source](spec.seed, w, h, t * spec.speed)
    elif spec.source.startswith("game:"):
        image = _draw_blockgame(spec.seed, w, h, t * spec.speed, imagery.load_textures(spec.source))
    else:
        photo = load_photo(spec.source) if spec.source in PHOTO_NOUNS else imagery.load_image(spec.source)
        pw, ph = photo.size
        crop_w = min(pw, ph * w / h)
        zoom = min(max(spec.zoom * (1.0 + spec.vzoom * t), 1.0), max(spec.zoom, _MAX_ZOOM))
        crop_w /= zoom
        crop_h = crop_w * h / w
        crop_w, crop_h = min(crop_w, pw), min(crop_h, ph)
        x0 = _bounce(spec.cx + spec.vx * t) * max(pw - crop_w, 0.0)
        y0 = _bounce(spec.cy + spec.vy * t) * max(ph - crop_h, 0.0)
        image = photo.resize((w, h), Image.BILINEAR, box=(x0, y0, x0 + crop_w, y0 + crop_h))
        if spec.flip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if spec.blur > 0:
        image = image.filter(ImageFilter.GaussianBlur(spec.blur))
    if spec.saturation != 1.0:
        image = ImageEnhance.Color(image).enhance(spec.saturation)
    levels = np.arange(256, dtype=np.float32)
    base = (levels - 128.0) * spec.contrast + 128.0 + spec.brightness
    lut = np.concatenate([np.clip(base * g, 0, 255) for g in spec.gains]).astype(np.uint8)
    return image.point(lut.tolist())


def _draw_stream(rng: np.random.Generator, source: str, blur_p: float = 0.0,
                 style: StreamStyle = RENDERER_STYLE) -> StreamSpec:
    is_photo = is_picture(source)
    blur = float(rng.uniform(0.5, 2.0)) if blur_p and rng.random() < blur_p else 0.0
    spec = StreamSpec(
        blur=blur,
        source=source,
        seed=int(rng.integers(1 << 31)),
        zoom=float(rng.uniform(1.0, 1.5)) if is_photo else 1.0,
        # Photos keep their subject near the middle, so crops start central and then pan.
        cx=float(rng.uniform(0.2, 0.8)),
        cy=float(rng.uniform(0.2, 0.8)),
        # Short-form footage moves: a pan crosses the free range in 2-7 s, zoom drifts up to 15 %/s.
        vx=float(rng.choice((-1, 1)) * rng.uniform(0.15, 0.5)),
        vy=float(rng.uniform(-0.2, 0.2)),
        vzoom=float(rng.uniform(-0.08, 0.15)),
        flip=bool(rng.random() < 0.5),
        speed=float(rng.uniform(0.5, 2.0)),
        brightness=float(rng.uniform(-25, 25)),
        contrast=float(rng.uniform(0.8, 1.2)),
        saturation=float(rng.uniform(0.7, 1.4)),
        gains=tuple(float(g) for g in rng.uniform(0.88, 1.12, size=3)),
    )
    # Drawn from the stream's own seed, not from rng: asking for it changes no other draw, so the renderer's
    # own frames stay as they were and the same seeds draw the same frames, graded or not.
    if style.ungraded_share and np.random.default_rng(spec.seed).random() < style.ungraded_share:
        spec = replace(spec, brightness=0.0, contrast=1.0, saturation=1.0, gains=(1.0, 1.0, 1.0))
    return spec


def _blur_share(pool: str) -> float:
    """Share of streams drawn soft: real pools blur some of every layout's streams alike."""
    return 0.25 if pool in REAL_POOLS else 0.0


def _pick_real_sources(rng: np.random.Generator, pool: str, k: int, first: StreamSpec | None,
                       game_last: float, source_mix: dict | None = None) -> list[str]:
    """k sources of a real pool, each drawn alike whatever the frame's layout (pictures, stills of footage,
    games and procedural scenes, by ``source_mix``: a share per kind, default _REAL_MIX), distinct unless the
    composite is two crops of one picture."""
    part = pool.split("-", 1)[1]
    pictures, games = imagery.list_images(part), imagery.list_games(part) or ("platformer",)
    footage = imagery.list_footage(part) or pictures
    procedural = tuple(PROCEDURAL_NOUNS)  # horizons and skylines too: straight edges inside one stream
    mix = source_mix or _REAL_MIX  # checked once per frame, in draw_frame_spec
    kinds, weights = list(mix), np.array(list(mix.values()), dtype=np.float64)

    by_kind = {"picture": pictures, "footage": footage, "game": games, "procedural": procedural}

    def draw_one(kind: str | None = None) -> str:
        kind = kind or kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
        options = by_kind[kind]
        return options[int(rng.integers(len(options)))]

    chosen = [first.source if first else draw_one()]
    if k > 1 and is_picture(chosen[0]) and rng.random() < _SAME_PICTURE_SHARE:
        return chosen * k
    same = next((kind for kind, options in by_kind.items() if chosen[0] in options), None)
    same_kind = same if same and k > 1 and len(by_kind[same]) > k and rng.random() < _SAME_KIND_SHARE else None
    while len(chosen) < k:
        pick = draw_one(same_kind)
        if pick not in chosen:
            chosen.append(pick)
    if k > 1 and rng.random() < game_last:
        last = games[int(rng.integers(len(games)))]
        if last not in chosen[:-1]:
            chosen[-1] = last
    return chosen


def check_source_mix(source_mix: dict[str, float]) -> dict[str, float]:
    """A share per kind of real-pool stream (the kinds of _REAL_MIX), refused when a kind is unknown or no
    share is positive.

    >>> check_source_mix({"footage": 2, "picture": 1})
    {'footage': 2.0, 'picture': 1.0}
    """
    unknown = sorted(set(source_mix) - set(_REAL_MIX))
    if unknown or not source_mix or any(v < 0 for v in source_mix.values()) or sum(source_mix.values()) <= 0:
        raise ValueError(f"source_mix takes non-negative shares of {sorted(_REAL_MIX)}, not {source_mix}")
    return {kind: float(share) for kind, share in source_mix.items()}


def _pick_sources(rng: np.random.Generator, pool: str, k: int, first: StreamSpec | None = None,
                  photo_share: float = 0.55, game_last: float = 0.0, source_mix: dict | None = None) -> list[str]:
    """k distinct sources from a pool, each a photo with probability photo_share; ``first`` fixes the
    first; with probability ``game_last`` the last is a game-like scene (the typical bottom of a split).
    A real pool draws every frame's sources alike, by ``source_mix`` (see _pick_real_sources)."""
    if pool in REAL_POOLS:
        return _pick_real_sources(rng, pool, k, first, game_last, source_mix)
    exclude = (first.source,) if first else ()
    photos = [s for s in (TRAIN_PHOTOS if pool == "train" else HOLDOUT_PHOTOS) if s not in exclude]
    procedural = [s for s in PROCEDURAL_NOUNS if s not in exclude and s not in ("landscape", "buildings")]
    chosen: list[str] = [first.source] if first else []
    while len(chosen) < k:
        options = photos if (rng.random() < photo_share and photos) else procedural
        options = [s for s in options if s not in chosen] or [s for s in photos + procedural if s not in chosen]
        chosen.append(options[int(rng.integers(len(options)))])
    games = [g for g in GAME_SOURCES if g not in chosen[:-1]]
    if k > 1 and games and rng.random() < game_last:
        chosen[-1] = games[int(rng.integers(len(games)))]
    return chosen


# ---------------------------------------------------------------------------------------------------
# Frame specs: layouts, decorations and truth


def _pct(x: float) -> int:
    return int(round(x * 20) * 5)


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _with(extras: list[str]) -> str:
    return f", with {_join(extras)}" if extras else ""


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _draw_caption(rng: np.random.Generator, W: int, y: float) -> Caption:
    style = ("white", "black", "clear")[int(rng.integers(3))]
    text = _CAPTIONS[int(rng.integers(len(_CAPTIONS)))]
    return Caption(text=text, y=y, style=style, font_px=max(6, round(W * rng.uniform(0.05, 0.075))))


def _caption_words(caption: Caption) -> str:
    return "caption text" if caption.style == "clear" else "a caption bar"


def _divider(rng: np.random.Generator, box: tuple[float, float, float, float], size: tuple[int, int]):
    thickness = max(1, round(min(size) * rng.uniform(0.004, 0.02)))
    colour = ((255, 255, 255), (0, 0, 0), _vivid(rng))[int(rng.integers(3))]
    return (box, thickness, colour)


def _decorate(rng: np.random.Generator, size: tuple[int, int], extras: list[str], *, caption_p: float,
              caption_ys: tuple[float, ...], watermark_p: float = 0.15) -> dict:
    """Random captions and watermark shared by all layouts; appends their words to extras."""
    H, W = size
    out: dict = {}
    if rng.random() < caption_p:
        caption = _draw_caption(rng, W, caption_ys[int(rng.integers(len(caption_ys)))])
        out["captions"] = (caption,)
        extras.append(_caption_words(caption))
    if rng.random() < watermark_p:
        corner = _CORNERS[int(rng.integers(4))]
        out["watermark"] = (f"@clips{int(rng.integers(100, 9999))}", corner, max(6, round(W * 0.035)))
        extras.append("a small watermark")
    return out


def _spec_vertical(rng, size, pool, main: StreamSpec | None = None, source_mix: dict | None = None,
                   style: StreamStyle = RENDERER_STYLE) -> FrameSpec:
    H, W = size
    a, b = _pick_sources(rng, pool, 2, main, game_last=_GAME_LAST["vertical"] * style.game_last_scale,
                         source_mix=source_mix)
    r = float(rng.uniform(0.35, 0.65))
    tiles = [Tile(0, (0.0, 0.0, 1.0, r)), Tile(1, (0.0, r, 1.0, 1.0))]
    extras: list[str] = []
    kw: dict = {}
    if rng.random() < 0.15:  # letterboxed split: black bars above and below the whole split
        bar = float(rng.uniform(0.04, 0.12))
        inner = bar + (1 - 2 * bar) * r
        tiles = [Tile(0, (0.0, bar, 1.0, inner)), Tile(1, (0.0, inner, 1.0, 1 - bar))]
        r = inner
        extras.append("black bars above and below")
    if rng.random() < 0.35:
        kw["lines"] = (_divider(rng, (0.0, r, 1.0, r), size),)
        extras.append("a thin divider line")
    kw.update(_decorate(rng, size, extras, caption_p=0.35, caption_ys=(0.12, r, 0.88)))
    templates = (
        "Two streams stacked top and bottom: {a} above, {b} below{x}.",
        "A split screen with {a} on top and {b} underneath{x}.",
        "Top and bottom split: {a} in the upper part, {b} in the lower part{x}.",
    )
    description = _cap(templates[int(rng.integers(3))].format(a=noun_of(a), b=noun_of(b), x=_with(extras)))
    explanation = f"Sludge: two unrelated streams share the frame, split horizontally at {_pct(r)} % height."
    truth = FrameTruth(True, "vertical", description, explanation, sources=(a, b))
    streams = (main or _draw_stream(rng, a, _blur_share(pool), style), _draw_stream(rng, b, _blur_share(pool), style))
    return FrameSpec(truth=truth, streams=streams, tiles=tuple(tiles), **kw)


def _spec_horizontal(rng, size, pool, main: StreamSpec | None = None, source_mix: dict | None = None,
                     style: StreamStyle = RENDERER_STYLE) -> FrameSpec:
    H, W = size
    a, b = _pick_sources(rng, pool, 2, main, game_last=_GAME_LAST["horizontal"] * style.game_last_scale,
                         source_mix=source_mix)
    c = float(rng.uniform(0.35, 0.65))
    extras: list[str] = []
    kw: dict = {}
    y0, y1 = 0.0, 1.0
    if H > W and rng.random() < 0.7:  # portrait frame: the side-by-side band is letterboxed
        band = float(rng.uniform(0.3, 0.7))
        y0 = float(rng.uniform(0.35, 0.65)) * (1 - band)
        y1 = y0 + band
        extras.append("black bars above and below")
    tiles = (Tile(0, (0.0, y0, c, y1)), Tile(1, (c, y0, 1.0, y1)))
    if rng.random() < 0.35:
        kw["lines"] = (_divider(rng, (c, y0, c, y1), size),)
        extras.append("a thin divider line")
    caption_ys = (y0 / 2, (1 + y1) / 2) if y1 - y0 < 0.8 else (0.1, 0.9)
    kw.update(_decorate(rng, size, extras, caption_p=0.4, caption_ys=caption_ys))
    templates = (
        "Two streams side by side: {a} on the left, {b} on the right{x}.",
        "A side-by-side split with {a} at left and {b} at right{x}.",
        "Left and right split: {a} next to {b}{x}.",
    )
    description = _cap(templates[int(rng.integers(3))].format(a=noun_of(a), b=noun_of(b), x=_with(extras)))
    explanation = f"Sludge: two unrelated streams share the frame, split vertically at {_pct(c)} % width."
    truth = FrameTruth(True, "horizontal", description, explanation, sources=(a, b))
    streams = (main or _draw_stream(rng, a, _blur_share(pool), style), _draw_stream(rng, b, _blur_share(pool), style))
    return FrameSpec(truth=truth, streams=streams, tiles=tiles, **kw)


def _inset_box(rng, size, share: float, corner: str) -> tuple[float, float, float, float]:
    H, W = size
    aspect = float(rng.uniform(0.56, 1.78))  # inset height / width
    rel_h = min(share * W * aspect / H, 0.45)
    margin_x = float(rng.uniform(0.02, 0.06))
    margin_y = margin_x * W / H + (float(rng.uniform(0.03, 0.12)) if rng.random() < 0.5 else 0.0)
    x0 = margin_x if "left" in corner else 1 - margin_x - share
    y0 = margin_y if "top" in corner else 1 - margin_y - rel_h
    return (x0, y0, x0 + share, y0 + rel_h)


def _spec_pip(rng, size, pool, main: StreamSpec | None = None, source_mix: dict | None = None,
              style: StreamStyle = RENDERER_STYLE) -> FrameSpec:
    H, W = size
    a, b = _pick_sources(rng, pool, 2, main, game_last=_GAME_LAST["pip"] * style.game_last_scale,
                         source_mix=source_mix)
    share = float(rng.uniform(0.15, 0.4))
    corner = _CORNERS[int(rng.integers(4))]
    box = _inset_box(rng, size, share, corner)
    extras: list[str] = []
    radius = round(share * W * rng.uniform(0.06, 0.2)) if rng.random() < 0.4 else 0
    outline = max(1, round(W * rng.uniform(0.004, 0.015))) if rng.random() < 0.5 else 0
    if radius:
        extras.append("rounded corners on the inset")
    if outline:
        extras.append("an outline around the inset")
    colour = ((255, 255, 255), (0, 0, 0), _vivid(rng))[int(rng.integers(3))]
    tiles = (Tile(0, (0.0, 0.0, 1.0, 1.0)), Tile(1, box, radius=radius, outline=outline, outline_colour=colour))
    ys = (0.12, 0.88) if "bottom" in corner else (0.88, 0.75)
    kw = _decorate(rng, size, extras, caption_p=0.3, caption_ys=ys)
    templates = (
        "{A} fills the frame, with a small inset of {b} in the {c} corner{x}.",
        "Picture in picture: {a} in the main view and {b} in a {c} inset{x}.",
    )
    description = _cap(templates[int(rng.integers(2))].format(A=_cap(noun_of(a)), a=noun_of(a), b=noun_of(b),
                                                              c=corner, x=_with(extras)))
    explanation = (f"Sludge: a second, unrelated stream is inset in the {corner} corner, "
                   f"{_pct(share)} % of the frame width.")
    truth = FrameTruth(True, "pip", description, explanation, sources=(a, b))
    streams = (main or _draw_stream(rng, a, _blur_share(pool), style), _draw_stream(rng, b, _blur_share(pool), style))
    return FrameSpec(truth=truth, streams=streams, tiles=tiles, **kw)


def _spec_other(rng, size, pool, main: StreamSpec | None = None, source_mix: dict | None = None,
                style: StreamStyle = RENDERER_STYLE) -> FrameSpec:
    H, W = size
    variant = ("grid", "rows", "t_split", "mosaic")[int(rng.integers(4))]
    u, v = float(rng.uniform(0.35, 0.65)), float(rng.uniform(0.35, 0.65))
    if variant == "grid":
        boxes = [(0, 0, u, v), (u, 0, 1, v), (0, v, u, 1), (u, v, 1, 1)]
        shape = "a two-by-two grid"
    elif variant == "rows":
        r1 = float(rng.uniform(0.25, 0.4))
        r2 = r1 + float(rng.uniform(0.25, 0.4))
        boxes = [(0, 0, 1, r1), (0, r1, 1, r2), (0, r2, 1, 1)]
        shape = "three stacked rows"
    elif variant == "t_split":
        boxes = [(0, 0, 1, v), (0, v, u, 1), (u, v, 1, 1)]
        shape = "one wide tile above two side by side"
    else:
        boxes = [(0, 0, u, 1), (u, 0, 1, v), (u, v, 1, 1)]
        shape = "a tall tile beside two stacked tiles"
    sources = _pick_sources(rng, pool, len(boxes), main, source_mix=source_mix)
    extras: list[str] = []
    kw: dict = {}
    gutter = rng.random() < 0.5
    if gutter:
        g = max(1, round(min(size) * rng.uniform(0.006, 0.02)))
        gx, gy = g / W / 2, g / H / 2
        boxes = [(x0 + (gx if x0 > 0 else 0), y0 + (gy if y0 > 0 else 0), x1 - (gx if x1 < 1 else 0),
                  y1 - (gy if y1 < 1 else 0)) for x0, y0, x1, y1 in boxes]
        kw["background"] = ((255, 255, 255), (0, 0, 0), _vivid(rng))[int(rng.integers(3))]
        extras.append("thin gaps between the tiles")
    kw.update(_decorate(rng, size, extras, caption_p=0.3, caption_ys=(0.1, 0.9)))
    nouns = _join([noun_of(s) for s in sources])
    templates = (
        "A collage of {n} tiles in {s}, showing {l}{x}.",
        "{n_cap} unrelated streams tiled as {s}: {l}{x}.",
    )
    words = {3: "three", 4: "four"}[len(boxes)]
    description = _cap(templates[int(rng.integers(2))].format(n=words, n_cap=_cap(words), s=shape, l=nouns,
                                                              x=_with(extras)))
    explanation = f"Sludge: {words} unrelated streams are tiled in one frame."
    truth = FrameTruth(True, "other", description, explanation, sources=tuple(sources))
    tiles = tuple(Tile(i, tuple(float(c) for c in box)) for i, box in enumerate(boxes))
    streams = tuple(main if main and i == 0 else _draw_stream(rng, s, _blur_share(pool), style)
                    for i, s in enumerate(sources))
    return FrameSpec(truth=truth, streams=streams, tiles=tiles, **kw)


def _spec_single(rng, size, pool, distractor: bool, main: StreamSpec | None = None,
                 source_mix: dict | None = None, style: StreamStyle = RENDERER_STYLE) -> FrameSpec:
    H, W = size
    options = _REAL_DISTRACTORS if pool in REAL_POOLS else _DISTRACTORS
    variant = options[int(rng.integers(len(options)))] if distractor else "plain"
    if variant == "horizon":
        source = "landscape"
    elif variant == "skyline":
        source = "buildings"
    else:
        source = _pick_sources(rng, pool, 1, main, photo_share=0.85 if variant != "plain" else 0.6,
                               source_mix=source_mix)[0]
    stream = main if main and main.source == source else _draw_stream(rng, source, _blur_share(pool), style)
    noun = noun_of(source)
    extras: list[str] = []
    kw: dict = {}
    streams: tuple[StreamSpec, ...] = (stream,)
    tiles: tuple[Tile, ...] = (Tile(0, (0.0, 0.0, 1.0, 1.0)),)
    caption_ys: tuple[float, ...] = (0.1, 0.88)
    if variant == "plain":
        look = rng.random()
        if look < 0.3 and H > W:  # 16:9-ish content letterboxed in a portrait frame
            band = float(rng.uniform(0.3, 0.7))
            y0 = (1 - band) / 2
            tiles = (Tile(0, (0.0, y0, 1.0, y0 + band)),)
            caption_ys = (y0 / 2, 1 - y0 / 2)
            if rng.random() < 0.5:
                kw["blur_fill"] = True
                extras.append("a blurred copy of it filling the space above and below")
            else:
                extras.append("black bars above and below")
        templates = ("A single stream showing {a}{x}.", "One full view of {a}{x}.", "{A} filling the frame{x}.")
        explanations = ("Not sludge: the frame shows a single stream.", "Not sludge: only one stream fills the frame.")
        kw.update(_decorate(rng, size, extras, caption_p=0.35, caption_ys=caption_ys))
        description = templates[int(rng.integers(3))].format(a=noun, A=_cap(noun), x=_with(extras))
        explanation = explanations[int(rng.integers(2))]
    elif variant == "mirror":
        axis = "h" if rng.random() < 0.5 else "v"
        if axis == "h":
            tiles = (Tile(0, (0.0, 0.0, 0.5, 1.0)), Tile(0, (0.5, 0.0, 1.0, 1.0), mirror="h"))
            where = "left and right"
        else:
            tiles = (Tile(0, (0.0, 0.0, 1.0, 0.5)), Tile(0, (0.0, 0.5, 1.0, 1.0), mirror="v"))
            where = "top and bottom"
        kw.update(_decorate(rng, size, extras, caption_p=0.25, caption_ys=caption_ys))
        description = f"A single scene of {noun}, mirrored {where}{_with(extras)}."
        explanation = "Not sludge: the two halves are the same scene mirrored, not two unrelated streams."
    elif variant == "band":
        y = float(rng.uniform(0.35, 0.65))
        half = float(rng.uniform(0.02, 0.06))
        kw["bands"] = ((0.0, y - half, 1.0, y + half),)
        kw.update(_decorate(rng, size, extras, caption_p=0.25, caption_ys=caption_ys))
        description = f"A single scene of {noun} crossed by a black band{_with(extras)}."
        explanation = "Not sludge: the same scene continues above and below the band; there is one stream."
    elif variant in ("horizon", "skyline"):
        kw.update(_decorate(rng, size, extras, caption_p=0.3, caption_ys=caption_ys))
        description = f"A single scene: {noun}{_with(extras)}."
        edge = "horizon" if variant == "horizon" else "skyline"
        explanation = f"Not sludge: the {edge} is an edge inside one scene, not a split between streams."
    elif variant == "ui_bars":
        kw["ui_overlay"] = int(rng.integers(1 << 31))
        kw.update(_decorate(rng, size, extras, caption_p=0.25, caption_ys=(0.3,)))
        description = f"A single stream showing {noun} under an app's interface bars and buttons{_with(extras)}."
        explanation = "Not sludge: the bars and buttons are the app's interface over one stream."
    elif variant == "zoom_inset":
        share = float(rng.uniform(0.25, 0.45))
        corner = _CORNERS[int(rng.integers(4))]
        zoomed = replace(stream, zoom=min(stream.zoom * float(rng.uniform(2.0, 3.5)), 4.0))
        streams = (stream, zoomed)
        outline = max(1, round(W * 0.01))
        tiles = (Tile(0, (0.0, 0.0, 1.0, 1.0)), Tile(1, _inset_box(rng, size, share, corner), outline=outline))
        kw.update(_decorate(rng, size, extras, caption_p=0.25, caption_ys=caption_ys))
        description = (f"{_cap(noun)} with a {corner} inset showing a zoomed-in part of the same scene"
                       f"{_with(extras)}.")
        explanation = "Not sludge: the inset repeats the same scene zoomed in, not an unrelated stream."
    else:  # border
        m = float(rng.uniform(0.05, 0.14))
        tiles = (Tile(0, (m, m * W / H, 1 - m, 1 - m * W / H)),)
        kw["background"] = _vivid(rng, float(rng.uniform(0.3, 1.0)))
        kw.update(_decorate(rng, size, extras, caption_p=0.25, caption_ys=(0.5 * m * W / H,)))
        description = f"A single stream showing {noun} inside a thick coloured border{_with(extras)}."
        explanation = "Not sludge: the border frames one stream; there is no second stream."
    truth = FrameTruth(False, "none", _cap(description), explanation, distractor=distractor,
                       sources=tuple(dict.fromkeys(s.source for s in streams)))
    return FrameSpec(truth=truth, streams=streams, tiles=tiles, **kw)


def draw_frame_spec(rng: np.random.Generator, layout: str | None = None, size: tuple[int, int] = (448, 252),
                    pool: str = "train", main: StreamSpec | None = None,
                    source_mix: dict[str, float] | None = None, style: StreamStyle = RENDERER_STYLE) -> FrameSpec:
    """Draw a frame's layout, streams, decorations and truth (no pixels yet).

    ``layout``: one of LAYOUTS, "none" (single stream, a distractor 30 % of the time), "single" (never a
    distractor), "distractor" (always one), or None (sludge half the time, layout weighted toward
    vertical). ``main``: a stream to keep as the first stream (a clip continuing across a layout change).
    ``source_mix``: in a real pool, the share of each kind of stream (default _REAL_MIX). ``style``: the
    renderer's habits a model could lean on, dialled down (see StreamStyle).

    >>> draw_frame_spec(np.random.default_rng(0), "pip").truth.layout
    'pip'
    """
    pool_sources(pool)
    source_mix = check_source_mix(source_mix) if source_mix else None
    if layout is None:
        layout = pick_layout(rng, 0.5)
    if layout == "vertical":
        spec = _spec_vertical(rng, size, pool, main, source_mix, style)
    elif layout == "horizontal":
        spec = _spec_horizontal(rng, size, pool, main, source_mix, style)
    elif layout == "pip":
        spec = _spec_pip(rng, size, pool, main, source_mix, style)
    elif layout == "other":
        spec = _spec_other(rng, size, pool, main, source_mix, style)
    elif layout in ("none", "single", "distractor"):
        distractor = layout == "distractor" or (layout == "none" and bool(rng.random() < _DISTRACTOR_SHARE))
        spec = _spec_single(rng, size, pool, distractor, main, source_mix, style)
    else:
        raise ValueError(f"layout must be one of {LAYOUTS + FRAME_KINDS} or None, got {layout!r}")
    if pool in REAL_POOLS and spec.ui_overlay is None and rng.random() < 0.15:
        spec = replace(spec, ui_overlay=int(rng.integers(1 << 31)))  # an app's interface over any layout
    return spec


def name_orientation(size: tuple[int, int]) -> str:
    """ "portrait" or "landscape" for a frame size (height, width); a square frame counts as portrait.

    >>> name_orientation((1920, 1080)), name_orientation((720, 1280))
    ('portrait', 'landscape')
    """
    return "portrait" if size[0] >= size[1] else "landscape"


def pick_layout(rng: np.random.Generator, sludge_share: float, layout_weights: dict[str, float] | None = None) -> str:
    """"none" with probability 1 - sludge_share, else a sludge layout drawn by ``layout_weights`` (default:
    vertical stacks the most often, as in short-form video).

    >>> pick_layout(np.random.default_rng(0), 1.0, {"horizontal": 1.0})
    'horizontal'
    """
    if rng.random() >= sludge_share:
        return "none"
    shares = layout_weights or _LAYOUT_WEIGHTS
    names = list(shares)
    weights = np.array([shares[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


# ---------------------------------------------------------------------------------------------------
# Rendering


def _px_box(box: tuple[float, float, float, float], W: int, H: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (round(box[0] * W), round(box[1] * H), round(box[2] * W), round(box[3] * H))
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def _draw_text_caption(canvas: Image.Image, caption: Caption) -> None:
    W, H = canvas.size
    draw = _Draw(canvas)
    font = _font(caption.font_px)
    words, lines = caption.text.split(), [""]
    for word in words:  # greedy wrap to 90 % of the width
        trial = f"{lines[-1]} {word}".strip()
        if lines[-1] and draw.textlength(trial, font=font) > W * 0.9:
            lines.append(word)
        else:
            lines[-1] = trial
    line_h = caption.font_px * 1.3
    bar_h = line_h * len(lines) + caption.font_px * 0.6
    top = min(max(caption.y * H - bar_h / 2, 0), H - bar_h)
    if caption.style == "white":
        draw.rectangle((0, top, W, top + bar_h), fill=(255, 255, 255))
        fill, stroke = (0, 0, 0), 0
    elif caption.style == "black":
        draw.rectangle((0, top, W, top + bar_h), fill=(0, 0, 0))
        fill, stroke = (255, 255, 255), 0
    else:
        fill, stroke = (255, 255, 255), max(1, caption.font_px // 7)
    for i, line in enumerate(lines):
        y = top + caption.font_px * 0.3 + i * line_h + line_h / 2
        draw.text((W / 2, y), line, font=font, fill=fill, anchor="mm", stroke_width=stroke, stroke_fill=(0, 0, 0))


def render_frame(spec: FrameSpec, size: tuple[int, int] = (448, 252), t: float = 0.0) -> np.ndarray:
    """Render a frame spec to uint8 RGB (H, W, 3) at time t.

    >>> spec = draw_frame_spec(np.random.default_rng(0), "vertical")
    >>> render_frame(spec, (448, 252), t=0.5).shape
    (448, 252, 3)
    """
    H, W = size
    canvas = Image.new("RGB", (W, H), spec.background)
    if spec.blur_fill:
        small = render_stream(spec.streams[0], max(1, W // 8), max(1, H // 8), t)
        canvas.paste(small.filter(ImageFilter.GaussianBlur(2)).resize((W, H), Image.BILINEAR).point(
            lambda v: int(v * 0.7)))
    rendered: dict[tuple[int, int, int], Image.Image] = {}
    draw = _Draw(canvas)
    for tile in spec.tiles:
        x0, y0, x1, y1 = _px_box(tile.box, W, H)
        key = (tile.stream, x1 - x0, y1 - y0)
        if key not in rendered:
            rendered[key] = render_stream(spec.streams[tile.stream], x1 - x0, y1 - y0, t)
        image = rendered[key]
        if tile.mirror == "h":
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        elif tile.mirror == "v":
            image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        if tile.outline:
            o = tile.outline
            draw.rounded_rectangle((x0 - o, y0 - o, x1 - 1 + o, y1 - 1 + o), radius=tile.radius + o if tile.radius
                                   else 0, fill=tile.outline_colour)
        if tile.radius:
            mask = Image.new("L", image.size, 0)
            ImageDraw.Draw(mask).rounded_rectangle((0, 0, image.width - 1, image.height - 1), radius=tile.radius,
                                                   fill=255)
            canvas.paste(image, (x0, y0), mask)
        else:
            canvas.paste(image, (x0, y0))
    for band in spec.bands:
        draw.rectangle(_px_box(band, W, H), fill=(0, 0, 0))
    for box, thickness, colour in spec.lines:
        x0, y0, x1, y1 = box[0] * W, box[1] * H, box[2] * W, box[3] * H
        draw.line((x0, y0, x1, y1), fill=colour, width=thickness)
    if spec.border:
        b = spec.border
        draw.rectangle((0, 0, W - 1, H - 1), outline=spec.border_colour, width=b)
    if spec.ui_overlay is not None:
        _draw_ui_overlay(canvas, spec.ui_overlay)
    for caption in spec.captions:
        _draw_text_caption(canvas, caption)
    if spec.watermark:
        text, corner, px = spec.watermark
        x = W - px if "right" in corner else px
        y = H - px * 2 if "bottom" in corner else px * 2
        draw.text((x, y), text, font=_font(px), fill=(235, 235, 235), anchor=("r" if "right" in corner else "l") + "m",
                  stroke_width=1, stroke_fill=(60, 60, 60))
    return np.array(canvas, dtype=np.uint8)


# ---------------------------------------------------------------------------------------------------
# Public frame API


def make_frame(rng: np.random.Generator, layout: str | None = None, size: tuple[int, int] = (448, 252),
               pool: str = "train", t: float = 0.0) -> tuple[np.ndarray, FrameTruth]:
    """One synthetic frame, uint8 RGB (H, W, 3), and its truth. ``size`` is (height, width).

    >>> frame, truth = make_frame(np.random.default_rng(3), layout="none", size=(64, 36))
    >>> frame.shape, truth.sludge
    ((64, 36, 3), False)
    """
    spec = draw_frame_spec(rng, layout, size, pool)
    return render_frame(spec, size, t), spec.truth


def make_frames(seed: int, n: int, size: tuple[int, int] = (448, 252), pool: str = "train",
                sludge_share: float = 0.5) -> tuple[np.ndarray, list[FrameTruth]]:
    """n frames (n, H, W, 3) and their truths; frame i depends only on (seed, i), so prefixes agree.

    >>> frames, truths = make_frames(0, 4, size=(64, 36))
    >>> frames.shape, len(truths)
    ((4, 64, 36, 3), 4)
    """
    H, W = size
    frames = np.empty((n, H, W, 3), dtype=np.uint8)
    truths: list[FrameTruth] = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        frames[i], truth = make_frame(rng, pick_layout(rng, sludge_share), size, pool)
        truths.append(truth)
    return frames, truths


def draw_balanced_specs(rng: np.random.Generator, n: int, pool: str = "real-train",
                        sizes: tuple[tuple[int, int], ...] = ((448, 252),),
                        size_weights: tuple[float, ...] | None = None,
                        layout_weights: dict[str, float] | None = None,
                        source_mix: dict[str, float] | None = None,
                        style: StreamStyle = RENDERER_STYLE) -> list[tuple[FrameSpec, tuple[int, int]]]:
    """n frame specs (with their sizes) in which content cannot predict the label: every stream of every
    composite is followed by a single-stream frame of the same source (another crop, other jitter), so
    each picture appears as often alone as inside composites. About 1 frame in 3 is sludge. The composites'
    layouts are drawn by ``layout_weights`` (a share per layout; default: vertical stacks the most often), their
    streams' kinds by ``source_mix`` and their look by ``style`` (see draw_frame_spec).

    >>> specs = draw_balanced_specs(np.random.default_rng(0), 6, pool="train")
    >>> [sp.truth.sludge for sp, _ in specs][:1]
    [True]
    """
    weights = np.array(size_weights or [1.0] * len(sizes), dtype=np.float64)
    out: list[tuple[FrameSpec, tuple[int, int]]] = []

    def pick_size() -> tuple[int, int]:
        return sizes[int(rng.choice(len(sizes), p=weights / weights.sum()))]

    while len(out) < n:
        size = pick_size()
        composite = draw_frame_spec(rng, pick_layout(rng, 1.0, layout_weights), size, pool, source_mix=source_mix,
                                    style=style)
        out.append((composite, size))
        for stream in composite.streams:
            if len(out) >= n:
                break
            size = pick_size()
            fresh = _draw_stream(rng, stream.source, _blur_share(pool), style)
            layout = "distractor" if rng.random() < _DISTRACTOR_SHARE else "single"
            single = draw_frame_spec(rng, layout, size, pool, main=fresh, style=style)
            if single.streams[0].source != stream.source:  # a horizon or skyline distractor brings its own
                single = draw_frame_spec(rng, "single", size, pool, main=fresh, style=style)
            out.append((single, size))
    return out


def degrade_frame(rng: np.random.Generator, frame: np.ndarray) -> np.ndarray:
    """What a frame goes through on its way to a viewer, drawn alike for every layout: JPEG blocks (as a
    codec leaves them), softening, and a lower source resolution scaled back up.

    >>> degrade_frame(np.random.default_rng(0), np.zeros((64, 36, 3), np.uint8)).shape
    (64, 36, 3)
    """
    image = Image.fromarray(frame)
    W, H = image.size
    if rng.random() < 0.25:
        scale = float(rng.uniform(0.35, 0.7))
        image = image.resize((max(8, round(W * scale)), max(8, round(H * scale))), Image.BILINEAR)
        image = image.resize((W, H), Image.BILINEAR)
    if rng.random() < 0.15:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.4, 1.2))))
    if rng.random() < 0.5:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(rng.integers(20, 90)))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def recolour_frame(rng: np.random.Generator, frame: np.ndarray) -> np.ndarray:
    """The whole frame in other colours, one of three ways: its channels swapped, its hues turned by a random
    angle, or grey. Every stream turns alike, so no seam is added; black and white stay as they are, so a
    letterbox bar or a caption bar keeps the colour its description names.

    >>> int(recolour_frame(np.random.default_rng(0), np.zeros((4, 4, 3), np.uint8)).max())
    0
    """
    way = int(rng.integers(3))
    if way == 0:
        order = [(0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)][int(rng.integers(5))]
        return np.ascontiguousarray(frame[..., order])
    if way == 1:
        hsv = np.asarray(Image.fromarray(frame).convert("HSV")).copy()
        hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(rng.integers(32, 224))) % 256
        return np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"), dtype=np.uint8)
    grey = np.asarray(Image.fromarray(frame).convert("L"))
    return np.repeat(grey[..., None], 3, axis=2)


# ---------------------------------------------------------------------------------------------------
# Clips


@dataclass(frozen=True)
class ClipSegment:
    """Frames [start, stop) of a clip share one frame spec; its streams keep moving with time."""

    start: int
    stop: int
    frame: FrameSpec


@dataclass(frozen=True)
class ClipSpec:
    """A clip: size (height, width), frame rate, and segments that may change layout mid-clip."""

    num_frames: int
    fps: float
    size: tuple[int, int]
    segments: tuple[ClipSegment, ...]


def _next_layout(rng: np.random.Generator, previous: str | None) -> str:
    """A layout different from the previous segment's, so every cut is a visible layout change."""
    if previous is None:
        return pick_layout(rng, 0.5)
    if previous == "none":
        return pick_layout(rng, 1.0)
    if rng.random() < 0.5:
        return "none"
    others = [name for name in LAYOUTS if name != previous]
    return others[int(rng.integers(len(others)))]


def draw_clip_spec(seed: int, num_frames: int = 48, fps: float = 12.0, size: tuple[int, int] = (448, 252),
                   segments: int | None = None, pool: str = "train",
                   layouts: tuple[str, ...] | None = None) -> ClipSpec:
    """Draw a clip's segments: cut points, a layout per segment (each differs from the one before),
    and streams; the main stream continues across a cut 60 % of the time, as in real edits.

    ``segments`` None = 1 to 3 at random; ``layouts`` fixes the segments' layouts (and their count).

    >>> spec = draw_clip_spec(0, num_frames=24, layouts=("single", "vertical"))
    >>> [s.frame.truth.layout for s in spec.segments]
    ['none', 'vertical']
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    rng = np.random.default_rng(seed)
    count = len(layouts) if layouts else (segments if segments is not None else int(rng.integers(1, 4)))
    count = max(1, min(count, num_frames))
    cuts = sorted(int(c) for c in rng.choice(np.arange(1, num_frames), size=count - 1, replace=False)) \
        if count > 1 else []
    bounds = [0, *cuts, num_frames]
    parts: list[ClipSegment] = []
    previous: FrameSpec | None = None
    for k in range(count):
        layout = layouts[k] if layouts else _next_layout(rng, previous.truth.layout if previous else None)
        main = previous.streams[0] if previous is not None and rng.random() < 0.6 else None
        frame = draw_frame_spec(rng, layout, size, pool, main)
        parts.append(ClipSegment(bounds[k], bounds[k + 1], frame))
        previous = frame
    return ClipSpec(num_frames=num_frames, fps=fps, size=size, segments=tuple(parts))


def render_clip(spec: ClipSpec) -> tuple[np.ndarray, list[FrameTruth]]:
    """Render every frame of a clip at its time i / fps, with per-frame truth.

    >>> frames, truths = render_clip(draw_clip_spec(1, num_frames=6, size=(64, 36)))
    >>> frames.shape, len(truths)
    ((6, 64, 36, 3), 6)
    """
    H, W = spec.size
    frames = np.empty((spec.num_frames, H, W, 3), dtype=np.uint8)
    truths: list[FrameTruth] = []
    for segment in spec.segments:
        for i in range(segment.start, segment.stop):
            frames[i] = render_frame(segment.frame, spec.size, t=i / spec.fps)
            truths.append(segment.frame.truth)
    return frames, truths


def make_clip(seed: int, num_frames: int = 48, fps: float = 12.0, size: tuple[int, int] = (448, 252),
              segments: int | None = None, pool: str = "train",
              layouts: tuple[str, ...] | None = None) -> tuple[np.ndarray, list[FrameTruth]]:
    """A moving clip (T, H, W, 3) uint8 whose layout may change between segments, and per-frame truth.

    >>> frames, truths = make_clip(0, num_frames=12, size=(64, 36), layouts=("pip", "none"))
    >>> frames.shape, truths[0].layout
    ((12, 64, 36, 3), 'pip')
    """
    return render_clip(draw_clip_spec(seed, num_frames, fps, size, segments, pool, layouts))


def write_clip(path: str | Path, frames: np.ndarray, fps: float = 12.0) -> Path:
    """Encode RGB frames (T, H, W, 3) with PyAV: H.264 yuv420p in .mp4 where libx264 exists, else MPEG-4.
    yuv420p needs even sides, so an odd last row or column is dropped. One encoder thread: x264 slices the
    picture by its thread count, so only a fixed count gives the same bytes on every machine.

    >>> import tempfile
    >>> frames, _ = make_clip(0, num_frames=6, size=(64, 36))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     write_clip(Path(folder) / "clip.mp4", frames).stat().st_size > 0
    True
    """
    path = Path(path)
    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be (T, H, W, 3) with T >= 1, got {frames.shape}")
    height, width = frames.shape[1] - frames.shape[1] % 2, frames.shape[2] - frames.shape[2] % 2
    if height < 2 or width < 2:
        raise ValueError(f"frames are too small to encode: {frames.shape[1:3]}")
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1
        if codec == "libx264":
            stream.options = {"crf": "20", "preset": "veryfast"}
        for frame in frames:
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:height, :width]), format="rgb24")
            container.mux(stream.encode(picture))
        container.mux(stream.encode(None))
    return path


def write_clip_once(path: str | Path, render, fps: float = 12.0) -> Path:
    """Encode ``render()`` (frames (T, H, W, 3)) to `path` unless a non-empty file is already there. The clip is
    written under a temporary name and renamed, so a reader (or a second process caching the same clip) never
    sees a half-written file, and a cached clip costs no rendering.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     first = write_clip_once(Path(folder) / "c.mp4", lambda: make_clip(0, num_frames=4, size=(64, 36))[0])
    ...     again = write_clip_once(first, lambda: 1 / 0)  # cached: render is not called
    ...     again == first and first.stat().st_size > 0
    True
    """
    path = Path(path)
    if not (path.is_file() and path.stat().st_size > 0):
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
        write_clip(tmp, render(), fps)
        os.replace(tmp, path)
    return path


# The app's one-click examples: file name -> layouts of its segments.
EXAMPLE_CLIPS = {
    "single_stream.mp4": ("single",),
    "vertical_split.mp4": ("vertical",),
    "side_by_side.mp4": ("horizontal",),
    "picture_in_picture.mp4": ("pip",),
    "layout_change.mp4": ("single", "vertical", "pip"),
}


def make_example_clips(folder: str | Path, seed: int = 0, num_frames: int = 24, fps: float = 12.0,
                       size: tuple[int, int] = (448, 252)) -> list[Path]:
    """Write the example clips (2 s each at the defaults) into a folder and return their paths.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     [p.name for p in make_example_clips(folder, num_frames=2, size=(64, 36))][:2]
    ['single_stream.mp4', 'vertical_split.mp4']
    """
    folder = Path(folder)
    paths = []
    for k, (name, layouts) in enumerate(EXAMPLE_CLIPS.items()):
        frames, _ = render_clip(draw_example_spec(seed + k, layouts, num_frames, fps, size))
        paths.append(write_clip(folder / name, frames, fps))
    return paths


def draw_example_spec(seed: int, layouts: tuple[str, ...], num_frames: int = 24, fps: float = 12.0,
                      size: tuple[int, int] = (448, 252)) -> ClipSpec:
    """The first clip drawn from seeds seed, seed + 100, seed + 200, ... that shows its layouts plainly.

    >>> [s.frame.truth.layout for s in draw_example_spec(3, ("pip",)).segments]
    ['pip']
    """
    for t in range(50):
        spec = draw_clip_spec(seed + 100 * t, num_frames, fps, size, pool="train", layouts=layouts)
        if shows_layout_plainly(spec):
            return spec
    raise RuntimeError(f"no plain example of {layouts} in 50 draws from seed {seed}")


def shows_layout_plainly(spec: ClipSpec, min_inset_width: float = 0.25) -> bool:
    """Whether a clip can stand as an example of its layouts: no distractors, and every picture-in-picture
    inset at least `min_inset_width` of the frame wide (a 15 % inset is real, but not a first example).

    >>> shows_layout_plainly(draw_clip_spec(0, num_frames=12, layouts=("vertical",)))
    True
    """
    for segment in spec.segments:
        frame = segment.frame
        if frame.truth.distractor:
            return False
        if frame.truth.layout == "pip" and any(t.box[2] - t.box[0] < min_inset_width for t in frame.tiles[1:]):
            return False
    return True


# The committed copies of the example clips the app offers on its Analyze tab.
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"


def main(argv: list[str] | None = None) -> list[Path]:
    """``python -m training.synthetic examples [--out FOLDER]``: render the example clips (default into the
    repository's ``examples/`` folder, which the app reads); the same code and defaults give the same bytes.

    >>> main(["examples", "--out", "/tmp/examples"])  # doctest: +SKIP
    [PosixPath('/tmp/examples/single_stream.mp4'), ...]
    """
    parser = argparse.ArgumentParser(prog="python -m training.synthetic",
                                     description="Render synthetic clips with ground truth.")
    commands = parser.add_subparsers(dest="command", required=True)
    examples = commands.add_parser("examples", help="render the app's one-click example clips")
    examples.add_argument("--out", type=Path, default=EXAMPLES_DIR,
                          help=f"folder to write them into (default {EXAMPLES_DIR})")
    args = parser.parse_args(argv)
    paths = make_example_clips(args.out)
    for path in paths:
        print(f"{path} ({path.stat().st_size // 1024} KB)")
    return paths


if __name__ == "__main__":
    main()
