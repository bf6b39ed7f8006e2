"""Where exports and snapshots go: a local folder, or a Hugging Face Hub dataset repository.

A target string is read as:

- ``hf://datasets/owner/name``                 a Hub dataset repo;
- ``file:///abs/path``, or any existing path,  a local folder;
  or one starting with ``/``, ``./``, ``../``, ``~``
- a bare ``owner/name``                        a Hub dataset repo;
- anything else                                a local folder.

The Hub side is a thin call to ``huggingface_hub`` (token from the argument or the usual HF_TOKEN); the
local side does the same thing with plain file copies, which is how it is tested offline.

    parse_target("hf://datasets/me/sludge-labels")   ('hub', 'me/sludge-labels')
    parse_target("/mnt/backups")                      ('local', PosixPath('/mnt/backups'))
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from annotations.schema import InvalidLabelError

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def parse_target(target: str | Path) -> tuple[str, str | Path]:
    """("hub", repo_id) or ("local", Path) for a target string; see the module docstring for the rules.

    >>> parse_target("hf://datasets/me/labels"), parse_target("./backups")
    (('hub', 'me/labels'), ('local', PosixPath('backups')))
    """
    if isinstance(target, Path):
        return "local", target
    text = str(target).strip()
    if not text:
        raise InvalidLabelError("the target is empty: give a folder or a Hub dataset repo (owner/name)")
    if text.startswith("hf://"):
        repo = text.removeprefix("hf://").removeprefix("datasets/").strip("/")
        if not _REPO_ID.match(repo):
            raise InvalidLabelError(f"{text!r} is not hf://datasets/owner/name")
        return "hub", repo
    if text.startswith("file://"):
        return "local", Path(text.removeprefix("file://"))
    path = Path(text).expanduser()
    if text.startswith(("/", "./", "../", "~")) or path.exists() or not _REPO_ID.match(text):
        return "local", path
    return "hub", text


def copy_tree(source: Path, destination: Path) -> Path:
    """Copy a folder's files under ``destination`` (merging, overwriting same-named files); returns it.

    >>> copy_tree(Path("data/exports/run1"), Path("/mnt/share/run1"))  # doctest: +SKIP
    PosixPath('/mnt/share/run1')
    """
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, destination, dirs_exist_ok=True)
    return destination


def upload_folder_to_hub(folder: Path, repo_id: str, path_in_repo: str, token: str | None = None,
                         commit_message: str = "Upload from sludgelens") -> str:
    """Upload a folder into a Hub dataset repo (created private if missing); returns the commit URL.

    >>> upload_folder_to_hub(Path("data/exports/run1"), "me/labels", "exports/run1")  # doctest: +SKIP
    'https://huggingface.co/datasets/me/labels/commit/…'
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=True, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), path_in_repo=path_in_repo, repo_id=repo_id,
                             repo_type="dataset", commit_message=commit_message)
    return str(getattr(info, "commit_url", info))


def upload_file_to_hub(path: Path, repo_id: str, path_in_repo: str, token: str | None = None,
                       commit_message: str = "Upload from sludgelens") -> str:
    """Upload one file into a Hub dataset repo (created private if missing); returns the commit URL.

    >>> upload_file_to_hub(Path("snap.db"), "me/labels", "snapshots/snap.db")  # doctest: +SKIP
    'https://huggingface.co/datasets/me/labels/commit/…'
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=True, exist_ok=True)
    info = api.upload_file(path_or_fileobj=str(path), path_in_repo=path_in_repo, repo_id=repo_id,
                           repo_type="dataset", commit_message=commit_message)
    return str(getattr(info, "commit_url", info))


def download_from_hub(repo_id: str, local_dir: Path, allow_patterns: list[str], token: str | None = None) -> Path:
    """Mirror the matching files of a Hub dataset repo into ``local_dir``; returns it.

    >>> download_from_hub("me/labels", Path("/tmp/mirror"), ["snapshots/*"])  # doctest: +SKIP
    PosixPath('/tmp/mirror')
    """
    from huggingface_hub import snapshot_download

    snapshot_download(repo_id=repo_id, repo_type="dataset", local_dir=str(local_dir), allow_patterns=allow_patterns,
                      token=token)
    return local_dir
