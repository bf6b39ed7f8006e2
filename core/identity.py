"""Who a loaded model is: one identity, computed once when the model loads.

The identity names a model version everywhere it appears — the store's ``models`` table and every
prediction row, the app's status line and selector, the API's ``model`` field — so it must be stable across
machines and must never reveal where the server keeps its files:

* a hub model is ``owner/name@revision`` (or the bare id when no revision was asked for);
* a folder inside the repository is named by its path relative to the repository
  (``models/tiny-vqwen-qformer``), a folder elsewhere by its own name, and its revision is a digest of its
  weights, so a checkpoint retrained in place becomes a new version.

Example::

    identity = identify_model(ModelSpec("models/tiny-vqwen-qformer"))
    identity.id      # 'models/tiny-vqwen-qformer@3fa9c2d1e0b4'
    identity.name    # 'tiny-vqwen-qformer'
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from core.config import REPO_ROOT, ModelSpec

# Weight files up to this size are hashed whole; bigger ones (a 4B model is ~8 GB) by name, size and their
# first MiB (the safetensors header), which is what changes when a checkpoint is rewritten.
FULL_HASH_BYTES = 256 * 2**20
# Records written beside a checkpoint's weights about how it was made and what it measured (the training
# run, the real-footage check). Rewriting them does not change a prediction, so they are not part of the
# version: a store's predictions stay current, and a resumed ingest skips what it has done.
TRAINING_RECORD = "training.json"
REAL_FOOTAGE_RECORD = "real_footage.json"
RECORD_FILES = frozenset({TRAINING_RECORD, REAL_FOOTAGE_RECORD})


@dataclass(frozen=True)
class ModelIdentity:
    """The one name of a model version: what the store keys predictions by and what people are shown."""

    id: str  # "source@revision": the store's model version id
    source: str  # hub id, repo-relative folder, or a folder's own name; never an absolute path
    revision: str | None  # hub revision asked for, or the weight digest of a folder
    name: str  # short human name: the hub id, or the folder's name

    @property
    def short(self) -> str:
        """The name with the first 8 characters of the revision, for a status line.

        >>> ModelIdentity("models/tiny@3fa9c2d1e0b4", "models/tiny", "3fa9c2d1e0b4", "tiny").short
        'tiny@3fa9c2d1'
        """
        return f"{self.name}@{self.revision[:8]}" if self.revision else self.name


def name_version(source: str, revision: str | None = None) -> str:
    """The id a model version is stored under: "source@revision", or the source alone.

    >>> name_version("alpharomercoma/vqwen3-4b", "abc123")
    'alpharomercoma/vqwen3-4b@abc123'
    >>> name_version("alpharomercoma/vqwen3-4b")
    'alpharomercoma/vqwen3-4b'
    """
    return f"{source}@{revision}" if revision else source


def name_folder(folder: str | Path) -> str:
    """How a local checkpoint folder is named outside this machine: relative to the repo, else its own name.

    >>> name_folder(REPO_ROOT / "models" / "tiny-vqwen-qformer")
    'models/tiny-vqwen-qformer'
    >>> name_folder("/srv/checkpoints/lora-7")
    'lora-7'
    """
    folder = Path(folder).resolve()
    return folder.relative_to(REPO_ROOT).as_posix() if folder.is_relative_to(REPO_ROOT) else folder.name


def hash_weights(folder: str | Path) -> str:
    """12 hex digits identifying the model in a checkpoint folder: everything that decides its predictions
    (configs, tokenizer, chat template, weights), not the records beside them (RECORD_FILES).

    >>> len(hash_weights(REPO_ROOT / "models" / "tiny-vqwen-qformer"))
    12
    """
    digest = hashlib.sha256()
    folder = Path(folder)
    files = [path for pattern in ("*.json", "*.jinja", "*.safetensors", "*.bin")
             for path in sorted(folder.glob(pattern))]
    for path in (p for p in files if p.name not in RECORD_FILES):
        digest.update(path.name.encode())
        size = path.stat().st_size
        digest.update(str(size).encode())
        with open(path, "rb") as fh:
            if size <= FULL_HASH_BYTES:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
            else:
                digest.update(fh.read(1 << 20))
    return digest.hexdigest()[:12]


def identify_model(spec: ModelSpec) -> ModelIdentity:
    """The identity of the model a spec points at; a folder's weights are hashed here, once per load.

    >>> identify_model(ModelSpec("alpharomercoma/vqwen3-4b", "main")).id
    'alpharomercoma/vqwen3-4b@main'
    >>> identify_model(ModelSpec(str(REPO_ROOT / "models" / "tiny-vqwen-qformer"))).name
    'tiny-vqwen-qformer'
    """
    if not spec.is_local:
        return ModelIdentity(name_version(spec.source, spec.revision), spec.source, spec.revision, spec.source)
    source = name_folder(spec.source)
    revision = spec.revision or hash_weights(spec.source)
    return ModelIdentity(name_version(source, revision), source, revision, Path(spec.source).resolve().name)
