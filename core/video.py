"""Sample frames from an uploaded video: refuse what we cannot use, probe the rest, decode what we need.

    video = sample_frames("clip.mp4", num_frames=16)
    video.frames.shape          # (16, H, W, 3) uint8 RGB, turned the way the file says to show it
    video.timestamps[:2]        # [1.867, 5.6] seconds, one per frame
    video.meta.decoder          # "decord", or "pyav" when decord failed, hung, or the file is rotated

Every refusal is a :class:`VideoError` (a ``ValueError``) with a short ``.code`` and a message a person
can act on, raised before any decoding where the check allows it (size, magic bytes).

Decoding, and why it is done this way (medians from ``python -m bench.bench_video``: 16 frames of a
60 s 720p h264 clip with a keyframe every ~2 s, 2 shared CPU cores):

* Planned times (segment centres, :func:`plan_timestamps`) within reach of a keyframe take the keyframe
  (``limits.keyframe_snap_s``, :func:`snap_to_keyframes`; keyframes read from packets, nothing decoded).
  Decoding an exact frame costs the keyframe before it and every frame up to it, ~30 decodes at a 2 s
  keyframe interval; a keyframe costs one. The fast tier needs coverage, not exact instants, and the
  frames' true timestamps are what is stored and shown. ``keyframe_snap_s=0`` decodes the exact frames.
* decord (``VideoReader.get_batch``) is the primary decoder. It is unmaintained and known to hang or
  crash in C code on some files. A thread cannot be stopped once it is stuck inside C, and a crash there
  takes the whole app down, so decord runs in a long-lived child process (:class:`DecordWorker`) that is
  killed, and replaced, after ``limits.decord_timeout_s``.
* PyAV is the fallback: seek to the keyframe before each target and decode forward to it; targets close
  together are reached by decoding on instead (``limits.seek_gap_s``), so a short clip is decoded once,
  front to back (``limits.decoder="pyav"`` skips decord).
* Rotation: the display matrix is read from PyAV's ``VideoFrame.rotation`` (counter-clockwise degrees)
  and applied with ``np.rot90``. decord 0.6.0 applies the matrix itself, wrongly: a file turned by 90°
  comes back as a 4-channel buffer of the wrong size, so rotated files go straight to PyAV.
"""

from __future__ import annotations

import json
import logging
import math
import os
import select
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import av
import numpy as np

from core.config import VideoLimits

logger = logging.getLogger(__name__)

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------- errors


class VideoError(ValueError):
    """A file we will not sample, with a message for the person who uploaded it."""

    code = "video_error"

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.message = message
        self.path = path


class MissingFileError(VideoError):
    code = "missing_file"


class EmptyFileError(VideoError):
    code = "empty_file"


class FileTooLargeError(VideoError):
    code = "file_too_large"


class NotMediaError(VideoError):
    code = "not_media"


class ImageNotVideoError(VideoError):
    code = "image_not_video"


class AudioOnlyError(VideoError):
    code = "audio_only"


class NoFramesError(VideoError):
    code = "no_frames"


class CorruptVideoError(VideoError):
    code = "corrupt_video"


class VideoTooLongError(VideoError):
    code = "video_too_long"


class ResolutionError(VideoError):
    code = "bad_resolution"


# ----------------------------------------------------------------------------------------- data shapes


@dataclass(frozen=True)
class VideoMeta:
    """What we learned about a video file."""

    path: str
    size_bytes: int
    duration_s: float
    fps: float
    width: int  # after rotation is applied, i.e. as the video is meant to be shown
    height: int
    codec: str
    rotation: int  # counter-clockwise degrees the stored picture is turned for display: 0, 90, 180, 270
    frame_count: int
    decoder: str  # "decord" or "pyav": who decoded the frames (the probe itself always uses PyAV)


@dataclass
class SampledVideo:
    """Frames sampled from a video, with where in the video each one comes from."""

    frames: np.ndarray  # (N, H, W, 3) uint8 RGB, rotation honoured
    timestamps: list[float]  # seconds from the start of the video, one per frame
    indices: list[int]  # frame indices in the stream
    meta: VideoMeta


# ------------------------------------------------------------------------------------ file signatures

# Still-image formats people rename to .mp4 (or that phones hand over instead of a clip).
_IMAGE_MAGIC = (
    (0, b"\x89PNG\r\n\x1a\n", "PNG"),
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (8, b"WEBP", "WebP"),
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypheix", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
    (4, b"ftypavif", "AVIF"),
)
# Documents that are neither images nor media; named so the message can say what the file is.
_DOCUMENT_MAGIC = (
    (0, b"%PDF", "a PDF document"),
    (0, b"PK\x03\x04", "a ZIP archive (or an Office document)"),
)
# Video containers: a file that starts like one but will not open was damaged, not mislabelled.
_CONTAINER_MAGIC = (
    (4, b"ftyp", "MP4/MOV"),
    (4, b"moov", "MP4/MOV"),
    (4, b"mdat", "MP4/MOV"),
    (4, b"free", "MP4/MOV"),
    (4, b"wide", "MP4/MOV"),
    (0, b"\x1a\x45\xdf\xa3", "Matroska/WebM"),
    (8, b"AVI ", "AVI"),
    (0, b"FLV", "FLV"),
    (0, b"\x00\x00\x01\xba", "MPEG"),
    (0, b"\x30\x26\xb2\x75", "WMV/ASF"),
)
# PyAV demuxers that read a single still image.
_IMAGE_DEMUXERS = {"image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "webp_pipe", "tiff_pipe", "gif_pipe",
                   "jpegxl_pipe", "qoi_pipe", "dpx_pipe", "exr_pipe", "psd_pipe", "svg_pipe"}

_SUPPORTED = "Please upload a video file (mp4, mov, webm, mkv or avi)."


def _match_magic(head: bytes, table) -> str | None:
    for offset, magic, name in table:
        if head[offset:offset + len(magic)] == magic:
            return name
    return None


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        # A multi-byte character cut at the end of the sample is still text.
        return err.start >= len(head) - 3
    return True


def _human_size(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB" if n >= 1024 * 1024 else f"{n / 1024:.1f} KB" if n >= 1024 else f"{n} bytes"


# ------------------------------------------------------------------------------------------ probing


def _check_file(path: str, limits: VideoLimits) -> int:
    """Refuse missing, empty and oversized files before anything reads them; return the size."""
    if not os.path.exists(path):
        raise MissingFileError(f"There is no file at {path!r}.", path)
    if not os.path.isfile(path):
        raise MissingFileError(f"{path!r} is a folder, not a video file.", path)
    size = os.path.getsize(path)
    if size == 0:
        raise EmptyFileError("The file is empty (0 bytes). The upload may have failed; please try again.", path)
    if size > limits.max_bytes:
        raise FileTooLargeError(
            f"The file is {_human_size(size)}; the limit is {_human_size(limits.max_bytes)}. "
            "Please upload a shorter or more compressed video.",
            path,
        )
    return size


def _refuse_by_signature(path: str, head: bytes) -> None:
    image = _match_magic(head, _IMAGE_MAGIC)
    if image:
        raise ImageNotVideoError(f"This is a {image} image, not a video. {_SUPPORTED}", path)
    document = _match_magic(head, _DOCUMENT_MAGIC)
    if document:
        raise NotMediaError(f"This is {document}, not a video. {_SUPPORTED}", path)


def _unreadable(path: str, head: bytes, err: Exception) -> VideoError:
    """The error for a file FFmpeg cannot open: damaged if it starts like a video, else not media."""
    container = _match_magic(head, _CONTAINER_MAGIC)
    if container:
        return CorruptVideoError(
            f"This looks like a video ({container}), but it is damaged or incomplete and cannot be read "
            f"(the upload may have been cut short). Details: {err}",
            path,
        )
    if _looks_like_text(head):
        return NotMediaError(f"This is a text file, not a video. {_SUPPORTED}", path)
    return NotMediaError(
        f"This file is not a video we can read (its contents are not a known video format). {_SUPPORTED}", path
    )


def _first_picture(container, stream, limits: VideoLimits):
    """Decode the first picture of `stream`, reading at most `limits.probe_max_packets` packets.

    Returns (frame or None, packets read, the last decode error or None).
    """
    packets, error = 0, None
    for packet in container.demux(stream):
        packets += packet.size > 0
        try:
            frames = stream.decode(packet)
        except av.error.FFmpegError as err:
            error = err
            frames = []
        if frames:
            return frames[0], packets, error
        if packets >= limits.probe_max_packets:
            break
    return None, packets, error


def _normalise_rotation(degrees: float) -> int:
    return int(round(degrees / 90.0)) * 90 % 360


def _duration_of(container, stream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def probe_video(path, limits: VideoLimits = VideoLimits()) -> VideoMeta:
    """Check a file and describe its video stream; raise a :class:`VideoError` for anything unusable.

    Size is checked before the file is opened; one picture is decoded to learn the rotation and to be
    sure the stream has pictures at all.

    >>> probe_video("clip.mp4").duration_s  # doctest: +SKIP
    60.0
    """
    path = os.fspath(path)
    size = _check_file(path, limits)
    with open(path, "rb") as fh:
        head = fh.read(4096)
    _refuse_by_signature(path, head)
    try:
        container = av.open(path, metadata_errors="ignore")
    except av.error.FFmpegError as err:
        raise _unreadable(path, head, err) from err
    with container:
        fmt = container.format.name
        if fmt in _IMAGE_DEMUXERS:
            kind = fmt.removesuffix("_pipe").upper() if fmt != "image2" else "still"
            raise ImageNotVideoError(f"This is a {kind} image, not a video. {_SUPPORTED}", path)
        videos = [s for s in container.streams.video if not (s.disposition & av.stream.Disposition.attached_pic)]
        if not videos:
            if container.streams.audio:
                audio = container.streams.audio[0].codec_context.name.upper()
                raise AudioOnlyError(
                    f"This file has sound ({audio}) but no picture: it is an audio file, not a video. {_SUPPORTED}",
                    path,
                )
            raise NotMediaError(f"This file has no video in it. {_SUPPORTED}", path)
        stream = videos[0]
        first, packets, error = _first_picture(container, stream, limits)
        if first is None:
            if packets == 0:
                raise NoFramesError("The file has a video track, but the track holds no pictures.", path)
            if packets < min(stream.frames, limits.probe_max_packets):
                raise CorruptVideoError(
                    f"The file lists {stream.frames} pictures but its data stops after {packets}: it was probably "
                    "cut short during upload. Please upload the complete file.",
                    path,
                )
            raise NoFramesError(
                f"The file has a video track, but none of its pictures could be decoded "
                f"(read {packets} packets; the file is probably damaged). Details: {error}",
                path,
            )
        rotation = _normalise_rotation(first.rotation)
        coded_w, coded_h = first.width, first.height
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        duration = _duration_of(container, stream)
        frame_count = int(stream.frames or 0)
        if not fps and duration and frame_count:
            fps = frame_count / duration
        if not duration:
            duration = frame_count / fps if frame_count and fps else 0.0
        if not fps:
            # Nothing in the file says how fast it plays; 30 fps is what phones record.
            fps = 30.0
        if not frame_count:
            frame_count = max(1, int(round(duration * fps)))
        codec = stream.codec_context.name
    turned = rotation in (90, 270)
    meta = VideoMeta(
        path=path, size_bytes=size, duration_s=max(duration, 1.0 / fps), fps=fps,
        width=coded_h if turned else coded_w, height=coded_w if turned else coded_h,
        codec=codec, rotation=rotation, frame_count=frame_count, decoder="pyav",
    )
    _check_meta(meta, limits)
    return meta


def _check_meta(meta: VideoMeta, limits: VideoLimits) -> None:
    small, large = min(meta.width, meta.height), max(meta.width, meta.height)
    if small < limits.min_side:
        raise ResolutionError(
            f"The video is {meta.width}×{meta.height} pixels; each side must be at least {limits.min_side} px.",
            meta.path,
        )
    if large > limits.max_side:
        raise ResolutionError(
            f"The video is {meta.width}×{meta.height} pixels; the longest side may be at most {limits.max_side} px. "
            "Please upload a smaller version.",
            meta.path,
        )
    if meta.duration_s > limits.max_duration_s:
        raise VideoTooLongError(
            f"The video is {meta.duration_s:.0f} s long; the limit is {limits.max_duration_s:.0f} s. "
            "Please trim it or upload a shorter clip.",
            meta.path,
        )


# ----------------------------------------------------------------------------------------- planning


def plan_timestamps(
    duration_s: float, num_frames: int | None = 16, fps: float | None = None, max_frames: int = 64
) -> list[float]:
    """Times (s) to sample: centres of `num_frames` equal segments, or every 1/fps s when fps is given.

    With `fps`, more than `max_frames` times become `max_frames` segment centres instead, so the whole
    video stays covered rather than only its start.

    >>> plan_timestamps(8.0, num_frames=4)
    [1.0, 3.0, 5.0, 7.0]
    >>> plan_timestamps(2.0, fps=2.0)
    [0.25, 0.75, 1.25, 1.75]
    """
    if fps is not None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        count = max(1, int(math.floor(duration_s * fps + 1e-9)))
        if count <= max_frames:
            return [(k + 0.5) / fps for k in range(count)]
        num_frames = max_frames
    if num_frames is None or num_frames <= 0:
        raise ValueError(f"num_frames must be a positive integer (or give fps), got {num_frames}")
    step = duration_s / num_frames
    return [(k + 0.5) * step for k in range(num_frames)]


def read_keyframe_times(path: str) -> list[float]:
    """Seconds (from the stream's start) of the video track's keyframes, read from packets, nothing decoded.

    Demuxing a 60 s 720p mp4 this way takes ~0.05 s. A file whose packets cannot be read to the end gives
    the keyframes read so far.

    >>> read_keyframe_times("clip.mp4")[:3]  # doctest: +SKIP
    [0.0, 2.0, 2.467]
    """
    times: list[float] = []
    try:
        with av.open(path, metadata_errors="ignore") as container:
            stream = [s for s in container.streams.video if not (s.disposition & av.stream.Disposition.attached_pic)][0]
            tb, start = float(stream.time_base), stream.start_time or 0
            for packet in container.demux(stream):
                if packet.is_keyframe and packet.pts is not None:
                    times.append((packet.pts - start) * tb)
    except (av.error.FFmpegError, IndexError) as err:
        logger.info("keyframes of %s read up to %d: %s", path, len(times), err)
    return sorted(times)


def snap_to_keyframes(times: list[float], keyframes: list[float], tolerance_s: float) -> list[float]:
    """Move each planned time to its nearest keyframe when one is within reach, else keep it.

    The reach is `tolerance_s`, and never more than 0.45 x the smallest gap between planned times, so two
    times never snap to one keyframe and the order is kept.

    >>> snap_to_keyframes([1.5, 4.5, 7.5], [0.0, 2.0, 4.0, 6.0, 8.0], tolerance_s=1.0)
    [2.0, 4.0, 8.0]
    >>> snap_to_keyframes([1.0, 3.0], [0.0, 2.0, 4.0], tolerance_s=0.5)
    [1.0, 3.0]
    """
    if not keyframes or tolerance_s <= 0:
        return list(times)
    gaps = np.diff(times)
    reach = min(tolerance_s, 0.45 * float(gaps.min())) if len(times) > 1 else tolerance_s
    keys = np.asarray(keyframes, dtype=np.float64)
    snapped = []
    for t in times:
        nearest = float(keys[np.abs(keys - t).argmin()])
        snapped.append(nearest if abs(nearest - t) <= reach else t)
    return snapped


def _indices_for(times: list[float], meta: VideoMeta) -> list[int]:
    """Frame index shown at each time, in order, without repeats."""
    seen: dict[int, None] = {}
    for t in times:
        seen.setdefault(min(int(t * meta.fps + 1e-6), meta.frame_count - 1), None)
    return list(seen)


# ------------------------------------------------------------------------------------------- decord


class DecordWorker:
    """decord in a long-lived child process that is killed, and replaced, when it hangs or dies.

    A thread stuck inside decord's C code cannot be stopped and a crash there would take the app down, so
    decord never runs in the app's process. The child (``python -m core.video``: it imports only this
    module and decord) is started on first use, or by :meth:`start`, and kept: a fresh interpreter per
    video costs ~0.5 s, more than decoding 16 frames. Requests go one at a time as JSON lines over its
    stdin/stdout; frames come back through a .npy file.

    >>> worker = DecordWorker()
    >>> worker.decode("clip.mp4", [0, 30], threads=2, timeout_s=20.0)  # doctest: +SKIP
    (array(...), [0.0, 1.0], [0, 30])
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the child now, so that the first video does not wait for it."""
        with self._lock:
            self._ensure_started()

    def _ensure_started(self) -> subprocess.Popen:
        if self._process is None or self._process.poll() is not None:
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
            self._process = subprocess.Popen(
                [sys.executable, "-m", "core.video"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, text=True, env=env,
            )
        return self._process

    def stop(self) -> None:
        """Kill the child; the next request starts a new one."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=5)
            for pipe in (self._process.stdin, self._process.stdout):
                pipe.close()
        self._process = None

    def decode(self, path: str, indices: list[int], threads: int, timeout_s: float):
        """(frames, timestamps, indices) from decord, or None when it failed, died or ran past `timeout_s`."""
        with self._lock, tempfile.TemporaryDirectory(prefix="sludgelens-decord-") as tmp:
            out = str(Path(tmp) / "frames.npy")
            request = {"path": os.path.abspath(path), "out": out, "indices": list(indices), "threads": threads}
            try:
                child = self._ensure_started()
                child.stdin.write(json.dumps(request) + "\n")
                child.stdin.flush()
                ready, _, _ = select.select([child.stdout], [], [], timeout_s)
                if not ready:
                    logger.warning("decord took longer than %.3g s on %s; decoding with PyAV", timeout_s, path)
                    self.stop()
                    return None
                answer = json.loads(child.stdout.readline())  # "" when the child died: a ValueError
            except (OSError, ValueError) as err:  # a crash in C, a broken pipe
                logger.warning("decord's process ended on %s (%s); decoding with PyAV", path, err)
                self.stop()
                return None
            if not answer["ok"]:
                logger.warning("decord failed on %s (%s); decoding with PyAV", path, answer["error"])
                return None
            try:
                return np.load(out), answer["timestamps"], answer["indices"]
            except (ValueError, OSError) as err:
                logger.warning("decord's output for %s could not be read (%s); decoding with PyAV", path, err)
                return None


def serve_decord(requests=None, answers=None) -> None:
    """The child's loop: one JSON request a line in, one JSON answer a line out, until stdin closes."""
    requests, answers = requests or sys.stdin, answers or sys.stdout
    for line in requests:
        request = json.loads(line)
        try:
            report = run_decord_worker(request["path"], request["out"], request["indices"], request["threads"])
            answer = {"ok": True, **report}
        except Exception as err:  # any decord error is an answer ("fall back to PyAV"), not the child's end
            answer = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


_DECORD = DecordWorker()


def start_decord_worker() -> None:
    """Start the shared decord child ahead of the first upload (the app does this at start)."""
    _DECORD.start()


def _sample_with_decord(path: str, indices: list[int], meta: VideoMeta, limits: VideoLimits):
    """Decode `indices` with decord in the child process; None when it fails, crashes or runs too long."""
    decoded = _DECORD.decode(path, indices, limits.decode_threads, limits.decord_timeout_s)
    if decoded is None:
        return None
    frames = decoded[0]
    expected = (len(decoded[2]), meta.height, meta.width, 3)
    if frames.shape != expected or frames.dtype != np.uint8:
        logger.warning("decord returned %s %s for %s, expected %s uint8; decoding with PyAV",
                       frames.shape, frames.dtype, path, expected)
        return None
    return decoded


def run_decord_worker(path: str, out: str, indices: list[int], threads: int) -> dict:
    """The child side of :func:`_sample_with_decord`: decode `indices`, save them to `out` (.npy).

    Indices past decord's own frame count are clamped to its last frame, then repeats dropped.

    >>> run_decord_worker("clip.mp4", "/tmp/f.npy", [0, 30], threads=2)  # doctest: +SKIP
    {'indices': [0, 30], 'timestamps': [0.0, 1.0]}
    """
    import decord

    reader = decord.VideoReader(path, num_threads=threads)
    last = len(reader) - 1
    wanted = list(dict.fromkeys(min(i, last) for i in indices))
    frames = reader.get_batch(wanted).asnumpy()
    timestamps = [float(t) for t in reader.get_frame_timestamp(wanted)[:, 0]]
    np.save(out, np.ascontiguousarray(frames, dtype=np.uint8))
    return {"indices": wanted, "timestamps": timestamps}


# --------------------------------------------------------------------------------------------- PyAV


def _sample_with_pyav(path: str, indices: list[int], meta: VideoMeta, limits: VideoLimits):
    """Decode `indices` with PyAV: seek to the keyframe before far targets, decode forward to near ones."""
    picked: list[tuple[int, float, np.ndarray]] = []
    try:
        container = av.open(path, metadata_errors="ignore")
    except av.error.FFmpegError as err:
        raise CorruptVideoError(f"The video could not be opened for decoding. Details: {err}", path) from err
    with container:
        stream = [s for s in container.streams.video if not (s.disposition & av.stream.Disposition.attached_pic)][0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = limits.decode_threads
        tb = float(stream.time_base)
        start = stream.start_time or 0
        half_frame = 0.5 / meta.fps
        frames = iter(container.decode(stream))
        last = None  # (seconds from start, frame) of the last decoded picture
        exhausted = False
        for index in indices:
            target = index / meta.fps
            if not exhausted and target - (last[0] if last else 0.0) > limits.seek_gap_s:
                container.seek(int(start + target / tb), stream=stream, backward=True)
                frames = iter(container.decode(stream))
            while not exhausted and (last is None or last[0] < target - half_frame):
                try:
                    frame = next(frames)
                except StopIteration:
                    exhausted = True
                except av.error.FFmpegError as err:
                    logger.warning("decoding %s stopped after %.2f s: %s", path, last[0] if last else 0.0, err)
                    exhausted = True
                else:
                    if frame.pts is not None:
                        seconds = (frame.pts - start) * tb
                    else:  # no timestamp (some AVI files): count frames
                        seconds = last[0] + 1 / meta.fps if last else 0.0
                    last = (seconds, frame)
            if last is None:
                raise NoFramesError("The file has a video track, but none of its pictures could be decoded.", path)
            if exhausted and target - last[0] > limits.truncation_tolerance_s:
                raise CorruptVideoError(
                    f"The video stops at {last[0]:.1f} s although the file says it lasts {meta.duration_s:.1f} s: "
                    "it was probably cut short during upload. Please upload the complete file.",
                    path,
                )
            if picked and picked[-1][1] == last[0]:
                continue
            picked.append((int(round(last[0] * meta.fps)), last[0], last[1].to_ndarray(format="rgb24")))
    frames_rgb = np.stack([_rotate(p[2], meta.rotation) for p in picked])
    return frames_rgb, [p[1] for p in picked], [p[0] for p in picked]


def _rotate(frame: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a stored picture counter-clockwise by `rotation` degrees, as the display matrix asks."""
    return np.ascontiguousarray(np.rot90(frame, k=rotation // 90)) if rotation else frame


# ----------------------------------------------------------------------------------------- sampling


def sample_frames(
    path, num_frames: int | None = 16, fps: float | None = None, limits: VideoLimits = VideoLimits()
) -> SampledVideo:
    """Sample frames uniformly: `num_frames` segment centres, or every 1/fps s when `fps` is given.

    Returns at most that many frames: fewer when the video has fewer distinct frames at those times.
    Raises a :class:`VideoError` for any file we cannot use.

    >>> video = sample_frames("clip.mp4", num_frames=8)  # doctest: +SKIP
    >>> video.frames.shape, video.meta.decoder  # doctest: +SKIP
    ((8, 1280, 720, 3), 'decord')
    """
    if fps is None and num_frames is None:
        raise ValueError("give num_frames or fps")
    if limits.decoder not in ("decord", "pyav"):
        raise ValueError(f"limits.decoder must be 'decord' or 'pyav', got {limits.decoder!r}")
    meta = probe_video(path, limits)
    times = plan_timestamps(meta.duration_s, num_frames=num_frames, fps=fps, max_frames=limits.max_sampled_frames)
    if limits.keyframe_snap_s > 0:
        times = snap_to_keyframes(times, read_keyframe_times(meta.path), limits.keyframe_snap_s)
    indices = _indices_for(times, meta)
    decoded = None
    if limits.decoder == "decord" and meta.rotation == 0:
        decoded = _sample_with_decord(meta.path, indices, meta, limits)
        decoder = "decord"
    if decoded is None:
        decoded = _sample_with_pyav(meta.path, indices, meta, limits)
        decoder = "pyav"
    frames, timestamps, picked = decoded
    return SampledVideo(frames=frames, timestamps=[float(t) for t in timestamps], indices=[int(i) for i in picked],
                        meta=replace(meta, decoder=decoder))


if __name__ == "__main__":  # the decord child of DecordWorker
    serve_decord()
