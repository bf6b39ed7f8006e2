"""Which models the app can offer, and the one that is loaded now.

Models load lazily and one at a time: choosing another frees the previous one, because a Space holds
one 4B model in memory, not two.

    registry = ModelRegistry(load_settings())
    registry.choices()            # [("tiny-vqwen-qformer (embedded)", "/…/models/tiny-vqwen-qformer"), …]
    lm = registry.get()           # loads the default on first use
    lm = registry.get("alpharomercoma/vqwen3-4b")
"""

from __future__ import annotations

import threading
from pathlib import Path

from core.config import EMBEDDED_BLIP2, EMBEDDED_LLAVA, ModelSpec, Settings
from core.engine import LoadedModel, load_model


def find_checkpoints(folders) -> list[Path]:
    """Local checkpoint folders (any folder holding a config.json) under the given folders, newest first."""
    found = []
    for folder in folders:
        folder = Path(folder)
        if folder.is_dir():
            found += [p.parent for p in folder.glob("*/config.json")] + [p.parent for p in folder.glob("*/*/config.json")]
    return sorted(set(found), key=lambda p: p.stat().st_mtime, reverse=True)


class ModelRegistry:
    """Lists embedded, fine-tuned and hub models; keeps exactly one loaded."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._loaded: LoadedModel | None = None
        self._lock = threading.Lock()

    def choices(self) -> list[tuple[str, str]]:
        """(label, source) pairs for a model selector: embedded first, then fine-tuned folders, then hub ids."""
        out = [(f"{p.name} (embedded)", str(p)) for p in (EMBEDDED_BLIP2, EMBEDDED_LLAVA) if (p / "config.json").exists()]
        default = self.settings.model.source
        if default not in [s for _, s in out]:
            out.insert(0, (f"{default} (configured)", default))
        out += [(f"{p.name} (fine-tuned)", str(p)) for p in find_checkpoints(self.settings.checkpoint_dirs)]
        out += [(f"{h} (hub)", h) for h in self.settings.hub_models if h not in [s for _, s in out]]
        return out

    @property
    def current(self) -> LoadedModel | None:
        return self._loaded

    def get(self, source: str | None = None, revision: str | None = None) -> LoadedModel:
        """The loaded model for `source` (default: the configured one), loading it if needed.

        Raises core.engine.ModelLoadError with a readable message when it cannot be loaded (e.g. a hub id
        on a machine with no network); the previously loaded model stays loaded in that case.
        """
        spec = ModelSpec(source, revision) if source else self.settings.model
        with self._lock:
            if self._loaded is not None and self._loaded.spec == spec:
                return self._loaded
            lm = load_model(spec, self.settings.engine)
            self._loaded = lm
            return lm
