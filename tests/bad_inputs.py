"""A corpus of awkward uploads, written into a folder by :func:`write_corpus`: every way a file can be wrong,
and files that look odd but are fine, each with what the app must answer.

Nothing binary is committed: each file is made here (PyAV encodes the videos, the others are bytes).

    cases = write_corpus(tmp_path / "corpus")
    [c.name for c in cases if c.expect == "ok"][:2]      ['one frame.mp4', '4000x4000.mp4']
    cases[0].words                                     'empty'

A case's ``expect`` is "ok" (a correct analysis), "error" (a clear refusal whose message matches
``words``, a regular expression, case-insensitive) or "either" (a still GIF: analyzing its one picture is
as right as refusing it as an image; a refusal must still match ``words``). ``upload`` is False for what cannot be sent as an
upload at all (a folder, a link to nothing); the command line still gets it. The over-size case needs the
limit :data:`SIZE_LIMIT_MB` (``SLUDGELENS_MAX_MB``) in whatever reads the corpus.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

# The upload limit, in MB, the corpus is made for (SLUDGELENS_MAX_MB): the over-size file is just above it.
SIZE_LIMIT_MB = 1.0
# The duration limit the corpus is made for (the default, SLUDGELENS_MAX_SECONDS): the long clip is above it.
DURATION_LIMIT_S = 600.0

# What a message must say, per kind of refusal (core.video's messages, in the words a person reads).
EMPTY = r"empty"
NOT_MEDIA = r"not a video|no video"
IMAGE = r"image, not a video"
AUDIO = r"no picture"
CUT = r"cut (short|off)|ends early|damaged|incomplete"
UNDECODABLE = r"no pictures|could be decoded|damaged|ends early"
PIXELS = r"pixels"
TOO_LONG = r"long; the limit"
TOO_BIG = r"the limit is|too large|exceeds"
MISSING = r"no file|folder"


@dataclass(frozen=True)
class Case:
    """One file of the corpus and what the app must answer for it."""

    name: str  # the file's name in the corpus folder (spaces and any script allowed)
    path: Path
    expect: str  # "ok", "error", or "either" (a correct analysis or a refusal that matches `words`)
    words: str = ""  # for an error: a regular expression its message must match (case-insensitive)
    what: str = ""  # what the file is, for a failure message
    upload: bool = True  # False: a folder or a link to nothing, which no upload can carry


def scene(i: int, width: int, height: int) -> np.ndarray:
    """Frame i of a plain test clip: a grey level that moves with i and a red block in the top-left corner.

    >>> scene(0, 32, 16).shape
    (16, 32, 3)
    """
    frame = np.full((height, width, 3), (40 + 12 * i) % 256, np.uint8)
    frame[: max(1, height // 3), : max(1, width // 3)] = (220, 30, 30)
    return frame


def encode(path: Path, frames: int = 12, fps: int = 6, size: tuple[int, int] = (64, 48), codec: str = "libx264",
           options: dict | None = None, container_options: dict | None = None, turn: int = 0,
           times: list[float] | None = None, painter=scene, fmt: str | None = None) -> Path:
    """Encode a clip with PyAV. ``times`` (seconds) gives each frame its own timestamp (variable frame rate);
    ``turn`` writes a display rotation (counter-clockwise degrees).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     encode(Path(folder) / "c.mp4", frames=2).stat().st_size > 0
    True
    """
    width, height = size
    with av.open(str(path), "w", format=fmt, options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=fps, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1
        if turn:
            stream.set_display_rotation(turn)
        if times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i in range(frames):
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(painter(i, width, height)), format="rgb24")
            if times is not None:
                picture.pts, picture.time_base = int(round(times[i] * 1000)), Fraction(1, 1000)
            container.mux(stream.encode(picture))
        container.mux(stream.encode(None))
    return path


def encode_audio(path: Path, seconds: float = 1.0, codec: str = "aac", rate: int = 16000,
                 fmt: str | None = None) -> Path:
    """An audio-only file (silence) with PyAV."""
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        sample_fmt = "fltp" if codec in ("aac", "mp3", "libmp3lame") else "s16"
        for k in range(int(seconds * rate / 1152)):
            samples = np.zeros((1, 1152), np.float32 if sample_fmt == "fltp" else np.int16)
            frame = av.AudioFrame.from_ndarray(samples, format=sample_fmt, layout="mono")
            frame.sample_rate, frame.pts = rate, k * 1152
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def noise(seed: int):
    """A painter of incompressible frames: a cut anywhere in the file cuts pictures, not padding."""
    rng = np.random.default_rng(seed)
    return lambda i, w, h: rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def cut(source: Path, path: Path, share: float) -> Path:
    """The first `share` of a file's bytes, as an upload cut short."""
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * share)])
    return path


def y4m_header(path: Path, width: int, height: int) -> Path:
    """A YUV4MPEG2 stream whose header claims a picture of width x height, followed by a few bytes."""
    path.write_bytes(f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg\n".encode() + b"FRAME\n" + bytes(4096))
    return path


def mp4_box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def write_corpus(folder: str | Path) -> list[Case]:
    """Write every case into `folder` (made if missing) and return them, refusals first.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     cases = write_corpus(folder)
    >>> len(cases) >= 40, sorted({c.expect for c in cases})
    (True, ['either', 'error', 'ok'])
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def error(name: str, words: str, what: str, upload: bool = True) -> None:
        cases.append(Case(name, root / name, "error", words, what, upload))

    def ok(name: str, what: str) -> None:
        cases.append(Case(name, root / name, "ok", "", what))

    scratch = root / ".sources"
    scratch.mkdir(exist_ok=True)

    # -- not a video at all
    (root / "empty.mp4").write_bytes(b"")
    error("empty.mp4", EMPTY, "an empty file")
    (root / "zeros.mp4").write_bytes(bytes(4096))
    error("zeros.mp4", NOT_MEDIA, "4 KB of zero bytes")
    (root / "random bytes.mp4").write_bytes(np.random.default_rng(1).integers(0, 256, 50_000, np.uint8).tobytes())
    error("random bytes.mp4", NOT_MEDIA, "random bytes")
    (root / "random.webm").write_bytes(np.random.default_rng(2).integers(0, 256, 20_000, np.uint8).tobytes())
    error("random.webm", NOT_MEDIA, "random bytes named .webm")
    (root / "notes.mp4").write_text("these are meeting notes, not a video\n" * 40, encoding="utf-8")
    error("notes.mp4", NOT_MEDIA, "a text file renamed .mp4")
    (root / "page.mp4").write_text("<!doctype html><html><body>" + "<p>hi</p>" * 200 + "</body></html>")
    error("page.mp4", NOT_MEDIA, "an HTML page renamed .mp4")
    (root / "report.mp4").write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 8)
    error("report.mp4", NOT_MEDIA, "a PDF renamed .mp4")
    (root / "archive.mp4").write_bytes(b"PK\x03\x04" + bytes(range(256)) * 8)
    error("archive.mp4", NOT_MEDIA, "a ZIP archive renamed .mp4")
    header = mp4_box(b"ftyp", b"isom\x00\x00\x02\x00isomiso2avc1mp41")
    (root / "bare header.mp4").write_bytes(header)
    error("bare header.mp4", CUT + "|" + NOT_MEDIA, "an mp4 header and nothing after it")
    (root / "header and empty moov.mp4").write_bytes(header + mp4_box(b"moov", b""))
    error("header and empty moov.mp4", CUT + "|" + NOT_MEDIA, "an mp4 header with an empty index")

    # -- still images renamed
    picture = Image.fromarray(scene(0, 96, 64))
    for fmt, name in (("PNG", "photo png.mp4"), ("JPEG", "photo jpeg.mp4"), ("WEBP", "photo webp.mp4"),
                      ("TIFF", "photo tiff.mov"), ("BMP", "bitmap.mp4")):
        picture.save(root / name, format=fmt)
        error(name, IMAGE, f"a {fmt} image renamed")
    picture.save(root / "still gif.mp4", format="GIF")
    cases.append(Case("still gif.mp4", root / "still gif.mp4", "either", IMAGE, "a one-picture GIF renamed .mp4"))

    # -- sound, no picture
    encode_audio(root / "song.m4a", fmt="mp4")
    error("song.m4a", AUDIO, "AAC audio in an m4a")
    encode_audio(scratch / "song.mp4", fmt="mp4")
    os.replace(scratch / "song.mp4", root / "song audio only.mp4")
    error("song audio only.mp4", AUDIO, "AAC audio in an mp4")
    encode_audio(root / "song.wav", codec="pcm_s16le", fmt="wav")
    error("song.wav", AUDIO, "a WAV file")
    encode_audio(root / "song.mp3", codec="mp3", fmt="mp3")
    error("song.mp3", AUDIO, "an MP3 file")

    # -- cut short, damaged, undecodable
    faststart = encode(scratch / "faststart.mp4", frames=40, fps=10, painter=noise(3),
                       container_options={"movflags": "faststart"})
    for share in (0.5, 0.9):
        name = f"faststart cut at {share:.0%}.mp4"
        cut(faststart, root / name, share)
        error(name, CUT, f"a faststart mp4 (index first) cut at {share:.0%} of its bytes")
    moov_last = encode(scratch / "moov-last.mp4", frames=40, fps=10, painter=noise(4))
    for share in (0.5, 0.9):
        name = f"index at the end cut at {share:.0%}.mp4"
        cut(moov_last, root / name, share)
        error(name, CUT, f"an mp4 with its index at the end, cut at {share:.0%}")
    matroska = encode(scratch / "whole.mkv", frames=40, fps=10, painter=noise(5))
    cut(matroska, root / "matroska cut at 60%.mkv", 0.6)
    error("matroska cut at 60%.mkv", CUT, "a Matroska file cut at 60%")
    with av.open(str(root / "no pictures.mkv"), "w") as container:
        video = container.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        sound = container.add_stream("aac", rate=16000)
        for k in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, k * 1024
            container.mux(sound.encode(frame))
        container.mux(sound.encode(None))
    error("no pictures.mkv", UNDECODABLE + "|" + AUDIO, "a video track that never got a picture")
    with av.open(str(root / "garbage packets.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for i in range(10):
            packet = av.Packet(bytes(range(256)) * 2)
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, i, i, Fraction(1, 10)
            packet.is_keyframe = True
            container.mux(packet)
    error("garbage packets.mp4", UNDECODABLE, "an h264 track whose packets are not h264")

    # -- pictures of the wrong size, a clip of the wrong length
    y4m_header(root / "huge dimensions.mp4", 60000, 60000)
    error("huge dimensions.mp4", PIXELS + "|" + CUT + "|" + NOT_MEDIA, "a header claiming 60000x60000 pictures")
    y4m_header(root / "huge dimensions.y4m", 40000, 30)
    error("huge dimensions.y4m", PIXELS + "|" + CUT, "a header claiming 40000x30 pictures")
    encode(root / "too wide.mp4", frames=2, size=(4160, 32), options={"preset": "ultrafast"})
    error("too wide.mp4", PIXELS, "a clip 4160 px wide (over the 4096 px limit)")
    encode(root / "tiny 8x8.mp4", frames=4, size=(8, 8))
    error("tiny 8x8.mp4", PIXELS, "an 8x8 clip (under the 16 px limit)")
    long_times = [0.0, DURATION_LIMIT_S / 2, DURATION_LIMIT_S + 60.0]
    encode(root / "eleven minutes.mp4", frames=3, size=(32, 32), times=long_times)
    error("eleven minutes.mp4", TOO_LONG, "a 3-frame clip that lasts 11 minutes (over the 10 min limit)")

    # -- over the size limit (SIZE_LIMIT_MB): a valid clip padded with a free box, a tenth over the limit
    small = encode(scratch / "small.mp4", frames=6)
    padding = int(SIZE_LIMIT_MB * 1.1 * 2**20) - small.stat().st_size
    (root / "over the size limit.mp4").write_bytes(small.read_bytes() + mp4_box(b"free", bytes(padding)))
    error("over the size limit.mp4", TOO_BIG, f"a valid clip of {SIZE_LIMIT_MB * 1.1:g} MB")

    # -- not a file
    (root / "a folder.mp4").mkdir(exist_ok=True)
    error("a folder.mp4", MISSING, "a folder named like a video", upload=False)
    link = root / "passwd.mp4"
    if not link.is_symlink():
        link.symlink_to("/etc/passwd")
    error("passwd.mp4", NOT_MEDIA, "a link to /etc/passwd")
    dangling = root / "link to nothing.mp4"
    if not dangling.is_symlink():
        dangling.symlink_to(root / "no such file.mp4")
    error("link to nothing.mp4", MISSING, "a link to a file that does not exist", upload=False)

    # -- odd but fine: each must be analyzed
    encode(root / "one frame.mp4", frames=1)
    ok("one frame.mp4", "a clip of a single frame")
    encode(root / "4000x4000.mp4", frames=2, size=(4000, 4000), options={"preset": "ultrafast"})
    ok("4000x4000.mp4", "a 4000x4000 clip (under the 4096 px limit)")
    encode(root / "rotated 90.mp4", frames=8, size=(48, 64), turn=90)
    ok("rotated 90.mp4", "a portrait clip stored turned, with a 90° display rotation")
    vfr_times = [0.0, 0.05, 0.1, 0.6, 0.65, 1.5, 1.55, 2.4, 3.0, 3.02]
    encode(root / "variable frame rate.mp4", frames=len(vfr_times), times=vfr_times)
    ok("variable frame rate.mp4", "frames at irregular times (variable frame rate)")
    encode(root / "клип 動画 🎞.webm", frames=12, codec="libvpx-vp9", options={"deadline": "realtime", "cpu-used": "8"})
    ok("клип 動画 🎞.webm", "VP9 in WebM, with a Cyrillic, Japanese and emoji name")
    encode(root / "  spaces   in  the name .mkv", frames=12)
    ok("  spaces   in  the name .mkv", "h264 in Matroska, a name with runs of spaces")
    encode(root / "mpeg4.avi", frames=12, codec="mpeg4", options={"qscale": "3"})
    ok("mpeg4.avi", "MPEG-4 part 2 in AVI")
    encode(root / "phone.mov", frames=12, fmt="mov")
    ok("phone.mov", "h264 in QuickTime")
    encode(scratch / "named-avi.mp4", frames=12)
    os.replace(scratch / "named-avi.mp4", root / "really an mp4.avi")
    ok("really an mp4.avi", "an mp4 named .avi")
    return cases


if __name__ == "__main__":
    import sys

    for case in write_corpus(sys.argv[1] if len(sys.argv) > 1 else "bad-inputs"):
        print(f"{case.expect:5}  {case.name!r:45}  {case.what}")
