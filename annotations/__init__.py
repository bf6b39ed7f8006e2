"""The annotation store: labelers' corrections in one SQLite file, review, queue, metrics, exports, snapshots.

Every function takes an injected ``sqlite_utils.Database`` (as returned by :func:`open_store`) and is named
by what it does:

    db = open_store(settings.db_path, settings.media_dir)
    add_labeler(db, "ana", "labeler")
    video_id = add_video(db, "clip.mp4", "clip.mp4", {"fps": 30.0})
    frame_ids = add_frames(db, video_id, frames, timestamps, indices)
    register_model(db, "tiny@1", "models/tiny-vqwen-qformer", "1")
    record_predictions(db, "tiny@1", frame_ids, p_sludge, layout_scores)
    for frame in next_frames(db, "ana", "uncertain", n=10):
        correct_label(db, frame["frame_id"], "sludge", True, "ana", seen_revision=frame["revision"])
    compute_metrics(db, "tiny@1")
    export_training_set(db, "data/exports/run1")
    snapshot_store(settings.db_path, "/backups", media_dir=settings.media_dir)

The command line is ``python -m annotations --help``.

The app's use cases over the store are modules of their own, imported by name and not re-exported here:
``annotations.analyses`` (record an analysis, score stored frames, export a zip; these load the model
library), ``annotations.labeling`` (a labeler's pass through the queue), ``annotations.review`` (two model
versions on the holdout) and ``annotations.accounts`` (who may write labels). No name exported here may
share a submodule's name: importing the submodule would put the module in its place.
"""

from annotations.exports import (
    ExportConfig,
    collect_records,
    export_imagefolder,
    export_label_studio,
    export_training_set,
    has_export,
    push_export_to_hub,
    split_for_video,
    split_videos,
)
from annotations.imports import import_ground_truth, read_ground_truth_rows
from annotations.metrics import (
    card_metrics,
    compute_metrics,
    format_metrics_table,
    labeler_agreement,
    truth_labels,
    video_votes,
)
from annotations.queue import STRATEGIES, count_unlabeled, next_frames, release_frames
from annotations.schema import (
    RAW_GT,
    UPLOADS,
    InvalidLabelError,
    NotFoundError,
    PermissionDeniedError,
    StaleRevisionError,
    Store,
    StoreConfig,
    StoreError,
    connect_store,
    open_store,
    write_transaction,
)
from annotations.snapshots import (
    SNAPSHOT_PREFIX,
    SnapshotScheduler,
    backup_store,
    check_integrity,
    list_snapshots,
    restore_latest_snapshot,
    restore_store,
    schedule_snapshots,
    snapshot_store,
)
from annotations.writes import (
    LabelEvent,
    Review,
    add_analyzed_video,
    add_frames,
    add_labeler,
    add_video,
    apply_range,
    correct_label,
    current_labels,
    find_media_dir,
    find_videos,
    frame_image_path,
    frame_revision,
    frames_scored_by,
    get_frame,
    get_video,
    has_model,
    label_history,
    latest_model_id,
    list_labelers,
    list_model_versions,
    list_collection_names,
    count_collection_videos,
    list_collections,
    list_videos,
    pending_reviews,
    read_predictions,
    record_predictions,
    register_model,
    review_event,
    undo,
    video_frames,
)

__all__ = [
    "RAW_GT", "UPLOADS", "SNAPSHOT_PREFIX", "STRATEGIES",
    "ExportConfig", "InvalidLabelError", "LabelEvent", "NotFoundError", "PermissionDeniedError", "Review",
    "SnapshotScheduler", "StaleRevisionError", "Store", "StoreConfig", "StoreError",
    "add_analyzed_video", "add_frames", "add_labeler", "add_video", "apply_range", "backup_store", "card_metrics", "check_integrity",
    "collect_records", "compute_metrics", "connect_store", "correct_label", "count_unlabeled", "current_labels",
    "export_imagefolder", "export_label_studio", "export_training_set", "find_media_dir", "format_metrics_table",
    "frame_image_path", "frame_revision", "frames_scored_by", "get_frame", "get_video", "has_export", "has_model",
    "import_ground_truth", "label_history", "labeler_agreement", "latest_model_id", "list_labelers",
    "list_model_versions", "list_snapshots", "list_collection_names", "list_collections", "list_videos",
    "count_collection_videos", "find_videos", "next_frames", "open_store",
    "pending_reviews", "push_export_to_hub", "read_ground_truth_rows", "read_predictions", "record_predictions",
    "register_model", "release_frames", "restore_latest_snapshot", "restore_store", "review_event",
    "schedule_snapshots", "snapshot_store", "split_for_video", "split_videos", "truth_labels", "undo", "video_frames", "video_votes",
    "write_transaction",
]
