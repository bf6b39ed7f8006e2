"""Two model versions side by side on a fixed holdout: the labelled frames of the videos in one split.

The holdout is fixed by the store's own split rule (``annotations.split_videos``: hash order of the video
ids per collection, with a test video even in a small collection), so it does not change as labels
accumulate and never overlaps the training split an export writes. Both versions are scored on exactly the same frames: those both have predictions for, with the
card's metrics (``annotations.metrics.card_metrics``).

    cmp = compare_models(db, "models/tiny@a1", "data/checkpoints/lora-1@b2", against="current", split="test")
    cmp["models"][0]["f1"], cmp["models"][1]["f1"], cmp["disagreements"][:3]
"""

from __future__ import annotations

import annotations as store
from annotations.metrics import card_metrics

HOLDOUT_SPLITS = ("test", "val", "train", "all")


def read_holdout_truth(db, against: str = "current", split: str = "test",
                       collection: str | None = None) -> dict[int, dict]:
    """frame_id -> truth ({"video_id", "sludge", "layout"}) for labelled frames of videos in `split` (and in
    one collection when it is named).

    >>> len(read_holdout_truth(db, "raw-gt", "test"))  # doctest: +SKIP
    48
    """
    if split not in HOLDOUT_SPLITS:
        raise store.InvalidLabelError(f"split must be one of {', '.join(HOLDOUT_SPLITS)}, not {split!r}")
    truth = store.truth_labels(db, against, collection)
    if split == "all":
        return truth
    splits = store.split_videos(db)
    return {frame_id: values for frame_id, values in truth.items() if splits.get(values["video_id"]) == split}


def compare_models(db, model_a: str, model_b: str, against: str = "current", split: str = "test",
                   threshold: float = 0.5, collection: str | None = None) -> dict:
    """Sludge accuracy / precision / recall / F1 and layout accuracy of two versions on the same holdout frames.

    A version's layout on a frame it calls not sludge is "none", as the app shows it. With a ``collection``
    the holdout is the labelled frames of that collection's videos in the split.

    Returns {"split", "against", "collection", "frames" (shared holdout frames), "holdout" (labelled frames in
    the split), "models": [{model_id, scored, accuracy, precision, recall, f1, layout_accuracy}, ...],
    "disagreements": [{frame_id, truth, a, b}, ...] (frames where the versions' labels differ)}.

    >>> compare_models(db, "tiny@1", "tiny@2", split="all")["frames"]  # doctest: +SKIP
    120
    """
    truth = read_holdout_truth(db, against, split, collection)
    preds = {}
    for model_id in (model_a, model_b):
        if not store.has_model(db, model_id):
            raise store.NotFoundError(f"model {model_id!r} has no predictions in the store")
        preds[model_id] = store.read_predictions(db, model_id, collection)
    shared = sorted(fid for fid in truth if all(fid in preds[m] for m in (model_a, model_b)))
    y_true = [truth[f]["sludge"] for f in shared]
    video_ids = [truth[f]["video_id"] for f in shared]
    layout_true = [truth[f]["layout"] for f in shared]
    models = []
    for model_id in (model_a, model_b):
        y_pred = [preds[model_id][f][0] >= threshold for f in shared]
        layout_pred = [layout if p >= threshold else "none" for p, layout in (preds[model_id][f] for f in shared)]
        card = card_metrics(y_true, y_pred, video_ids, layout_true, layout_pred)
        frames = card["frames"]
        models.append({"model_id": model_id, "scored": sum(f in preds[model_id] for f in truth),
                       **{k: frames[k] for k in ("accuracy", "precision", "recall", "f1")},
                       "layout_accuracy": card["layout"]["accuracy"]})
    disagreements = []
    for f in shared:
        a, b = preds[model_a][f][0], preds[model_b][f][0]
        if (a >= threshold) != (b >= threshold):
            disagreements.append({"frame_id": f, "truth": truth[f]["sludge"], "a": round(a, 4), "b": round(b, 4)})
    return {"split": split, "against": against, "collection": collection, "threshold": threshold,
            "holdout": len(truth),
            "frames": len(shared), "models": models, "disagreements": disagreements}


def list_truth_sources(db) -> list[str]:
    """What metrics can be computed against: the current labels, imported ground truth, each labeler.

    >>> list_truth_sources(db)  # doctest: +SKIP
    ['current', 'raw-gt', 'alice', 'rita']
    """
    return ["current", store.RAW_GT, *store.list_labelers(db, "human")]


def score_holdout(lm, db, against: str = "current", split: str = "test", collection: str | None = None) -> dict:
    """Score the labelled holdout frames with a model (skipping ones it already scored); returns what it did.

    >>> score_holdout(lm, db, split="test")  # doctest: +SKIP
    {'model_id': 'data/checkpoints/lora-1@b2c3d4e5f6a7', 'frames': 48}
    """
    # The model library (torch) loads only when something is scored.
    from annotations.analyses import score_stored_frames

    frame_ids = sorted(read_holdout_truth(db, against, split, collection))
    return {"model_id": score_stored_frames(lm, db, frame_ids), "frames": len(frame_ids)}
