"""Settings for sludgelens, as dataclasses whose comments say why each value is what it is.

Nothing here reads the environment at import time; :func:`load_settings` does it when called.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from core.vocabulary import ROLES

REPO_ROOT = Path(__file__).resolve().parent.parent

# The embedded default models ship in the repo so the app works with no network at all.
EMBEDDED_BLIP2 = REPO_ROOT / "models" / "tiny-vqwen-qformer"
EMBEDDED_LLAVA = REPO_ROOT / "models" / "tiny-vqwen-llava"


# The video decoders VideoLimits.decoder may name.
DECODERS = ("pyav", "decord")


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
    # "pyav" decodes in the app's process: on 16 frames of a 60 s 720p clip it takes 0.6 s against
    # decord's 0.85 s and 0.9 CPU s against 1.3 (bench.bench_video), because decord has to run in a
    # child process it can kill (it hangs on some files) and hand every frame back through a file.
    # "decord" tries decord first, in that child, and falls back to PyAV.
    decoder: str = "pyav"  # one of DECODERS
    # fps sampling stops being "every 1/fps s" above this many frames and spreads this many uniformly
    # instead: 64 frames of 1080p RGB are ~400 MB, about what a Space can hold next to a model.
    max_sampled_frames: int = 64
    # PyAV: a target nearer than this to the last decoded frame is reached by decoding on; a seek would
    # land on a keyframe we already passed (short-form encoders put one every 1-2 s).
    seek_gap_s: float = 1.0
    # The fast tier needs coverage of the clip, not exact instants: a planned time this close to a keyframe
    # takes the keyframe instead, one decode in place of every frame since the keyframe before it (~30 of
    # them at the 2 s keyframe interval of short-form encoders). Never more than 0.45 x the spacing between
    # planned times, so samples stay distinct and in order. 0 decodes the exact planned frames.
    keyframe_snap_s: float = 1.0
    # A file whose pictures stop this much before the duration its header claims was cut short
    # (a faststart mp4 truncated mid-upload); less than this is ordinary container rounding.
    truncation_tolerance_s: float = 1.0
    # Packets read while probing for a first decodable picture before we call the track empty.
    probe_max_packets: int = 300
    # Every frame is scaled down right after it is decoded so that its longest side is at most this many
    # pixels (aspect ratio kept). The models see 224-336 px and the UI shows a frame at ~900 px at most, so
    # more pixels only cost memory and time: 64 frames of a 4096x4096 source are 3.2 GB as RGB, 200 MB at
    # 1024 px, and a smaller picture is cheaper to convert and to pass from the decoder's process.
    # 0 keeps the source size.
    decode_max_side: int = 1024


def check_frame_count(value, limits: VideoLimits = VideoLimits()) -> int:
    """A number of frames to sample, as asked for by a person (CLI, API, UI): a whole number from 1 to
    ``limits.max_sampled_frames``; anything else raises ValueError saying what is allowed.

    >>> check_frame_count(16.0)
    16
    >>> check_frame_count(0)
    Traceback (most recent call last):
    ...
    ValueError: the number of frames must be a whole number from 1 to 64, not 0
    """
    top = limits.max_sampled_frames
    number = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    whole = (not isinstance(number, bool) and isinstance(number, numbers.Real) and math.isfinite(number)
             and float(number).is_integer())
    if not whole or not 1 <= number <= top:
        shown = repr(value) if not isinstance(value, str) or len(value) <= 40 else repr(value[:40] + "…")
        raise ValueError(f"the number of frames must be a whole number from 1 to {top}, not {shown}")
    return int(number)


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
class UserSpec:
    """A local account: who may sign in to the Label tab and to the corrections API, and with what role."""

    name: str
    password: str = field(repr=False)
    # viewer: analyze and look; labeler: write labels; reviewer: also accept or reject others' labels.
    role: str = "labeler"


@dataclass(frozen=True)
class AuthConfig:
    """Who may write labels. Anyone may analyze; every label write names a signed-in person."""

    # Local accounts "name:password:role" from SLUDGELENS_USERS (a Space secret when deployed). They also
    # authenticate API writes, which cannot go through the browser's OAuth flow.
    users: tuple[UserSpec, ...] = ()
    # An explicit development mode: every browser session is this person, with no password. Never set on a
    # Space; it exists so a laptop session can label without inventing passwords.
    dev_user: UserSpec | None = None
    # Hugging Face OAuth (a Space with `hf_oauth: true` gets OAUTH_CLIENT_ID): the Label tab shows
    # "Sign in with Hugging Face" instead of the password form.
    oauth: bool = False
    # Roles of Hugging Face users by name; anyone else signing in gets `oauth_default_role`.
    oauth_roles: tuple[tuple[str, str], ...] = ()
    # A public Space lets anyone sign in, so an unlisted account may look but not write until named above.
    oauth_default_role: str = "viewer"


def parse_users(text: str) -> tuple[UserSpec, ...]:
    """Accounts from "name:password:role,..." (the password may contain ':'; the role defaults to labeler).

    >>> [(u.name, u.role) for u in parse_users("alice:pw:labeler, bob:s:e:cret:reviewer")]
    [('alice', 'labeler'), ('bob', 'reviewer')]
    """
    users = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, rest = item.partition(":")
        password, role = rest, "labeler"
        head, _, tail = rest.rpartition(":")
        if head and tail in ROLES:
            password, role = head, tail
        if not name or not password:
            raise ValueError(f"a user must look like name:password:role, not {item.split(':')[0]!r}:…")
        users.append(UserSpec(name.strip(), password, role))
    return tuple(users)


def parse_roles(text: str) -> tuple[tuple[str, str], ...]:
    """"name:role,..." pairs (OAuth roles, the dev user), each role checked.

    >>> parse_roles("ana:reviewer,ben:labeler")
    (('ana', 'reviewer'), ('ben', 'labeler'))
    """
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, role = item.rpartition(":")
        if not name or role not in ROLES:
            raise ValueError(f"expected name:role with role one of {', '.join(ROLES)}, not {item!r}")
        pairs.append((name.strip(), role))
    return tuple(pairs)


@dataclass(frozen=True)
class Settings:
    """Everything the app wires together; built once by :func:`load_settings`."""

    # The embedded BLIP-2 model is the default: it is the architecture of the vqwen card we serve.
    model: ModelSpec = field(default_factory=lambda: ModelSpec(str(EMBEDDED_BLIP2)))
    # Whether `model` was named by SLUDGELENS_MODEL: a named model is served as it is, on a Space too.
    model_named: bool = False
    # What a Space with a GPU serves when no model is named: the vqwen card's own checkpoint, which wants a
    # GPU. Without a GPU, or when the hub cannot be reached, the Space serves `model` (the embedded one)
    # and says why in the model status line. None keeps `model` everywhere.
    space_model: str | None = "alpharomercoma/vqwen-qformer-tiktok"
    # Set where the app runs on a Hugging Face Space (SPACE_ID): only there is the hub model the default.
    on_space: bool = False
    # The start-up check of the hub waits this long: a Space with no route to the hub starts at once anyway.
    hub_timeout_s: float = 3.0
    # The model version the Review tab, /metrics, exports, the labelling queue and `annotations stats`
    # default to (SLUDGELENS_METRICS_MODEL). None: the identity of the model the app serves by default
    # (core.config.default_model_id). Never "the newest in the store": analyzing one video with another
    # model must not change what the metrics and exports are about.
    metrics_model: str | None = None
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
    # Who may write labels (the Label tab and the corrections API).
    auth: AuthConfig = field(default_factory=AuthConfig)
    # The one-click example clips of the Analyze tab: committed files, rendered by
    # `python -m training.synthetic examples`, so the app needs neither the generator nor a first-start write.
    examples_dir: Path = REPO_ROOT / "examples"
    # Where the Export tab's "Push to the Hub" sends an export ("hf://datasets/owner/name" or a folder);
    # None hides the button, because a push without a configured target has nowhere sensible to go.
    export_target: str | None = None


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Build settings from environment variables (SLUDGELENS_*), falling back to defaults.

    >>> load_settings({"SLUDGELENS_FRAMES": "8"}).num_frames
    8
    """
    env = os.environ if environ is None else environ
    s = Settings()
    if env.get("SLUDGELENS_MODEL"):
        s = replace(s, model=ModelSpec(env["SLUDGELENS_MODEL"], env.get("SLUDGELENS_MODEL_REVISION") or None),
                    model_named=True)
    if env.get("SLUDGELENS_METRICS_MODEL"):
        s = replace(s, metrics_model=env["SLUDGELENS_METRICS_MODEL"])
    if env.get("SPACE_ID"):
        s = replace(s, on_space=True)
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
    if env.get("SLUDGELENS_DECODE_MAX_SIDE"):
        s = replace(s, video=replace(s.video, decode_max_side=int(env["SLUDGELENS_DECODE_MAX_SIDE"])))
    if env.get("SLUDGELENS_DECODER"):
        if env["SLUDGELENS_DECODER"] not in DECODERS:
            raise ValueError(f"SLUDGELENS_DECODER must be {' or '.join(DECODERS)}, not {env['SLUDGELENS_DECODER']!r}")
        s = replace(s, video=replace(s.video, decoder=env["SLUDGELENS_DECODER"]))
    if env.get("SLUDGELENS_EXPORTS"):
        s = replace(s, export_dir=Path(env["SLUDGELENS_EXPORTS"]))
    if env.get("SLUDGELENS_EXAMPLES"):
        s = replace(s, examples_dir=Path(env["SLUDGELENS_EXAMPLES"]))
    if env.get("SLUDGELENS_SNAPSHOT_TARGET"):
        s = replace(s, snapshot_target=env["SLUDGELENS_SNAPSHOT_TARGET"])
    if env.get("SLUDGELENS_EXPORT_TARGET"):
        s = replace(s, export_target=env["SLUDGELENS_EXPORT_TARGET"])
    return replace(s, auth=load_auth(env))


def default_model_id(settings: Settings) -> str:
    """The model version metrics, exports, the labelling queue and `annotations stats` use when none is
    named: ``settings.metrics_model``, else the identity id of ``settings.model`` (a folder's weights are
    hashed, nothing is loaded).

    >>> default_model_id(load_settings({"SLUDGELENS_METRICS_MODEL": "tiny@1"}))
    'tiny@1'
    >>> default_model_id(load_settings({"SLUDGELENS_MODEL": "alpharomercoma/vqwen3-4b"}))
    'alpharomercoma/vqwen3-4b'
    """
    if settings.metrics_model:
        return settings.metrics_model
    from core.identity import identify_model  # core.identity imports this module

    return identify_model(settings.model).id


def load_auth(env) -> AuthConfig:
    """Accounts and roles from SLUDGELENS_USERS, SLUDGELENS_DEV_USER, SLUDGELENS_ROLES, SLUDGELENS_DEFAULT_ROLE;
    OAuth is on where the Space was built with `hf_oauth: true` (it sets OAUTH_CLIENT_ID).

    >>> load_auth({"SLUDGELENS_DEV_USER": "dev:reviewer"}).dev_user.role
    'reviewer'
    """
    dev = None
    if env.get("SLUDGELENS_DEV_USER"):
        ((name, role),) = parse_roles(env["SLUDGELENS_DEV_USER"])
        dev = UserSpec(name, "", role)
    default_role = env.get("SLUDGELENS_DEFAULT_ROLE") or "viewer"
    if default_role not in ROLES:
        raise ValueError(f"SLUDGELENS_DEFAULT_ROLE must be one of {', '.join(ROLES)}, not {default_role!r}")
    return AuthConfig(
        users=parse_users(env.get("SLUDGELENS_USERS", "")),
        dev_user=dev,
        oauth=bool(env.get("SPACE_ID") and env.get("OAUTH_CLIENT_ID")),
        oauth_roles=parse_roles(env.get("SLUDGELENS_ROLES", "")),
        oauth_default_role=default_role,
    )
