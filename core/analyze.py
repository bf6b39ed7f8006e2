"""File -> verdict: the one function the CLI, the app and the API call to analyze a video.

    result = analyze_video(lm, "clip.mp4", num_frames=16)
    result.to_dict()   # {"video": {...}, "model": ..., "frames": [...], "verdict": {...}}
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from core.config import VideoLimits
from core.engine import FrameScore, LoadedModel, Verdict, decide_video, score_frames
from core.video import SampledVideo, sample_frames


@dataclass
class Analysis:
    """A video's sampled frames, their scores and the verdict, with how long each step took."""

    video: SampledVideo
    scores: list[FrameScore]
    verdict: Verdict
    model: str
    timings: dict[str, float]

    def to_dict(self) -> dict:
        """The JSON shape shared by the CLI (`--json`) and the API."""
        meta = self.video.meta
        return {
            "video": {
                "path": meta.path, "duration_s": round(meta.duration_s, 3), "fps": round(meta.fps, 3),
                "width": meta.width, "height": meta.height, "codec": meta.codec, "rotation": meta.rotation,
                "decoder": meta.decoder,
            },
            "model": self.model,
            "frames": [
                {"index": i, "frame_index": fi, "time_s": round(t, 3), **s.to_dict()}
                for i, (fi, t, s) in enumerate(zip(self.video.indices, self.video.timestamps, self.scores))
            ],
            "verdict": self.verdict.to_dict(),
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
        }


def analyze_video(
    lm: LoadedModel, path, num_frames: int = 16, limits: VideoLimits = VideoLimits(), batch_size: int | None = None
) -> Analysis:
    """Sample `num_frames` frames, score them in batched passes, and decide the video.

    Raises core.video.VideoError (with a human message) for any file we cannot use.

    >>> analyze_video(lm, "clip.mp4", num_frames=8).verdict.label  # doctest: +SKIP
    True
    """
    t0 = time.perf_counter()
    video = sample_frames(path, num_frames=num_frames, limits=limits)
    t1 = time.perf_counter()
    scores = score_frames(lm, video.frames, batch_size=batch_size)
    t2 = time.perf_counter()
    verdict = decide_video(scores)
    return Analysis(
        video=video, scores=scores, verdict=verdict, model=lm.version,
        timings={"decode": t1 - t0, "score": t2 - t1, "total": time.perf_counter() - t0},
    )
