"""A PIL-backed image processor's geometric steps (resize, centre crop), runnable without torch.

Preparing a frame for the model on a CPU is a resize (the costly part: a bicubic resample of the whole
decoded frame) and then a rescale and normalisation (cheap). A process that only decodes, such as an ingest's
decode worker, can do the resize, so that the model's process, the narrow step on a CPU, only normalises; the
resized frames are also a fraction of the decoded frames' bytes to hand across.

Such a process must stay light: importing transformers also imports torch, which costs a decode worker
seconds of CPU and hundreds of MB at start. So the processor's steps are read once, where transformers is
loaded, into a :class:`ResizePlan` of plain numbers (:func:`plan_resize`), and :func:`resize_frames` applies
it with PIL alone, as the processor's PIL backend does (``transformers.image_transforms.resize`` and
``center_crop``): the same PIL call on the same uint8 pixels, so the pixels are identical, which
``tests/test_resize.py`` checks against the processors themselves. What the plan cannot express exactly
(a torch-backed processor, a longest edge, padding, a crop larger than the resized frame) gets no plan, and
the model's process prepares those frames whole.

    plan = plan_resize(lm.processor.image_processor)      # in the model's process
    resized = resize_frames(plan, frames)                 # anywhere: (16, 3, 224, 224) uint8
    score_frames(lm, resized, resized=True)               # rescale and normalise only
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class ResizePlan:
    """An image processor's resize and centre crop, as numbers a process without transformers can apply."""

    # The resized frame's (height, width) when the processor resizes to a fixed size; None when it matches
    # the shortest edge instead.
    size: tuple[int, int] | None
    # The shortest edge's length after the resize (the other edge keeps the aspect ratio, truncated as the
    # processor truncates it); None with a fixed size.
    shortest_edge: int | None
    # The PIL resampling filter (3: bicubic, as BLIP-2's and CLIP's processors use).
    resample: int
    # The centre crop's (height, width) after the resize; None when the processor does not crop.
    crop: tuple[int, int] | None

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of a frame of this size after the resize, before any crop.

        >>> ResizePlan(None, 168, 3, (168, 168)).output_size(640, 360)
        (298, 168)
        """
        if self.size is not None:
            return self.size
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)


def plan_resize(image_processor) -> ResizePlan | None:
    """The plan of a PIL-backed processor's resize and crop, or None where a plan would not give its pixels
    exactly (a torch-backed processor, a longest edge or maximum size, padding, no resize at all).

    >>> from transformers import AutoProcessor  # doctest: +SKIP
    >>> plan_resize(AutoProcessor.from_pretrained("models/tiny-vqwen-qformer").image_processor)  # doctest: +SKIP
    ResizePlan(size=(224, 224), shortest_edge=None, resample=3, crop=None)
    """
    from transformers.image_processing_backends import PilBackend

    if not isinstance(image_processor, PilBackend) or not getattr(image_processor, "do_resize", False):
        return None
    if getattr(image_processor, "do_pad", False):
        return None
    size = dict(image_processor.size or {})
    if set(size) == {"height", "width"}:
        fixed, edge = (int(size["height"]), int(size["width"])), None
    elif set(size) == {"shortest_edge"}:
        fixed, edge = None, int(size["shortest_edge"])
    else:
        return None
    crop = None
    if getattr(image_processor, "do_center_crop", False):
        crop_size = dict(image_processor.crop_size or {})
        if set(crop_size) != {"height", "width"}:
            return None
        crop = (int(crop_size["height"]), int(crop_size["width"]))
        smallest = fixed if fixed is not None else (edge, edge)
        if crop[0] > smallest[0] or crop[1] > smallest[1]:
            return None  # the processor would pad: not planned
    resample = image_processor.resample
    return ResizePlan(size=fixed, shortest_edge=edge, resample=int(resample if resample is not None else 2), crop=crop)


def resize_frames(plan: ResizePlan, frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Frames (N, H, W, 3) uint8 -> (N, 3, h, w) uint8 at the model's input size, as the plan's processor
    resizes and crops them (``core.engine.score_frames(..., resized=True)`` finishes them).

    >>> resize_frames(ResizePlan((224, 224), None, 3, None), np.zeros((2, 640, 360, 3), np.uint8)).shape
    (2, 3, 224, 224)
    """
    from PIL import Image

    out = []
    for frame in frames:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
            raise ValueError(f"frames must be (H, W, 3) uint8, not {frame.dtype} {frame.shape}")
        height, width = plan.output_size(*frame.shape[:2])
        resized = np.asarray(Image.fromarray(frame).resize((width, height), resample=plan.resample))
        if plan.crop is not None:
            top, left = (height - plan.crop[0]) // 2, (width - plan.crop[1]) // 2
            resized = resized[top:top + plan.crop[0], left:left + plan.crop[1]]
        out.append(resized.transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(out))
