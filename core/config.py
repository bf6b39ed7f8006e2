"""Settings for sludgelens, as dataclasses whose comments say why each value is what it is.

Nothing here reads the environment at import time; :func:`load_settings` does it when called.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# The embedded default models ship in the repo so the app works with no network at all.
EMBEDDED_BLIP2 = REPO_ROOT / "models" / "tiny-vqwen-qformer"
EMBEDDED_LLAVA = REPO_ROOT / "models" / "tiny-vqwen-llava"


@dataclass(frozen=True)
class VideoLimits:
    """What an uploaded video may be before we refuse it with a clear message."""

    # A Space has a few GB of RAM; 200 MB of compressed short-form video is already ~10 min of 1080p.
    max_bytes: int = 200 * 1024 * 1024
    # Short-form content is under 3 minutes; longer files are almost always the wrong upload.
    max_duration_s: float = 600.0
    # Above 4K a single decoded frame is > 25 MB; nothing we classify needs more pixels.
    max_side: int = 4096
    # Below this the 224 px model input is mostly interpolation, and such files are usually broken.
    min_side: int = 16
    # decord is unmaintained and hangs on some files: give it this long, then fall back to PyAV.
    decord_timeout_s: float = 20.0
    # A Space's CPU is shared; two decode threads keep the UI responsive while decoding.
    decode_threads: int = 2
    # "decord" tries decord first (in a child process it can kill) and falls back to PyAV;
    # "pyav" skips decord, e.g. where decord is not installed or to compare the two.
    decoder: str = "decord"
    # fps sampling stops being "every 1/fps s" above this many frames and spreads this many uniformly
    # instead: 64 frames of 1080p RGB are ~400 MB, about what a Space can hold next to a model.
    max_sampled_frames: int = 64
    # PyAV: a target nearer than this to the last decoded frame is reached by decoding on; a seek would
    # land on a keyframe we already passed (short-form encoders put one every 1-2 s).
    seek_gap_s: float = 1.0
    # A file whose pictures stop this much before the duration its header claims was cut short
    # (a faststart mp4 truncated mid-upload); less than this is ordinary container rounding.
    truncation_tolerance_s: float = 1.0
    # Packets read while probing for a first decodable picture before we call the track empty.
    probe_max_packets: int = 300


@dataclass(frozen=True)
class EngineConfig:
    """How frames are scored."""

    # Frames per batched forward: 8 fills two CPU cores without paging on a 16 GB Space.
    batch_size: int = 8
    # P(sludge) at or above this makes a frame "sludge"; 0.5 is the calibrated yes/no boundary.
    threshold: float = 0.5
    # "auto" picks cuda, then mps, then cpu; an explicit torch device string overrides.
    device: str = "auto"


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from: a local folder, or a hub id with an optional revision."""

    source: str
    revision: str | None = None

    @property
    def is_local(self) -> bool:
        return Path(self.source).is_dir()

    @property
    def label(self) -> str:
        return f"{self.source}@{self.revision}" if self.revision else self.source


@dataclass(frozen=True)
class Settings:
    """Everything the app wires together; built once by :func:`load_settings`."""

    # The embedded BLIP-2 model is the default: it is the architecture of the vqwen card we serve.
    model: ModelSpec = field(default_factory=lambda: ModelSpec(str(EMBEDDED_BLIP2)))
    # Hub models offered in the selector; they load only where the hub is reachable.
    hub_models: tuple[str, ...] = ("alpharomercoma/vqwen-qformer-tiktok", "alpharomercoma/vqwen3-4b")
    # Folders searched for fine-tuned checkpoints (the training scripts write under data/checkpoints).
    checkpoint_dirs: tuple[Path, ...] = (REPO_ROOT / "data" / "checkpoints",)
    # The store: one SQLite file under a git-ignored folder.
    db_path: Path = REPO_ROOT / "data" / "sludgelens.db"
    media_dir: Path = REPO_ROOT / "data" / "media"
    # Where exports of the labels are written (annotations.exports); git-ignored like the store.
    export_dir: Path = REPO_ROOT / "data" / "exports"
    # Durable copies of the store: a folder or "hf://datasets/owner/name". A Space has no persistent disk,
    # so without a target the labels live only as long as the container; None switches snapshots off.
    snapshot_target: str | None = None
    # 15 minutes: at most a quarter hour of corrections at risk, and ~100 small Hub commits a day.
    snapshot_every_s: float = 900.0
    # A day of snapshots at the default interval; older ones add little once newer ones exist.
    snapshot_keep: int = 96
    # How long the labelling queue holds a frame for one labeler: long enough to look at its heatmaps and
    # decide, short enough that a closed tab frees its frames soon.
    queue_lease_s: float = 180.0
    # SQLite synchronous mode of the store. FULL fsyncs every correction (it survives power loss, not only a
    # killed process); NORMAL skips that fsync and keeps p99 latency low on a contended disk. On a Space the
    # local disk dies with the container anyway and the snapshots carry durability, so NORMAL suffices there.
    store_synchronous: str = "FULL"
    video: VideoLimits = field(default_factory=VideoLimits)
    engine: EngineConfig = field(default_factory=EngineConfig)
    # Frames sampled per video by default: 16 is what the vqwen card evaluates per clip.
    num_frames: int = 16


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Build settings from environment variables (SLUDGELENS_*), falling back to defaults.

    >>> load_settings({"SLUDGELENS_FRAMES": "8"}).num_frames
    8
    """
    env = os.environ if environ is None else environ
    s = Settings()
    if env.get("SLUDGELENS_MODEL"):
        s = replace(s, model=ModelSpec(env["SLUDGELENS_MODEL"], env.get("SLUDGELENS_MODEL_REVISION") or None))
    if env.get("SLUDGELENS_DB"):
        s = replace(s, db_path=Path(env["SLUDGELENS_DB"]))
    if env.get("SLUDGELENS_MEDIA"):
        s = replace(s, media_dir=Path(env["SLUDGELENS_MEDIA"]))
    if env.get("SLUDGELENS_FRAMES"):
        s = replace(s, num_frames=int(env["SLUDGELENS_FRAMES"]))
    if env.get("SLUDGELENS_THRESHOLD"):
        s = replace(s, engine=replace(s.engine, threshold=float(env["SLUDGELENS_THRESHOLD"])))
    if env.get("SLUDGELENS_DEVICE"):
        s = replace(s, engine=replace(s.engine, device=env["SLUDGELENS_DEVICE"]))
    if env.get("SLUDGELENS_MAX_MB"):
        s = replace(s, video=replace(s.video, max_bytes=int(float(env["SLUDGELENS_MAX_MB"]) * 1024 * 1024)))
    if env.get("SLUDGELENS_MAX_SECONDS"):
        s = replace(s, video=replace(s.video, max_duration_s=float(env["SLUDGELENS_MAX_SECONDS"])))
    return s
