"""The model selector's registry: keys without server paths, one model loaded, the old one released first, nothing
off the list loaded on anyone's say-so, and the default a Space serves."""

from __future__ import annotations

import gc
import shutil
import sys
import weakref
from dataclasses import replace

import pytest

from core.config import EMBEDDED_LLAVA, REPO_ROOT, default_model_id, load_settings
from core.engine import ModelLoadError
from core.registry import ModelNotOfferedError, ModelRegistry, choose_default_model


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
        registry.get(str(tmp_path / "empty"), allow_unlisted=True)
    assert str(tmp_path) not in str(err.value)
    assert registry.current is loaded


# Python's audit events of everything that opens a file, lists a folder or reaches the network.
WATCHED = ("open", "os.listdir", "os.scandir", "os.walk", "socket.connect", "socket.getaddrinfo")
_audit = {"armed": False, "seen": []}


def _watch(event, args):
    if _audit["armed"] and event in WATCHED:
        _audit["seen"].append((event, repr(args)))


def test_a_key_not_on_the_list_is_refused_before_anything_looks_at_it(registry, tmp_path):
    loaded = registry.get()
    hidden = tmp_path / "hidden"
    shutil.copytree(EMBEDDED_LLAVA, hidden)  # a real model, but not one the registry lists
    keys = [str(hidden), str(tmp_path / "missing"), "/etc", "someone/some-model", "../../etc/passwd"]
    sys.addaudithook(_watch)  # an audit hook cannot be removed; it records only while armed
    _audit["armed"], _audit["seen"] = True, []
    messages = []
    try:
        for key in keys:
            assert not registry.offers(key)
            with pytest.raises(ModelNotOfferedError, match="needs a reviewer's account") as err:
                registry.get(key)
            messages.append(str(err.value).replace(repr(key), "KEY"))
    finally:
        _audit["armed"] = False
    touched = [(event, args) for event, args in _audit["seen"]
               if event.startswith("socket.") or any(key in args for key in keys)]
    assert touched == []
    # An existing folder, a missing one and a server path all get the same answer: it tells nothing.
    assert len(set(messages)) == 1 and "models/tiny-vqwen-qformer" in messages[0]
    assert registry.current is loaded
    # With a reviewer's say-so (the caller's allow_unlisted) the folder loads like any other.
    assert registry.get(str(hidden), allow_unlisted=True).identity.source == "hidden"


def test_on_a_space_without_a_gpu_the_embedded_model_serves_with_a_note(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = load_settings({"SPACE_ID": "me/sludgelens"})
    chosen, note = choose_default_model(settings)
    assert note == "Running the embedded model: no GPU here." and chosen.model == settings.model
    # With a GPU but no route to the hub (here: offline), the embedded model serves too, and says why.
    chosen, note = choose_default_model(settings, gpu=True)
    assert note == "Running the embedded model: the hub is not reachable." and chosen.model == settings.model
    # Off a Space, or with a model named, nothing is checked and nothing is said.
    assert choose_default_model(load_settings({}), gpu=True) == (load_settings({}), None)
    named = load_settings({"SPACE_ID": "me/sludgelens", "SLUDGELENS_MODEL": str(EMBEDDED_LLAVA)})
    assert choose_default_model(named, gpu=True) == (named, None)


def test_the_default_model_version_is_a_setting_not_the_newest_in_the_store():
    assert default_model_id(load_settings({"SLUDGELENS_METRICS_MODEL": "lora-1@abc"})) == "lora-1@abc"
    assert default_model_id(load_settings({})) == ModelRegistry(load_settings({})).get().identity.id
