"""The objects the UI calls into, built once from settings."""

from __future__ import annotations

import atexit
import logging
from dataclasses import dataclass
from pathlib import Path

from annotations import (
    SnapshotScheduler,
    Store,
    StoreError,
    open_store,
    restore_store,
    schedule_snapshots,
)
from annotations.accounts import register_accounts
from core.config import Settings, default_model_id
from core.registry import ModelRegistry, choose_default_model
from core.video import start_decord_worker

log = logging.getLogger(__name__)

# The one-click example clips of the Analyze tab, in the order shown, as committed in the examples folder
# (settings.examples_dir). `python -m training.synthetic examples` renders them again.
EXAMPLE_CLIPS = ("single_stream.mp4", "vertical_split.mp4", "side_by_side.mp4", "picture_in_picture.mp4",
                 "layout_change.mp4")


@dataclass
class Services:
    settings: Settings
    models: ModelRegistry
    db: Store
    examples: list[Path]
    snapshots: SnapshotScheduler | None = None
    # The model version the Review tab, /metrics, exports and the labelling queue show when none is picked
    # (core.config.default_model_id): a setting, never the newest model somebody analyzed with.
    default_model_id: str = ""


def build_services(settings: Settings) -> Services:
    """Choose the default model (on a Space: the hub model where a GPU is, else the embedded one with a note),
    open the store (restoring the newest snapshot first when the file is missing and a target is set),
    register the configured accounts, find the example clips, start the decord child (when decord is the
    decoder) and the snapshots.

    Loads no model: models load on first use.
    """
    settings, note = choose_default_model(settings)
    if note:
        log.warning("%s", note)
    if settings.snapshot_target and not Path(settings.db_path).exists():
        try:
            restored = restore_store(settings.snapshot_target, settings.db_path, settings.media_dir)
            log.info("restored the store from %s", restored)
        except (OSError, StoreError) as err:
            # A Space whose snapshot repo is new or unreachable still starts, on an empty store.
            log.warning("no snapshot restored from %s: %s", settings.snapshot_target, err)
    db = open_store(settings.db_path, settings.media_dir)
    register_accounts(db, settings.auth)
    examples = find_examples(settings.examples_dir)
    if settings.video.decoder == "decord":
        start_decord_worker()  # its ~0.5 s start-up is paid now, not by the first upload
    snapshots = None
    if settings.snapshot_target:
        snapshots = schedule_snapshots(settings.db_path, settings.snapshot_target, settings.snapshot_every_s,
                                       media_dir=settings.media_dir, keep=settings.snapshot_keep)
        # On the way down (app.py turns SIGTERM, how a Space is stopped, into a normal exit), the labels since
        # the last scheduled snapshot go out too.
        atexit.register(snapshots.stop, final_snapshot=True)
    return Services(settings=settings, models=ModelRegistry(settings, note=note), db=db, examples=examples,
                    snapshots=snapshots, default_model_id=default_model_id(settings))


def find_examples(folder: Path) -> list[Path]:
    """The example clips present in `folder`, in the order of EXAMPLE_CLIPS; a missing one is logged and left
    out (the app still starts, with fewer examples).

    >>> find_examples(Path("no/such/folder"))
    []
    """
    found = [folder / name for name in EXAMPLE_CLIPS if (folder / name).is_file()]
    if len(found) < len(EXAMPLE_CLIPS):
        missing = [name for name in EXAMPLE_CLIPS if not (folder / name).is_file()]
        log.warning("example clips missing from %s: %s (`python -m training.synthetic examples --out %s` "
                    "renders them)", folder, ", ".join(missing), folder)
    return found
