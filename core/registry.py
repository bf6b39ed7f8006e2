"""Which models the app can offer, the one it serves by default, and the one that is loaded now.

Models load lazily and one at a time: choosing another releases the previous one first, because a Space
holds one 4B model in memory, not two. Every choice is named by a key that means nothing outside this app —
a folder's path relative to the repo (or its own name), or a hub id — so no server path reaches a page or
an API caller. Only the keys :meth:`ModelRegistry.choices` lists load on anyone's request; any other folder
or hub id is refused before it is looked at (no file is touched, nothing is fetched), unless the caller
passes ``allow_unlisted=True``, which the app does for a reviewer's account only.

    settings, note = choose_default_model(load_settings())   # on a Space: the hub model where a GPU is
    registry = ModelRegistry(settings, note=note)
    registry.choices()            # [("tiny-vqwen-qformer (embedded)", "models/tiny-vqwen-qformer"), …]
    lm = registry.get()           # loads the default on first use
    lm = registry.get("alpharomercoma/vqwen3-4b")
    registry.get("/etc")          # ModelNotOfferedError, without a look at /etc
"""

from __future__ import annotations

import gc
import logging
import os
import threading
from dataclasses import replace
from pathlib import Path

import torch

from core.config import EMBEDDED_BLIP2, EMBEDDED_LLAVA, ModelSpec, Settings
from core.engine import LoadedModel, ModelLoadError, find_model_family, load_model
from core.identity import name_folder

log = logging.getLogger(__name__)


class ModelNotOfferedError(ModelLoadError):
    """A model key that is not on the selector's list, asked for without the right to load any other."""


def hub_reachable(repo_id: str, timeout_s: float = 3.0) -> bool:
    """Whether the hub answers for `repo_id` within `timeout_s` (False at once in offline mode).

    >>> hub_reachable("alpharomercoma/vqwen-qformer-tiktok", timeout_s=1.0)  # doctest: +SKIP
    False
    """
    from huggingface_hub import HfApi, constants

    offline = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    if constants.HF_HUB_OFFLINE or (offline or "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    try:
        HfApi().model_info(repo_id, timeout=timeout_s)
    except Exception as err:  # any failure (no route, DNS, timeout, 401, 404) means: not from here
        log.info("the hub does not answer for %s: %s", repo_id, type(err).__name__)
        return False
    return True


def choose_default_model(settings: Settings, gpu: bool | None = None) -> tuple[Settings, str | None]:
    """The settings with the model the app serves by default, and a note for the status line when it is
    not the one a Space would want.

    On a Space (``settings.on_space``) with no model named (``SLUDGELENS_MODEL``), the default is
    ``settings.space_model`` where a GPU is present and the hub answers; otherwise the embedded model,
    with the reason. Anywhere else the settings come back unchanged. The hub is asked only when a GPU is
    there, and for ``settings.hub_timeout_s`` at most. ``gpu`` says whether a GPU is present (default:
    ``torch.cuda.is_available()``).

    >>> from core.config import load_settings
    >>> choose_default_model(load_settings({}))[1] is None
    True
    >>> choose_default_model(load_settings({"SPACE_ID": "me/sludgelens"}))[1]  # doctest: +SKIP
    'Running the embedded model: no GPU here.'
    """
    if not settings.on_space or settings.model_named or not settings.space_model:
        return settings, None
    if not (torch.cuda.is_available() if gpu is None else gpu):
        return settings, "Running the embedded model: no GPU here."
    if not hub_reachable(settings.space_model, settings.hub_timeout_s):
        return settings, "Running the embedded model: the hub is not reachable."
    return replace(settings, model=ModelSpec(settings.space_model)), None


def find_checkpoints(folders) -> list[Path]:
    """Local checkpoint folders (any folder holding a config.json) under the given folders, newest first."""
    found = []
    for folder in folders:
        folder = Path(folder)
        if folder.is_dir():
            found += [p.parent for p in folder.glob("*/config.json")] + [p.parent for p in folder.glob("*/*/config.json")]
    return sorted(set(found), key=lambda p: p.stat().st_mtime, reverse=True)


def name_source(source: str) -> str:
    """The key a model source is offered under: a folder's repo-relative path or name, else the hub id.

    >>> name_source("alpharomercoma/vqwen3-4b")
    'alpharomercoma/vqwen3-4b'
    """
    return name_folder(source) if Path(source).is_dir() else source


class ModelRegistry:
    """Lists embedded, fine-tuned and hub models; keeps exactly one loaded.

    ``note`` says why the default is not the model a Space would serve (see :func:`choose_default_model`).
    """

    def __init__(self, settings: Settings, note: str | None = None):
        self.settings = settings
        self.note = note
        self._loaded: LoadedModel | None = None
        self._lock = threading.Lock()

    def list_sources(self) -> list[tuple[str, str, str]]:
        """(label, key, source) of every model on offer: embedded, the configured default, fine-tuned, hub."""
        out = [(f"{p.name} (embedded)", str(p)) for p in (EMBEDDED_BLIP2, EMBEDDED_LLAVA) if (p / "config.json").exists()]
        default = self.settings.model.source
        if name_source(default) not in [name_source(s) for _, s in out]:
            out.insert(0, (f"{name_source(default)} (configured)", default))
        out += [(f"{p.name} (fine-tuned)", str(p)) for p in find_checkpoints(self.settings.checkpoint_dirs)]
        out += [(f"{h} (hub)", h) for h in self.settings.hub_models if h not in [s for _, s in out]]
        return [(label, name_source(source), source) for label, source in out]

    def choices(self) -> list[tuple[str, str]]:
        """(label, key) pairs for a model selector: embedded first, then fine-tuned folders, then hub ids."""
        return [(label, key) for label, key, _ in self.list_sources()]

    @property
    def default_key(self) -> str:
        """The selector's key of the configured default model."""
        return name_source(self.settings.model.source)

    @property
    def current(self) -> LoadedModel | None:
        return self._loaded

    def offers(self, key: str | None) -> bool:
        """Whether anyone may load `key`: empty (the default) or a key of :meth:`choices`. A plain
        comparison of strings: `key` is never looked up as a path.

        >>> from core.config import load_settings
        >>> ModelRegistry(load_settings({})).offers("/etc")
        False
        """
        return not key or key in [listed for _, listed, _ in self.list_sources()]

    def find_spec(self, key: str | None = None, revision: str | None = None,
                  allow_unlisted: bool = False) -> ModelSpec:
        """The spec behind a selector key (default: the configured model).

        A key that is not on the list is refused with :class:`ModelNotOfferedError` before anything looks
        at it; with ``allow_unlisted`` (a reviewer's request) it is taken as a folder or hub id as given.

        >>> from core.config import load_settings
        >>> ModelRegistry(load_settings({})).find_spec("models/tiny-vqwen-llava").source.endswith("tiny-vqwen-llava")
        True
        """
        if not key:
            return self.settings.model
        sources = self.list_sources()
        for _, listed, source in sources:
            if key == listed:
                return ModelSpec(source, revision or (self.settings.model.revision if source == self.settings.model.source else None))
        if not allow_unlisted:
            shown = key if len(key) <= 80 else key[:80] + "…"
            raise ModelNotOfferedError(
                f"{shown!r} is not one of the models this app offers ({', '.join(k for _, k, _ in sources)}); "
                "loading any other folder or hub id needs a reviewer's account.")
        return ModelSpec(key, revision)

    def get(self, key: str | None = None, revision: str | None = None, allow_unlisted: bool = False) -> LoadedModel:
        """The loaded model for a selector key (default: the configured one), loading it if needed.

        A key that is not on the list is refused (:class:`ModelNotOfferedError`) unless ``allow_unlisted``.
        The new model's config is read first, so a source that is no model we serve (a hub id on a machine
        with no network, a folder without a checkpoint, another class) is refused with
        core.engine.ModelLoadError while the loaded model stays. Otherwise the loaded model is released
        before the new one loads; if that load still fails, the previous model is loaded back and the error
        raised.
        """
        spec = self.find_spec(key, revision, allow_unlisted)
        with self._lock:
            if self._loaded is not None and self._loaded.spec == spec:
                return self._loaded
            find_model_family(spec)
            previous = self._loaded.spec if self._loaded is not None else None
            self.release()
            try:
                self._loaded = load_model(spec, self.settings.engine)
            except ModelLoadError:
                if previous is not None:
                    self._loaded = load_model(previous, self.settings.engine)
                raise
            return self._loaded

    def release(self) -> None:
        """Drop the loaded model and give its memory back before anything else loads."""
        self._loaded = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

