"""Sample frames from an uploaded video: refuse what we cannot use, probe the rest, decode what we need.

    video = sample_frames("clip.mp4", num_frames=16)
    video.frames.shape          # (16, H, W, 3) uint8 RGB at the working size, turned the way the file says
    video.timestamps[:2]        # [1.867, 5.6] seconds, one per frame
    video.meta.decoder          # "pyav"; "decord" when limits.decoder="decord" and decord did the work
    check_video_file("clip.mp4")  # the checks alone, before a model loads: a VideoMeta or a VideoError

Every refusal is a :class:`VideoError` (a ``ValueError``) with a short ``.code`` and a message a person
can act on, raised before any decoding where the check allows it (size, magic bytes, a file cut short).

A file cut short (an interrupted upload or copy) is a :class:`TruncatedVideoError` ("truncated_video"),
found without decoding: the structure of the file declares its own length (MP4/MOV top-level boxes, the
Matroska/WebM Segment size, the AVI RIFF size), and the demuxer's index says where every packet of an
MP4 or AVI lies; either pointing past the last byte means bytes are missing (:func:`find_declared_end`).
Trailing bytes after a complete file (metadata, tags, padding) are not mistaken for a cut.

Decoding, and why it is done this way (medians from ``python -m bench.bench_video``: 16 frames of a
60 s 720p h264 clip with a keyframe every ~2 s, 2 shared CPU cores):

* Planned times (segment centres, :func:`plan_timestamps`) within reach of a keyframe take the keyframe
  (``limits.keyframe_snap_s``, :func:`snap_to_keyframes`; keyframes read from packets, nothing decoded).
  Decoding an exact frame costs the keyframe before it and every frame up to it, ~30 decodes at a 2 s
  keyframe interval; a keyframe costs one. The fast tier needs coverage, not exact instants, and the
  frames' true timestamps are what is stored and shown. ``keyframe_snap_s=0`` decodes the exact frames.
* Every frame is scaled to the working size as it is decoded (longest side at most
  ``limits.decode_max_side``, :func:`working_size`), so memory follows the number of frames, not the
  source's resolution: a 4000x4000 source is never held at full size beyond the picture being decoded.
* PyAV is the default decoder (``limits.decoder``): seek to the keyframe before each target and decode
  forward to it; targets close together are reached by decoding on instead (``limits.seek_gap_s``), so a
  short clip is decoded once, front to back. Runs of targets between groups of pictures are decoded side
  by side, one container and one decoder thread each. It runs in the app's process, with no frames to
  hand across: 0.60 s and 0.92 CPU s against decord's 0.85 s and 1.29 CPU s in the bench above. Some
  streams decode wrongly from a keyframe reached by a seek (the decoder flags the pictures corrupt); such a
  file is decoded again front to back, never seeking. A picture's time is its pts, or its dts where the pts
  come out of order (FFmpeg's best-effort rule, :func:`_stamp_pictures`); a bare elementary stream (no
  container: an MPEG-1 ``.mpg``, an ``.h264``) has its pictures counted at the probe and is decoded front to
  back, pictures told apart by count (``VideoMeta.timed``).
* decord (``VideoReader.get_batch``, ``limits.decoder="decord"``) is the alternative. It is unmaintained
  and known to hang or crash in C code on some files. A thread cannot be stopped once it is stuck inside
  C, and a crash there takes the whole app down, so decord runs in a long-lived child process
  (:class:`DecordWorker`) that is killed, and replaced, after ``limits.decord_timeout_s``. The child
  splits the frames between ``limits.decode_threads`` single-threaded readers that decode side by side
  (sampled keyframes decode one by one, which a decoder's own frame threads cannot share out), scales each
  frame in decord's own filter graph, and writes it straight to a file the app reads once. Whatever decord
  cannot decode is decoded with PyAV.
* Rotation: the display matrix is read from PyAV's ``VideoFrame.rotation`` (counter-clockwise degrees)
  and applied with ``np.rot90``. decord 0.6.0 applies the matrix itself, wrongly: a file turned by 90°
  comes back as a 4-channel buffer of the wrong size, so rotated files go straight to PyAV.
"""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import math
import os
import select
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np

from core.config import DECODERS, VideoLimits

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


class TruncatedVideoError(CorruptVideoError):
    """The file stops before the end its own structure declares: an upload or a copy that was cut off."""

    code = "truncated_video"


# ----------------------------------------------------------------------------------------- data shapes


@dataclass(frozen=True)
class VideoMeta:
    """What we learned about a video file."""

    path: str
    size_bytes: int
    duration_s: float
    fps: float
    width: int  # the source's, after rotation is applied, i.e. as the video is meant to be shown
    height: int
    codec: str
    rotation: int  # counter-clockwise degrees the stored picture is turned for display: 0, 90, 180, 270
    frame_count: int
    decoder: str  # "decord" or "pyav": who decoded the frames (the probe itself always uses PyAV)
    # False for a bare elementary stream: its timestamps are the parser's guesses (an MPEG-1 stream's are a
    # picture ahead, or at another rate than its header's), so its pictures are told apart by count.
    timed: bool = True


@dataclass
class SampledVideo:
    """Frames sampled from a video, with where in the video each one comes from."""

    frames: np.ndarray  # (N, H, W, 3) uint8 RGB at the working size (see working_size), rotation honoured
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
# Demuxers of bare elementary streams (MPEG-1/2 video alone in an .mpg or .m1v, an .h264, an .m4v of MPEG-4
# part 2): no index and no duration, so FFmpeg estimates one from the header's bit rate, often a stand-in value
# (an MPEG-1 header's 104 Mbit/s made a 6 s clip read 18 ms, and one frame was sampled). Their pictures are counted.
_ELEMENTARY_DEMUXERS = {"mpegvideo", "h261", "h263", "h264", "hevc", "vvc", "m4v", "cavsvideo", "avs2", "avs3",
                        "vc1", "dirac"}
# PyAV demuxers that read a single still image.
_IMAGE_DEMUXERS = {"image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "webp_pipe", "tiff_pipe", "gif_pipe",
                   "jpegxl_pipe", "qoi_pipe", "dpx_pipe", "exr_pipe", "psd_pipe", "svg_pipe"}

# Video files by name: the containers the decoder (FFmpeg, through PyAV) reads that a real collection holds.
# The common five, then older ones (Ogg Theora, MPEG program streams, WMV, FLV, 3GP, a camcorder's AVCHD
# .mts) that uploads and a folder ingest take as well, then other spellings of those (not .ts, which is as
# often TypeScript). The upload hint, the refusals and the CLI's help name the first two groups.
COMMON_FORMATS = ("mp4", "mov", "webm", "mkv", "avi")
OLDER_FORMATS = ("ogv", "mpg", "wmv", "flv", "3gp", "mts")
VIDEO_EXTENSIONS = tuple(f".{name}" for name in COMMON_FORMATS + OLDER_FORMATS) + (".m4v", ".mpeg", ".m2ts")
_SUPPORTED = (f"Please upload a video file ({', '.join(COMMON_FORMATS[:-1])} or {COMMON_FORMATS[-1]}; older "
              f"{', '.join(OLDER_FORMATS[:-1])} and {OLDER_FORMATS[-1]} files work too).")


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


# -------------------------------------------------------------------------------- truncated files

# Top-level MP4/MOV boxes (ISO 14496-12, QuickTime). Only a box of a known type that runs past the end of
# the file counts as a cut: anything else there is trailing bytes some tool appended (an ID3 tag, padding).
_MP4_BOXES = {b"ftyp", b"styp", b"moov", b"mdat", b"moof", b"mfra", b"free", b"skip", b"wide", b"pnot", b"uuid",
              b"meta", b"udta", b"pdin", b"sidx", b"ssix", b"prft", b"emsg", b"junk", b"PICT"}
_EBML_HEADER, _MKV_SEGMENT = 0x1A45DFA3, 0x18538067


def _walk_mp4_boxes(fh, size: int) -> tuple[int | None, set[bytes], bool]:
    """Walk the top-level boxes of an MP4/MOV file by their headers.

    Returns where a known box that runs past the end of the file says it ends (None when none does), the
    box types seen, and whether the walk accounted for every byte (it stops early at bytes that are not a
    box: anything but four printable characters in the type field).
    """
    offset, kinds = 0, set()
    while offset + 8 <= size:
        fh.seek(offset)
        header = fh.read(16)
        box_size, kind = int.from_bytes(header[:4], "big"), header[4:8]
        if not all(32 <= c < 127 for c in kind):
            return None, kinds, False
        kinds.add(kind)
        if box_size == 1 and len(header) == 16:  # a 64-bit size follows the type
            box_size = int.from_bytes(header[8:16], "big")
        elif box_size == 0:  # "to the end of the file"
            return None, kinds, True
        if box_size < 8:
            return None, kinds, False
        if offset + box_size > size:
            return (offset + box_size if kind in _MP4_BOXES else None), kinds, False
        offset += box_size
    return None, kinds, offset == size


def _read_vint(fh) -> tuple[int, int, bool] | None:
    """One EBML variable-length integer: (its value with the length marker kept, the value without it,
    whether all its value bits are set: the "unknown size" of a live recording)."""
    first = fh.read(1)
    if not first or first[0] == 0:
        return None
    length = 9 - first[0].bit_length()
    rest = fh.read(length - 1)
    if len(rest) != length - 1:
        return None
    raw = int.from_bytes(first + rest, "big")
    value = raw & ((1 << (7 * length)) - 1)
    return raw, value, value == (1 << (7 * length)) - 1


def _matroska_declared_end(fh, size: int) -> int | None:
    """Where the Segment element (all of a Matroska/WebM file but its header) says it ends, when it says."""
    fh.seek(0)
    element = _read_vint(fh)
    header = _read_vint(fh)
    if not element or not header or element[0] != _EBML_HEADER:
        return None
    fh.seek(fh.tell() + header[1])
    element, length = _read_vint(fh), _read_vint(fh)
    if not element or not length or element[0] != _MKV_SEGMENT or length[2]:
        return None
    return fh.tell() + length[1]


class DeclaredEnd(NamedTuple):
    """What a file's structure says about its end (:func:`find_declared_end`)."""

    end: int | None  # where the structure says the file ends, when that is past its last byte
    exact: bool  # False when more is known to follow `end` (an MP4 whose index comes after its pictures)
    indexed: bool  # False for an MP4 with all its boxes, pictures among them, but no movie index


def find_declared_end(path, size: int | None = None) -> DeclaredEnd:
    """Compare the size a file's own structure declares with the bytes it has, reading a few headers.

    MP4/MOV: the top-level boxes; Matroska/WebM: the Segment's size (a live recording leaves it unknown);
    AVI: the RIFF size. Other formats declare nothing here.

    >>> find_declared_end("clip.mp4")  # doctest: +SKIP
    DeclaredEnd(end=None, exact=True, indexed=True)
    >>> find_declared_end("cut.mp4")  # doctest: +SKIP
    DeclaredEnd(end=36755607, exact=False, indexed=True)
    """
    path = os.fspath(path)
    size = os.path.getsize(path) if size is None else size
    with open(path, "rb") as fh:
        head = fh.read(12)
        if head[4:8] in _MP4_BOXES:
            end, kinds, complete = _walk_mp4_boxes(fh, size)
            has_index = bool(kinds & {b"moov", b"moof"})
            return DeclaredEnd(end, exact=has_index, indexed=has_index or not (complete and b"mdat" in kinds))
        if head[:4] == _EBML_HEADER.to_bytes(4, "big"):
            end = _matroska_declared_end(fh, size)
            return DeclaredEnd(end if end is not None and end > size else None, True, True)
        if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
            end = 8 + int.from_bytes(head[4:8], "little")
            return DeclaredEnd(end if end > size else None, True, True)
    return DeclaredEnd(None, True, True)


def _truncated(path: str, have: int, expected: int | None, at_least: bool = False) -> TruncatedVideoError:
    if expected is None:
        detail = f"its {have:,} bytes hold pictures but not the index an MP4 file needs to play them"
    else:
        detail = f"{have:,} of {'at least ' if at_least else ''}{expected:,} bytes are there"
    return TruncatedVideoError(f"The file ends early: it looks cut off ({detail}). Upload the whole file.", path)


def _refuse_truncated(path: str, size: int) -> None:
    """Raise :class:`TruncatedVideoError` when the file's structure declares more bytes than there are."""
    declared = find_declared_end(path, size)
    if declared.end is not None:
        raise _truncated(path, size, declared.end, at_least=not declared.exact)
    if not declared.indexed:
        raise _truncated(path, size, None)


def _refuse_missing_samples(path: str, container, size: int) -> None:
    """Raise :class:`TruncatedVideoError` when the demuxer's index places data past the end of the file.

    An MP4 or an AVI indexes where every packet lies; a cut leaves entries that point at bytes that are not
    there. (Matroska indexes keyframes only, by cluster, and is covered by its Segment size instead.)
    """
    end = 0
    for stream in container.streams:
        entries = stream.index_entries
        if len(entries):
            end = max(end, max(e.pos + e.size for e in entries))
    if end > size:
        raise _truncated(path, size, end)


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


def _first_picture(packets_in, stream, limits: VideoLimits, keyframes: list[float]):
    """Decode the first picture of `stream` from the demuxed `packets_in`, reading at most
    `limits.probe_max_packets` packets; the times of the keyframes read go to `keyframes`.

    Returns (frame or None, packets read, the last decode error or None).
    """
    packets, error = 0, None
    for packet in packets_in:
        packets += packet.size > 0
        _note_keyframe(packet, stream, keyframes)
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


def _note_keyframe(packet, stream, keyframes: list[float]) -> None:
    if packet.is_keyframe and packet.pts is not None:
        keyframes.append(float((packet.pts - (stream.start_time or 0)) * stream.time_base))


def _normalise_rotation(degrees: float) -> int:
    return int(round(degrees / 90.0)) * 90 % 360


def _count_pictures(packets_in, counted: int, limits: VideoLimits) -> int:
    """A bare elementary stream's pictures: the rest of its packets counted (demuxed, not decoded), `counted`
    of them already read. Stops once the count passes the duration limit at 120 fps: such a file is refused
    as too long all the same."""
    cap = int(limits.max_duration_s * 120) + 2
    for packet in packets_in:
        counted += packet.size > 0
        if counted >= cap:
            break
    return max(counted, 1)


def _duration_of(container, stream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def check_video_file(path, limits: VideoLimits = VideoLimits()) -> VideoMeta:
    """Check a file and describe its video stream; raise a :class:`VideoError` for anything unusable.

    Cheap enough to run before a model loads: the size is checked before the file is opened, then the
    signature, whether the file is all there (its structure and its index against its size, see
    :func:`find_declared_end`), the streams, and the resolution and duration limits. Only the first picture
    is decoded, to learn the rotation and to be sure the track holds pictures at all; none of the frames
    that are sampled later.

    >>> check_video_file("clip.mp4").duration_s  # doctest: +SKIP
    60.0
    >>> check_video_file("cut.mp4")  # doctest: +SKIP
    Traceback (most recent call last):
    ...
    core.video.TruncatedVideoError: The file ends early: it looks cut off (33,080,232 of 36,773,592 bytes are there). Upload the whole file.
    """
    return _inspect(path, limits)[0]


# The name sample_frames and older callers use.
probe_video = check_video_file


def _inspect(path, limits: VideoLimits, with_keyframes: bool = False) -> tuple[VideoMeta, list[float] | None]:
    """:func:`check_video_file`, and with `with_keyframes` the keyframe times (:func:`read_keyframe_times`)
    read on from the packets the check began to read: one opening of the file instead of two (each opening
    decodes a picture to learn the stream's parameters)."""
    path = os.fspath(path)
    size = _check_file(path, limits)
    with open(path, "rb") as fh:
        head = fh.read(4096)
    _refuse_by_signature(path, head)
    _refuse_truncated(path, size)
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
        _refuse_missing_samples(path, container, size)
        stream = videos[0]
        # The stream's declared size, before a picture of it is decoded (one 8K picture is ~100 MB).
        _check_sides(path, stream.codec_context.width, stream.codec_context.height, limits)
        packets_in = container.demux(stream)
        keyframes: list[float] = []
        first, packets, error = _first_picture(packets_in, stream, limits, keyframes)
        if first is None:
            if packets == 0:
                raise NoFramesError("The file has a video track, but the track holds no pictures.", path)
            if packets < min(stream.frames, limits.probe_max_packets):
                raise TruncatedVideoError(
                    f"The file ends early: it looks cut off (it lists {stream.frames} pictures, but its data stops "
                    f"after {packets}). Upload the whole file.",
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
        timed = fmt not in _ELEMENTARY_DEMUXERS
        if not timed:
            frame_count = _count_pictures(packets_in, packets, limits)
            duration = frame_count / fps
        if not frame_count:
            frame_count = max(1, int(round(duration * fps)))
        turned = rotation in (90, 270)
        meta = VideoMeta(
            path=path, size_bytes=size, duration_s=max(duration, 1.0 / fps), fps=fps,
            width=coded_h if turned else coded_w, height=coded_w if turned else coded_h,
            codec=stream.codec_context.name, rotation=rotation, frame_count=frame_count, decoder="pyav",
            timed=timed,
        )
        _check_meta(meta, limits)
        if not with_keyframes:
            return meta, None
        try:
            for packet in packets_in:
                _note_keyframe(packet, stream, keyframes)
        except av.error.FFmpegError as err:
            logger.info("keyframes of %s read up to %d: %s", path, len(keyframes), err)
    return meta, sorted(keyframes)


def _check_sides(path: str, width: int, height: int, limits: VideoLimits) -> None:
    if not width or not height:  # not declared: the decoded picture is checked instead
        return
    small, large = min(width, height), max(width, height)
    if small < limits.min_side:
        raise ResolutionError(
            f"The video is {width}×{height} pixels; each side must be at least {limits.min_side} px.", path,
        )
    if large > limits.max_side:
        raise ResolutionError(
            f"The video is {width}×{height} pixels; the longest side may be at most {limits.max_side} px. "
            "Please upload a smaller version.",
            path,
        )


def _check_meta(meta: VideoMeta, limits: VideoLimits) -> None:
    _check_sides(meta.path, meta.width, meta.height, limits)
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

    Demuxing a 60 s 720p mp4 this way takes ~0.05 s. (Letting the demuxer skip the other packets,
    ``Discard.nonkey``, saves a third of that, but FFmpeg's mp4 demuxer then misstates the keyframes'
    times by a frame.) A file whose packets cannot be read to the end gives the keyframes read so far.

    >>> read_keyframe_times("clip.mp4")[:3]  # doctest: +SKIP
    [0.0, 2.0, 2.467]
    """
    times: list[float] = []
    try:
        with av.open(path, metadata_errors="ignore") as container:
            stream = [s for s in container.streams.video if not (s.disposition & av.stream.Disposition.attached_pic)][0]
            for packet in container.demux(stream):
                _note_keyframe(packet, stream, times)
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


# ------------------------------------------------------------------------------------- working size


def working_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) scaled down so the longest side is at most `max_side`, the aspect ratio kept.

    Unchanged when the picture already fits or `max_side` is 0 (``VideoLimits.decode_max_side``).

    >>> working_size(4000, 4000, 1024)
    (1024, 1024)
    >>> working_size(720, 1280, 1024)
    (576, 1024)
    >>> working_size(640, 360, 1024)
    (640, 360)
    """
    if max_side <= 0 or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


# ------------------------------------------------------------------------------------------- decord


class DecordWorker:
    """decord in a long-lived child process that is killed, and replaced, when it hangs or dies.

    A thread stuck inside decord's C code cannot be stopped and a crash there would take the app down, so
    decord never runs in the app's process. The child (``python -m core.video``: it imports only this
    module and decord) is started on first use, or by :meth:`start`, and kept: a fresh interpreter per
    video costs ~0.5 s, more than decoding 16 frames. Requests go one at a time as JSON lines over its
    stdin/stdout; the frames come back as raw RGB bytes in a temporary file, already at the working size.

    >>> worker = DecordWorker()
    >>> worker.decode("clip.mp4", [0, 30], threads=2, timeout_s=20.0, size=(1024, 576))  # doctest: +SKIP
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

    def decode(self, path: str, indices: list[int], threads: int, timeout_s: float,
               size: tuple[int, int] | None = None, keyframes: list[int] | None = None):
        """(frames, timestamps, indices) from decord, or None when it failed, died or ran past `timeout_s`.

        `size` (width, height) is the size each frame is scaled to as it is decoded; None keeps the source's.
        `keyframes` (frame indices), when known, let the child split the work before it has read the file.
        """
        with self._lock, tempfile.TemporaryDirectory(prefix="sludgelens-decord-") as tmp:
            out = str(Path(tmp) / "frames.rgb")
            request = {"path": os.path.abspath(path), "out": out, "indices": list(indices), "threads": threads,
                       "size": list(size) if size else None, "keyframes": keyframes}
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
            shape = tuple(answer["shape"])
            try:
                frames = np.fromfile(out, dtype=np.uint8).reshape(shape)
            except (ValueError, OSError) as err:
                logger.warning("decord's output for %s could not be read (%s); decoding with PyAV", path, err)
                return None
            return frames, answer["timestamps"], answer["indices"]


def serve_decord(requests=None, answers=None) -> None:
    """The child's loop: one JSON request a line in, one JSON answer a line out, until stdin closes."""
    requests, answers = requests or sys.stdin, answers or sys.stdout
    for line in requests:
        request = json.loads(line)
        try:
            report = run_decord_worker(request["path"], request["out"], request["indices"], request["threads"],
                                       request.get("size"), request.get("keyframes"))
            answer = {"ok": True, **report}
        except Exception as err:  # any decord error is an answer ("fall back to PyAV"), not the child's end
            answer = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


_DECORD = DecordWorker()


def start_decord_worker() -> None:
    """Start the shared decord child ahead of the first upload (the app does this at start)."""
    _DECORD.start()


# decord 0.6.0 asked to scale to some widths below this (16, 24, 48 and 72 px among them) hands back a
# padded buffer of the wrong size; PyAV decodes such extreme aspect ratios instead.
_DECORD_MIN_SCALED_WIDTH = 80


def _sample_with_decord(path: str, indices: list[int], meta: VideoMeta, limits: VideoLimits,
                        keyframes: list[float] | None = None):
    """Decode `indices` with decord in the child process; None when it fails, crashes or runs too long."""
    size = working_size(meta.width, meta.height, limits.decode_max_side)
    if size != (meta.width, meta.height) and size[0] < _DECORD_MIN_SCALED_WIDTH:
        return None
    key_indices = sorted({int(round(t * meta.fps)) for t in keyframes}) if keyframes else None
    decoded = _DECORD.decode(path, indices, limits.decode_threads, limits.decord_timeout_s,
                             size if size != (meta.width, meta.height) else None, key_indices)
    if decoded is None:
        return None
    frames, _, picked = decoded
    expected = (len(picked), size[1], size[0], 3)
    if frames.shape != expected or frames.dtype != np.uint8:
        logger.warning("decord returned %s %s for %s, expected %s uint8; decoding with PyAV",
                       frames.shape, frames.dtype, path, expected)
        return None
    if picked[-1] < indices[-1] - limits.truncation_tolerance_s * meta.fps:
        # decord counts fewer frames than the file says it has: PyAV finds out whether it was cut short.
        logger.warning("decord's last frame of %s is %d, not %d; decoding with PyAV", path, picked[-1], indices[-1])
        return None
    return decoded


# Frames one decord call returns at once: the child holds two such batches (decord's and its copy) per reader.
_DECORD_BATCH = 8


# Frames a run must have to decode before another reader pays off: a reader of its own costs about two
# keyframe decodes (opening the file, indexing it), and runs side by side only save time when each has
# several times that to do.
MIN_RUN_DECODES = 8


def split_runs(indices: list[int], keyframes: list[int], parts: int, min_run: int = 1) -> list[int]:
    """Where to cut sorted frame `indices` into at most `parts` runs of about equal decoding work.

    A run is decoded from the keyframe before its first index on, so runs are cut only between groups of
    pictures (a cut inside one would decode its start twice); a group's work is the frames from its
    keyframe to the last index in it. No more runs than leave each `min_run` frames of work. Returns the
    positions in `indices` where the runs start, and its length.

    >>> split_runs([60, 147, 280, 366], [0, 60, 120, 180, 240, 300, 360], parts=2)
    [0, 2, 4]
    >>> split_runs([1, 5, 9, 13], [0], parts=2)  # one group of pictures: one run
    [0, 4]
    >>> split_runs([60, 120, 180, 240], [0, 60, 120, 180, 240], parts=2, min_run=8)  # too little work
    [0, 4]
    """
    keys = sorted(keyframes) or [0]
    starts: list[int] = []  # position in `indices` where each group starts
    costs: list[int] = []
    group_key = None
    for position, index in enumerate(indices):
        key = keys[max(bisect.bisect_right(keys, index) - 1, 0)]
        if key != group_key:
            starts.append(position)
            costs.append(0)
            group_key = key
        costs[-1] = index - key + 1
    before = list(itertools.accumulate(costs, initial=0))  # work before each group, and the total
    parts = max(1, min(parts, before[-1] // max(1, min_run)))
    cuts: list[int] = []
    for k in range(1, parts):
        target = before[-1] * k / parts
        best = min(range(1, len(starts)), key=lambda g: abs(before[g] - target), default=None)
        if best is not None and (not cuts or best > cuts[-1]):
            cuts.append(best)
    return [0, *(starts[g] for g in cuts), len(indices)]


def run_decord_worker(path: str, out: str, indices: list[int], threads: int, size=None, keyframes=None) -> dict:
    """The child side of :func:`_sample_with_decord`: decode `indices` and write them to `out` as raw RGB.

    Indices past decord's own frame count are clamped to its last frame; should that make two of them the
    same, the request fails and the app decodes with PyAV, which tells a cut file from a miscount. `size`
    (width, height) has decord's scaler shrink each frame as it is decoded, so no full-size frame is kept.
    The indices are split into at most `threads` runs (:func:`split_runs`), each decoded by its own
    single-threaded reader, side by side: sampled keyframes are decoded one by one, which a decoder's own
    frame threads cannot share out; readers can. With `keyframes` (frame indices) given, the work is split
    before any reader opens the file, so the readers open it side by side too. Each run writes its frames
    at their place in `out` as it goes, a few at a time.

    >>> run_decord_worker("clip.mp4", "/tmp/f.rgb", [0, 30], threads=2, size=(1024, 576))  # doctest: +SKIP
    {'indices': [0, 30], 'timestamps': [0.0, 1.0], 'shape': [2, 576, 1024, 3]}
    """
    import decord

    width, height = size or (-1, -1)

    def open_reader():
        return decord.VideoReader(path, num_threads=1, width=width, height=height)

    readers = {} if keyframes is not None else {0: open_reader()}
    keys = keyframes if keyframes is not None else [int(k) for k in readers[0].get_key_indices()]
    wanted = list(dict.fromkeys(indices))
    bounds = split_runs(wanted, keys, threads, MIN_RUN_DECODES)
    frame_shape: list[tuple[int, ...]] = []
    runs: dict[int, list[int]] = {}  # the indices each run decoded, after clamping

    with open(out, "wb") as fh:

        def decode_run(k: int) -> None:
            if k not in readers:
                readers[k] = open_reader()
            reader = readers[k]
            end = len(reader) - 1
            run = runs[k] = list(dict.fromkeys(min(i, end) for i in wanted[bounds[k]:bounds[k + 1]]))
            for start in range(0, len(run), _DECORD_BATCH):
                frames = np.ascontiguousarray(reader.get_batch(run[start:start + _DECORD_BATCH]).asnumpy(),
                                              dtype=np.uint8)
                os.pwrite(fh.fileno(), frames.data, (bounds[k] + start) * frames[0].nbytes)
                frame_shape.append(frames.shape[1:])

        if len(bounds) == 2:
            decode_run(0)
        else:
            with ThreadPoolExecutor(len(bounds) - 1) as pool:
                list(pool.map(decode_run, range(len(bounds) - 1)))  # list(): raise what a run raised
    picked = [i for k in sorted(runs) for i in runs[k]]
    if len(set(picked)) != len(wanted):  # indices past decord's frame count were clamped onto one frame
        raise ValueError(f"decord counts {len(readers[0])} frames, fewer than the {wanted[-1] + 1} asked for")
    timestamps = [float(t) for t in readers[0].get_frame_timestamp(picked)[:, 0]]
    return {"indices": picked, "timestamps": timestamps, "shape": [len(picked), *frame_shape[0]]}


# --------------------------------------------------------------------------------------------- PyAV


def _sample_with_pyav(path: str, indices: list[int], meta: VideoMeta, limits: VideoLimits,
                      keyframes: list[float] | None = None):
    """Decode `indices` with PyAV, in runs side by side when the keyframes (seconds) allow it.

    Like decord's, the indices are split into at most ``limits.decode_threads`` runs between groups of
    pictures (:func:`split_runs`), each decoded with its own container and one decoder thread; a single
    run (one group of pictures, or one thread) gets the decoder's own threads instead. Frames are written
    straight into their place in the result.
    """
    width, height = working_size(meta.width, meta.height, limits.decode_max_side)
    out = np.empty((len(indices), height, width, 3), np.uint8)
    key_indices = sorted({int(round(t * meta.fps)) for t in keyframes}) if keyframes else [0]
    bounds = split_runs(indices, key_indices, limits.decode_threads, MIN_RUN_DECODES)
    threads = limits.decode_threads if len(bounds) == 2 else 1

    def decode(k: int):
        return _decode_run_pyav(path, indices[bounds[k]:bounds[k + 1]], meta, limits, threads,
                                out[bounds[k]:bounds[k + 1]])

    if len(bounds) == 2:
        runs = [decode(0)]
    else:
        with ThreadPoolExecutor(len(bounds) - 1) as pool:
            runs = list(pool.map(decode, range(len(bounds) - 1)))
    if any(damaged for _, _, damaged in runs):
        # Some streams decode wrongly from a keyframe reached by a seek (imageio's own cockatoo.mp4, H.264
        # High 4:4:4: every picture after the seek comes back mostly green, flagged corrupt), though front
        # to back they decode clean. Such a file is decoded once more in one run that never seeks.
        logger.info("%s: pictures decoded after a seek were corrupt; decoding it front to back", path)
        bounds = [0, len(indices)]
        runs = [_decode_run_pyav(path, indices, meta, replace(limits, seek_gap_s=math.inf), limits.decode_threads,
                                 out)]
    times: list[float] = []
    picked: list[int] = []
    for k, (run_times, run_picked, _) in enumerate(runs):
        for j, (t, index) in enumerate(zip(run_times, run_picked)):
            if times and t <= times[-1]:  # the same picture reached from two sides of a cut
                continue
            if len(picked) != bounds[k] + j:
                out[len(picked)] = out[bounds[k] + j]
            times.append(t)
            picked.append(index)
    return out[:len(picked)], times, picked


def _stamp_pictures(decoded, start: int, tb: float, timed: bool = True):
    """The decoded pictures with their times in seconds from `start`, as (seconds or None, frame); None where
    the file gives no time to trust (none at all, or a bare stream's: the caller counts pictures).

    FFmpeg's best-effort rule: a picture's pts, unless the pts have gone backwards more often than the dts,
    then its dts. Some files' pts come out of the decoder in decode order (AVIs of MPEG-4 with packed B-frames:
    1, 3, 2, 5, 4...), so by pts alone pictures were skipped and named a picture off. Each picture is stamped
    once the next one is decoded, so the first backward step already counts for the picture before it.
    """
    faulty = {"pts": 0, "dts": 0}
    seen: dict[str, int | None] = {"pts": None, "dts": None}

    def stamp(frame) -> float | None:
        if not timed:
            return None
        value = frame.pts if frame.pts is not None and (faulty["pts"] <= faulty["dts"] or frame.dts is None) \
            else frame.dts
        return None if value is None else float((value - start) * tb)

    held = None
    pictures = iter(decoded)
    while True:
        try:
            frame = next(pictures)
        except StopIteration:
            break
        except av.error.FFmpegError:
            if held is not None:
                yield stamp(held), held
            raise
        for name in ("pts", "dts"):
            value = getattr(frame, name)
            if value is not None:
                faulty[name] += seen[name] is not None and value <= seen[name]
                seen[name] = value
        if held is not None:
            yield stamp(held), held
        held = frame
    if held is not None:
        yield stamp(held), held


def _decode_run_pyav(path: str, indices: list[int], meta: VideoMeta, limits: VideoLimits, threads: int,
                     out: np.ndarray) -> tuple[list[float], list[int], bool]:
    """Decode one run of `indices` into `out`: seek to the keyframe before far targets, decode on to near
    ones. Each kept picture is scaled to the working size and converted to RGB in one step, so no
    full-size RGB frame is made. Returns the pictures' times and frame indices, repeats dropped, and whether
    a kept picture reached through a seek came back flagged corrupt by the decoder."""
    turned = meta.rotation in (90, 270)
    height, width = out.shape[1:3]
    stored_size = {"width": height, "height": width} if turned else {"width": width, "height": height}
    times: list[float] = []
    picked: list[int] = []
    try:
        container = av.open(path, metadata_errors="ignore")
    except av.error.FFmpegError as err:
        raise CorruptVideoError(f"The video could not be opened for decoding. Details: {err}", path) from err
    with container:
        stream = [s for s in container.streams.video if not (s.disposition & av.stream.Disposition.attached_pic)][0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        tb = float(stream.time_base)
        start = stream.start_time or 0
        half_frame = 0.5 / meta.fps
        frames = _stamp_pictures(container.decode(stream), start, tb, meta.timed)
        last = None  # (seconds from start, frame) of the last decoded picture
        exhausted = sought = damaged = False
        for index in indices:
            target = index / meta.fps
            if not exhausted and target - (last[0] if last else 0.0) > limits.seek_gap_s:
                container.seek(int(start + target / tb), stream=stream, backward=True)
                frames = _stamp_pictures(container.decode(stream), start, tb, meta.timed)
                sought = True
            while not exhausted and (last is None or last[0] < target - half_frame):
                try:
                    seconds, frame = next(frames)
                except StopIteration:
                    exhausted = True
                except av.error.FFmpegError as err:
                    logger.warning("decoding %s stopped after %.2f s: %s", path, last[0] if last else 0.0, err)
                    exhausted = True
                else:
                    if seconds is None:  # no timestamp (some AVI files) or none to trust (a bare stream): count
                        seconds = last[0] + 1 / meta.fps if last else 0.0
                    last = (seconds, frame)
            if last is None:
                raise NoFramesError("The file has a video track, but none of its pictures could be decoded.", path)
            if exhausted and target - last[0] > limits.truncation_tolerance_s:
                raise TruncatedVideoError(
                    f"The file ends early: it looks cut off (its pictures stop at {last[0]:.1f} s, but it says it "
                    f"lasts {meta.duration_s:.1f} s). Upload the whole file.",
                    path,
                )
            if times and times[-1] == last[0]:
                continue
            damaged = damaged or (sought and last[1].is_corrupt)
            rgb = last[1].to_ndarray(format="rgb24", interpolation="BILINEAR", **stored_size)
            out[len(picked)] = np.rot90(rgb, k=meta.rotation // 90) if meta.rotation else rgb
            picked.append(int(round(last[0] * meta.fps)))
            times.append(last[0])
    return times, picked, damaged


# ----------------------------------------------------------------------------------------- sampling


def sample_frames(
    path, num_frames: int | None = 16, fps: float | None = None, limits: VideoLimits = VideoLimits()
) -> SampledVideo:
    """Sample frames uniformly: `num_frames` segment centres, or every 1/fps s when `fps` is given.

    Returns at most that many frames: fewer when the video has fewer distinct frames at those times. The
    frames are at the working size (longest side at most ``limits.decode_max_side``, see
    :func:`working_size`); ``meta.width`` and ``meta.height`` stay the source's. Raises a
    :class:`VideoError` for any file we cannot use.

    >>> video = sample_frames("clip.mp4", num_frames=8)  # doctest: +SKIP
    >>> video.frames.shape, (video.meta.width, video.meta.height), video.meta.decoder  # doctest: +SKIP
    ((8, 1024, 576, 3), (1080, 1920), 'pyav')
    """
    if fps is None and num_frames is None:
        raise ValueError("give num_frames or fps")
    if limits.decoder not in DECODERS:
        raise ValueError(f"limits.decoder must be one of {DECODERS}, got {limits.decoder!r}")
    meta, keyframes = _inspect(path, limits, with_keyframes=limits.keyframe_snap_s > 0)
    if not meta.timed:
        # Pictures told apart by count are reached by decoding from the start: no seeks, and no keyframe times
        # to snap to or to cut runs at.
        limits, keyframes = replace(limits, seek_gap_s=math.inf), []
    times = plan_timestamps(meta.duration_s, num_frames=num_frames, fps=fps, max_frames=limits.max_sampled_frames)
    if keyframes is not None:
        times = snap_to_keyframes(times, keyframes, limits.keyframe_snap_s)
    indices = _indices_for(times, meta)
    decoded = None
    if limits.decoder == "decord" and meta.rotation == 0:
        decoded = _sample_with_decord(meta.path, indices, meta, limits, keyframes)
        decoder = "decord"
    if decoded is None:
        if keyframes is None and limits.decode_threads > 1:  # where runs may be cut
            keyframes = read_keyframe_times(meta.path)
        decoded = _sample_with_pyav(meta.path, indices, meta, limits, keyframes)
        decoder = "pyav"
    frames, timestamps, picked = decoded
    return SampledVideo(frames=frames, timestamps=[float(t) for t in timestamps], indices=[int(i) for i in picked],
                        meta=replace(meta, decoder=decoder))


if __name__ == "__main__":  # the decord child of DecordWorker
    serve_decord()
