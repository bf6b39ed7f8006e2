"""Which models the app can offer, and the one that is loaded now.

Models load lazily and one at a time: choosing another releases the previous one first, because a Space
holds one 4B model in memory, not two. Every choice is named by a key that means nothing outside this app —
a folder's path relative to the repo (or its own name), or a hub id — so no server path reaches a page or
an API caller.

    registry = ModelRegistry(load_settings())
    registry.choices()            # [("tiny-vqwen-qformer (embedded)", "models/tiny-vqwen-qformer"), …]
    lm = registry.get()           # loads the default on first use
    lm = registry.get("alpharomercoma/vqwen3-4b")
"""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import torch

from core.config import EMBEDDED_BLIP2, EMBEDDED_LLAVA, ModelSpec, Settings
from core.engine import LoadedModel, ModelLoadError, find_model_family, load_model
from core.identity import name_folder


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
    """Lists embedded, fine-tuned and hub models; keeps exactly one loaded."""

    def __init__(self, settings: Settings):
        self.settings = settings
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

    def find_spec(self, key: str | None = None, revision: str | None = None) -> ModelSpec:
        """The spec behind a selector key (default: the configured model); any other value is taken as a
        folder or hub id as given."""
        if not key:
            return self.settings.model
        for _, listed, source in self.list_sources():
            if key in (listed, source):
                return ModelSpec(source, revision or (self.settings.model.revision if source == self.settings.model.source else None))
        return ModelSpec(key, revision)

    def get(self, key: str | None = None, revision: str | None = None) -> LoadedModel:
        """The loaded model for a selector key (default: the configured one), loading it if needed.

        The new model's config is read first, so a source that is no model we serve (a hub id on a machine
        with no network, a folder without a checkpoint, another class) is refused with
        core.engine.ModelLoadError while the loaded model stays. Otherwise the loaded model is released before the new one loads; if that load still
        fails, the previous model is loaded back and the error raised.
        """
        spec = self.find_spec(key, revision)
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

