"""How good a model version is against the labels, and how much labelers agree, computed by scikit-learn.

The headline is the vqwen card's table, computed in one place (:func:`card_metrics`, from plain lists, for
the store, the Review tab's comparison and the training scripts alike): frame accuracy, precision, recall
and F1 for "sludge", video-level accuracy where a video's verdict is the majority vote of its frames (ties
go to sludge, as in ``core.engine.decide_video``), and layout accuracy on frames labelled sludge.
Around it, for a model version in the store: confusion matrices for sludge and layout, per-layout error,
and Cohen's kappa between every pair of labelers (raw-gt included) on the frames both labelled.

    card_metrics([True, False], [True, True], ["a", "b"])["frames"]["accuracy"]      0.5
    m = compute_metrics(db, "tiny@1", against="current")
    m["frames"]        {'n': 480, 'accuracy': 0.93, 'precision': 0.91, 'recall': 0.95, 'f1': 0.93, 'tp': ...}
    print(format_metrics_table(m))
"""

from __future__ import annotations

import html
import itertools
import math
import warnings
from collections import defaultdict
from collections.abc import Sequence

import sqlite_utils

from annotations.schema import RAW_GT, InvalidLabelError, NotFoundError
from annotations.writes import check_collection, has_model, read_predictions, sole_model_id
from core.vocabulary import LABEL_LAYOUTS


def truth_labels(db: sqlite_utils.Database, against: str = "current",
                 collection: str | None = None) -> dict[int, dict]:
    """frame_id -> {"video_id", "sludge", "layout"} from the current labels, or one labeler's latest values;
    only the frames of one collection's videos when it is named.

    ``against`` is "current", "raw-gt", or any labeler's name. A frame whose sludge is False and has no
    layout label gets layout "none".

    >>> truth_labels(db, "raw-gt")[1]  # doctest: +SKIP
    {'video_id': '9f86…', 'sludge': True, 'layout': 'vertical'}
    """
    check_collection(db, collection)
    in_collection, params = ("", []) if collection is None else (
        " AND {video} IN (SELECT id FROM videos WHERE collection = ?)", [collection])
    out: dict[int, dict] = {}
    if against == "current":
        rows = db.execute("SELECT frame_id, video_id, sludge, layout FROM current_labels WHERE sludge IS NOT NULL"
                          + in_collection.format(video="video_id"), params)
        for frame_id, video_id, sludge, layout in rows:
            out[frame_id] = {"video_id": video_id, "sludge": bool(sludge), "layout": layout}
    else:
        if db.execute("SELECT 1 FROM labelers WHERE name = ?", [against]).fetchone() is None:
            raise NotFoundError(f"no labeler {against!r}: compare against 'current', {RAW_GT!r} or a labeler's name")
        rows = db.execute(
            "SELECT e.frame_id, f.video_id, e.field, e.new_value FROM label_events e JOIN frames f ON f.id = e.frame_id"
            " WHERE e.id IN (SELECT max(id) FROM label_events WHERE labeler = ? AND field IN ('sludge', 'layout')"
            " GROUP BY frame_id, field)" + in_collection.format(video="f.video_id"), [against, *params])
        partial: dict[int, dict] = defaultdict(dict)
        for frame_id, video_id, field, value in rows:
            partial[frame_id]["video_id"] = video_id
            partial[frame_id][field] = value
        for frame_id, values in partial.items():
            if values.get("sludge") is not None:
                out[frame_id] = {"video_id": values["video_id"], "sludge": values["sludge"] == "1",
                                 "layout": values.get("layout")}
    for values in out.values():
        if values["layout"] is None and not values["sludge"]:
            values["layout"] = "none"
    return out


def _ratio(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else round(value, 6)


def video_votes(labels: Sequence[bool], video_ids: Sequence[str]) -> dict[str, bool]:
    """Each video's majority vote of its frame labels; ties go to sludge.

    >>> video_votes([True, False, False], ["a", "a", "b"])
    {'a': True, 'b': False}
    """
    by_video: dict[str, list[bool]] = defaultdict(list)
    for label, video in zip(labels, video_ids):
        by_video[video].append(bool(label))
    return {video: sum(votes) / len(votes) >= 0.5 for video, votes in by_video.items()}


def card_metrics(y_true: Sequence[bool], y_pred: Sequence[bool], video_ids: Sequence[str],
                 layout_true: Sequence[str | None] | None = None,
                 layout_pred: Sequence[str | None] | None = None) -> dict:
    """The card's table from per-frame labels and predictions, computed by scikit-learn.

    Returns {"frames": {n, accuracy, precision, recall, f1, tp, fp, fn, tn}, "videos": {n, majority_accuracy},
    "layout": {n, accuracy}}; layout accuracy counts the frames labelled sludge with a layout other than
    "none". Figures are None where there is nothing to count.

    >>> card_metrics([True, True, False, False], [True, False, False, True], ["a", "a", "b", "b"])["frames"]
    {'n': 4, 'accuracy': 0.5, 'precision': 0.5, 'recall': 0.5, 'f1': 0.5, 'tp': 1, 'fp': 1, 'fn': 1, 'tn': 1}
    """
    # scikit-learn takes a second to import; only the metrics need it.
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    y_true, y_pred = [bool(v) for v in y_true], [bool(v) for v in y_pred]
    if not y_true:
        return {"frames": {"n": 0, "accuracy": None, "precision": None, "recall": None, "f1": None},
                "videos": {"n": 0, "majority_accuracy": None}, "layout": {"n": 0, "accuracy": None}}
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, average="binary", pos_label=True, zero_division=0)
    (tn, fp), (fn, tp) = confusion_matrix(y_true, y_pred, labels=[False, True])
    frames = {"n": len(y_true), "accuracy": _ratio(accuracy_score(y_true, y_pred)), "precision": _ratio(precision),
              "recall": _ratio(recall), "f1": _ratio(f1), "tp": int(tp), "fp": int(fp), "fn": int(fn), "tn": int(tn)}
    truth_votes, pred_votes = video_votes(y_true, video_ids), video_votes(y_pred, video_ids)
    videos = sorted(truth_votes)
    video_acc = accuracy_score([truth_votes[v] for v in videos], [pred_votes[v] for v in videos])
    layout = {"n": 0, "accuracy": None}
    if layout_true is not None and layout_pred is not None:
        pairs = [(t, p) for t, p, s in zip(layout_true, layout_pred, y_true) if s and t not in (None, "none")]
        if pairs:
            layout = {"n": len(pairs), "accuracy": _ratio(accuracy_score([t for t, _ in pairs], [p for _, p in pairs]))}
    return {"frames": frames, "videos": {"n": len(videos), "majority_accuracy": _ratio(video_acc)}, "layout": layout}


def compute_metrics(db: sqlite_utils.Database, model_id: str | None = None, against: str = "current",
                    threshold: float = 0.5, collection: str | None = None) -> dict:
    """The model version's scores against the labels; see the module docstring for what is in it.

    The predicted layout of a frame the model calls not sludge is "none", as the app shows it. With a
    ``collection``, every figure (the agreement between labelers too) counts that collection's frames only.

    >>> compute_metrics(db, "tiny@1", against="raw-gt")["videos"]  # doctest: +SKIP
    {'n': 30, 'majority_accuracy': 0.9}
    """
    # scikit-learn takes a second to import; only the metrics need it.
    from sklearn.metrics import confusion_matrix

    model_id = model_id or sole_model_id(db)
    if not has_model(db, model_id):
        raise NotFoundError(f"model {model_id!r} is not registered (or no model has predictions yet)")
    truth = truth_labels(db, against, collection)
    preds = read_predictions(db, model_id, collection)
    pairs = [(fid, p, layout) for fid, (p, layout) in preds.items() if fid in truth]
    y_true = [truth[fid]["sludge"] for fid, _, _ in pairs]
    y_pred = [p >= threshold for _, p, _ in pairs]
    shown_layout = [layout if p >= threshold else "none" for _, p, layout in pairs]
    card = card_metrics(y_true, y_pred, [truth[fid]["video_id"] for fid, _, _ in pairs],
                        [truth[fid]["layout"] for fid, _, _ in pairs], shown_layout)
    result: dict = {"model_id": model_id, "against": against, "threshold": threshold, "collection": collection,
                    "predictions": len(preds), "labelled": len(truth), **card}
    f = card["frames"]
    matrix = [[f["tn"], f["fp"]], [f["fn"], f["tp"]]] if pairs else [[0, 0], [0, 0]]
    result["confusion_sludge"] = {"labels": ["not sludge", "sludge"], "rows": "truth", "columns": "predicted",
                                  "matrix": matrix}

    layout_pairs = [(truth[fid]["layout"], shown) for (fid, _, _), shown in zip(pairs, shown_layout)
                    if truth[fid]["layout"] is not None]
    layout_matrix = (confusion_matrix([t for t, _ in layout_pairs], [p for _, p in layout_pairs], labels=list(LABEL_LAYOUTS))
                     if layout_pairs else [[0] * len(LABEL_LAYOUTS) for _ in LABEL_LAYOUTS])
    result["confusion_layout"] = {"labels": list(LABEL_LAYOUTS), "rows": "truth", "columns": "predicted",
                                  "n": len(layout_pairs), "matrix": [[int(x) for x in row] for row in layout_matrix]}

    per_layout = {}
    for name in LABEL_LAYOUTS:
        sludge_pairs = [(t, p) for (fid, _, _), t, p in zip(pairs, y_true, y_pred) if truth[fid]["layout"] == name]
        layout_hits = [t == p for t, p in layout_pairs if t == name]
        sludge_errors = sum(t != p for t, p in sludge_pairs)
        per_layout[name] = {
            "n": len(sludge_pairs),
            "sludge_error_rate": _ratio(sludge_errors / len(sludge_pairs)) if sludge_pairs else None,
            "layout_error_rate": _ratio(1 - sum(layout_hits) / len(layout_hits)) if layout_hits else None,
        }
    result["per_layout"] = per_layout
    result["kappa"] = labeler_agreement(db, collection=collection)
    return result


def labeler_agreement(db: sqlite_utils.Database, min_overlap: int = 1,
                      collection: str | None = None) -> dict[str, list[dict]]:
    """Cohen's kappa between every pair of labelers (raw-gt included), per field, on frames both labelled
    (of one collection's videos when it is named).

    kappa is None where it is undefined (both labelers used a single class on the shared frames).

    >>> labeler_agreement(db)["sludge"]  # doctest: +SKIP
    [{'a': 'ana', 'b': 'raw-gt', 'n': 120, 'kappa': 0.81}]
    """
    from sklearn.metrics import cohen_kappa_score

    check_collection(db, collection)
    in_collection, params = ("", []) if collection is None else (
        " AND frame_id IN (SELECT f.id FROM frames f JOIN videos v ON v.id = f.video_id WHERE v.collection = ?)",
        [collection])
    out: dict[str, list[dict]] = {}
    for field in ("sludge", "layout"):
        values: dict[str, dict[int, str]] = defaultdict(dict)
        rows = db.execute(
            "SELECT labeler, frame_id, new_value FROM label_events WHERE id IN (SELECT max(id) FROM label_events"
            " WHERE field = ?" + in_collection + " GROUP BY labeler, frame_id)", [field, *params])
        for labeler, frame_id, value in rows:
            if value is not None:
                values[labeler][frame_id] = value
        pairs = []
        for a, b in itertools.combinations(sorted(values), 2):
            shared = sorted(set(values[a]) & set(values[b]))
            if len(shared) < min_overlap:
                continue
            ya = [values[a][f] for f in shared]
            yb = [values[b][f] for f in shared]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                kappa = cohen_kappa_score(ya, yb)
            pairs.append({"a": a, "b": b, "n": len(shared), "kappa": _ratio(kappa),
                          "agreement": round(sum(x == y for x, y in zip(ya, yb)) / len(shared), 6)})
        out[field] = pairs
    return out


def format_metrics_table(metrics: dict) -> str:
    """The vqwen card's table (and the confusion matrices) as Markdown.

    >>> print(format_metrics_table(compute_metrics(db, "tiny@1")))  # doctest: +SKIP
    | model | frames | accuracy | precision | recall | F1 | videos | video accuracy |
    """
    if "frames" not in metrics:
        raise InvalidLabelError("format_metrics_table takes the dict compute_metrics returns")

    def pct(x):
        return "–" if x is None else f"{x:.1%}"

    def cell(text):
        # Names are free text: escape HTML and the column separator so a table cell stays a cell.
        return html.escape(str(text)).replace("|", "\\|")

    f, v = metrics["frames"], metrics["videos"]
    lines = [
        f"Model {cell(metrics['model_id'])} against {cell(metrics['against'])} labels "
        f"(threshold {metrics['threshold']})",
        "",
        "| frames | accuracy | precision | recall | F1 | videos | video accuracy (majority) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {f['n']} | {pct(f['accuracy'])} | {pct(f['precision'])} | {pct(f['recall'])} | {pct(f['f1'])} "
        f"| {v['n']} | {pct(v['majority_accuracy'])} |",
        "",
        "Sludge confusion (rows truth, columns predicted):",
        "",
        "| | not sludge | sludge |",
        "|---|---:|---:|",
    ]
    for name, row in zip(metrics["confusion_sludge"]["labels"], metrics["confusion_sludge"]["matrix"]):
        lines.append(f"| {name} | {row[0]} | {row[1]} |")
    labels = metrics["confusion_layout"]["labels"]
    lines += ["", "Layout confusion (rows truth, columns predicted):", "",
              "| | " + " | ".join(labels) + " | sludge error | layout error |",
              "|---|" + "---:|" * (len(labels) + 2)]
    for name, row in zip(labels, metrics["confusion_layout"]["matrix"]):
        per = metrics["per_layout"][name]
        lines.append(f"| {name} | " + " | ".join(str(x) for x in row)
                     + f" | {pct(per['sludge_error_rate'])} | {pct(per['layout_error_rate'])} |")
    kappas = [k for field in ("sludge", "layout") for k in metrics["kappa"].get(field, [])]
    if kappas:
        lines += ["", "Agreement between labelers (Cohen's kappa):", "", "| field | a | b | frames | kappa |",
                  "|---|---|---|---:|---:|"]
        for field in ("sludge", "layout"):
            for k in metrics["kappa"].get(field, []):
                kappa = "–" if k["kappa"] is None else f"{k['kappa']:.3f}"
                lines.append(f"| {field} | {cell(k['a'])} | {cell(k['b'])} | {k['n']} | {kappa} |")
    return "\n".join(lines)
