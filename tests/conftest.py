"""Fixtures shared across test modules."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def real_shape_checkpoint(tmp_path_factory):
    """``real_shape_checkpoint(family)``: the folder of a checkpoint of that family at the vqwen models' true
    widths (vocab 151936, Qwen3-4B's 2560), reduced depth, random weights (seed 0), saved as a hub checkpoint
    is. Each family's is built and written once per session: at these widths that alone takes 10-20 s."""
    from training.tiny_models import (
        VQWEN_LLAVA_SHAPE,
        VQWEN_QFORMER_SHAPE,
        save_real_shape_checkpoint,
    )

    shapes = {"blip2": VQWEN_QFORMER_SHAPE, "llava": VQWEN_LLAVA_SHAPE}
    built: dict[str, Path] = {}

    def build(family: str) -> Path:
        if family not in built:
            folder = tmp_path_factory.mktemp(f"real-shape-{family}")
            save_real_shape_checkpoint(folder, family, shapes[family])
            built[family] = folder
        return built[family]

    return build
