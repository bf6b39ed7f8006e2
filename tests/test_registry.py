"""The model selector's registry: keys without server paths, one model loaded, the old one released first."""

from __future__ import annotations

import gc
import shutil
import weakref
from dataclasses import replace

import pytest

from core.config import EMBEDDED_LLAVA, REPO_ROOT, load_settings
from core.engine import ModelLoadError
from core.registry import ModelRegistry


@pytest.fixture
def registry(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(EMBEDDED_LLAVA, checkpoints / "lora-1")
    return ModelRegistry(replace(load_settings({}), checkpoint_dirs=(checkpoints,)))


def test_choices_are_named_without_server_paths(registry, tmp_path):
    choices = registry.choices()
    keys = [key for _, key in choices]
    assert keys[:2] == ["models/tiny-vqwen-qformer", "models/tiny-vqwen-llava"]
    assert "lora-1" in keys and "alpharomercoma/vqwen-qformer-tiktok" in keys
    assert not [key for key in keys if key.startswith("/") or str(tmp_path) in key or str(REPO_ROOT) in key]
    assert registry.default_key == "models/tiny-vqwen-qformer"


def test_one_model_is_loaded_and_the_previous_one_is_released_before_the_next_loads(registry, monkeypatch):
    first = registry.get()
    assert first.identity.source == "models/tiny-vqwen-qformer" and registry.get("models/tiny-vqwen-qformer") is first
    gone = weakref.ref(first.model)
    seen_while_loading = []

    import core.registry as module

    real_load = module.load_model

    def load_and_look(spec, config):
        gc.collect()
        seen_while_loading.append(gone() is None)
        return real_load(spec, config)

    monkeypatch.setattr(module, "load_model", load_and_look)
    del first
    second = registry.get("lora-1")
    assert seen_while_loading == [True], "the old model was still alive while the next one loaded"
    assert second.identity.source == "lora-1" and registry.current is second


def test_a_source_that_is_no_model_is_refused_and_the_loaded_model_stays(registry, tmp_path):
    loaded = registry.get()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="Cannot load empty: no usable folder") as err:
        registry.get(str(tmp_path / "empty"))
    assert str(tmp_path) not in str(err.value)
    assert registry.current is loaded
