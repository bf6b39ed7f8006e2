"""The processors' geometric steps run without torch: the same pixels as the processors themselves."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoImageProcessor
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from core.config import EMBEDDED_BLIP2, EMBEDDED_LLAVA, ModelSpec
from core.engine import load_model, prepare_pixels, score_frames
from core.resize import ResizePlan, plan_resize, resize_frames

# Portrait and landscape phone video, an odd size, a frame smaller than the model's input (upsampled).
SHAPES = [(640, 360), (360, 640), (517, 333), (90, 150)]


def noisy_frames(shape: tuple[int, int], n: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = rng.integers(0, 256, (n, shape[0] // 8 + 1, shape[1] // 8 + 1, 3), dtype=np.uint8)
    frames = smooth.repeat(8, axis=1).repeat(8, axis=2)[:, :shape[0], :shape[1]]
    return np.clip(frames.astype(np.int16) + rng.integers(-20, 21, frames.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("folder", [EMBEDDED_BLIP2, EMBEDDED_LLAVA], ids=["blip2", "llava"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{h}x{w}" for h, w in SHAPES])
def test_planned_resize_then_normalise_gives_the_processors_own_pixels(folder, shape):
    processor = AutoImageProcessor.from_pretrained(folder)
    plan = plan_resize(processor)
    assert plan is not None
    frames = noisy_frames(shape)
    whole = processor(images=list(frames), return_tensors="pt")["pixel_values"]
    resized = resize_frames(plan, frames)
    assert resized.dtype == np.uint8 and resized.shape == tuple(whole.shape)
    rest = processor(images=list(resized), do_resize=False, do_center_crop=False, return_tensors="pt")
    assert torch.equal(rest["pixel_values"], whole)


def test_a_model_scores_resized_frames_as_it_scores_decoded_ones():
    lm = load_model(ModelSpec(str(EMBEDDED_BLIP2)))
    frames = noisy_frames((640, 360), n=4, seed=3)
    resized = resize_frames(plan_resize(lm.processor.image_processor), frames)
    assert torch.equal(prepare_pixels(lm, resized, resized=True), prepare_pixels(lm, frames))
    assert score_frames(lm, resized, resized=True) == score_frames(lm, frames)


def test_what_a_plan_cannot_give_exactly_gets_no_plan():
    assert plan_resize(object()) is None
    padded = CLIPImageProcessorPil(size={"shortest_edge": 100}, crop_size={"height": 200, "width": 200})
    assert plan_resize(padded) is None  # the crop is larger than the resized frame: the processor pads
    no_resize = CLIPImageProcessorPil(do_resize=False)
    assert plan_resize(no_resize) is None


def test_frames_that_are_not_rgb_uint8_are_refused():
    plan = ResizePlan((224, 224), None, 3, None)
    with pytest.raises(ValueError, match="uint8"):
        resize_frames(plan, np.zeros((1, 8, 8, 2), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        resize_frames(plan, np.zeros((1, 8, 8, 3), np.float32))


def test_resizing_imports_neither_torch_nor_transformers():
    code = ("import sys, numpy as np; from core.resize import ResizePlan, resize_frames; "
            "resize_frames(ResizePlan(None, 168, 3, (168, 168)), np.zeros((2, 64, 48, 3), np.uint8)); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
