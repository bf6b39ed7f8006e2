"""The vqwen card's evaluation table for a model on labelled frames, written as JSON and Markdown.

Frames are scored through the app's own scorer (``core.engine.score_frames``: P(yes) from the yes/no
logits, threshold 0.5), so the figures describe the model exactly as the app serves it. The table:

    frame accuracy, precision, recall, F1   "sludge" is the positive class
    video accuracy (majority vote)          a video is sludge when at least half its frames are
                                            (ties go to sludge, as in core.engine.decide_video),
                                            for the labels and for the predictions alike
    layout accuracy                         on frames labelled sludge with a layout, of the predicted layout

The table itself is computed by ``annotations.metrics.card_metrics``, the one implementation the store's
metrics and the Review tab use too.

    result = evaluate_records(lm, records)             # records: training-export rows with an "image" path
    print(format_markdown({"before": before["metrics"], "after": result["metrics"]}))
    python -m training.evaluate --model data/checkpoints/lora-run1 --export data/exports/run1 --split test
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from annotations.metrics import card_metrics
from core.config import EngineConfig, ModelSpec
from core.engine import LoadedModel, load_model, score_frames

# Rows of the Markdown table: (metric key path, label), in the vqwen card's order.
TABLE_ROWS = (
    (("frames", "accuracy"), "Frame-level accuracy"),
    (("frames", "precision"), "Frame-level precision"),
    (("frames", "recall"), "Frame-level recall"),
    (("frames", "f1"), "Frame-level F1"),
    (("videos", "majority_accuracy"), "Video-level accuracy (majority vote)"),
    (("layout", "accuracy"), "Layout accuracy (frames labelled sludge)"),
)


def load_image(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB.

    >>> load_image("data/exports/run1/images/ab12….png").shape  # doctest: +SKIP
    (448, 252, 3)
    """
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def predict_records(lm: LoadedModel, records: Sequence[dict], batch_size: int = 16) -> list[dict]:
    """Score each record's image with the app's scorer; one prediction row per record, in order.

    >>> predict_records(lm, records[:2])[0]  # doctest: +SKIP
    {'frame_id': 12, 'video_id': '9f86…', 'sludge': True, 'layout': 'vertical', 'p_sludge': 0.93,
     'pred': True, 'pred_layout': 'vertical'}
    """
    rows = []
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        frames = [load_image(r["image"]) for r in chunk]
        for record, score in zip(chunk, score_frames(lm, frames, batch_size=batch_size)):
            rows.append({
                "frame_id": record.get("frame_id"),
                "video_id": record["video_id"],
                "sludge": bool(record["sludge"]),
                "layout": record.get("layout"),
                "p_sludge": score.p_sludge,
                "pred": bool(score.label),
                # The most likely layout whatever the sludge call, so layout accuracy measures the layout answer.
                "pred_layout": max(score.layout_scores, key=score.layout_scores.get),
                "layout_scores": score.layout_scores,
            })
    return rows


def metrics_of(predictions: Sequence[dict]) -> dict:
    """The card's table (``annotations.metrics.card_metrics``) for prediction rows as written by
    :func:`predict_records`.

    >>> row = {"sludge": True, "pred": True, "video_id": "a", "layout": "pip", "pred_layout": "pip"}
    >>> metrics_of([row])["frames"]["accuracy"]
    1.0
    """
    return card_metrics([p["sludge"] for p in predictions], [p["pred"] for p in predictions],
                        [p["video_id"] for p in predictions], [p.get("layout") for p in predictions],
                        [p.get("pred_layout") for p in predictions])


def evaluate_records(lm: LoadedModel, records: Sequence[dict], batch_size: int = 16) -> dict:
    """Score records and compute the card's table; returns {"metrics": ..., "predictions": [...]}.

    >>> evaluate_records(lm, test_records)["metrics"]["frames"]["f1"]  # doctest: +SKIP
    0.934
    """
    predictions = predict_records(lm, records, batch_size)
    return {"metrics": metrics_of(predictions), "predictions": predictions}


def _cell(metrics: dict, path: tuple[str, str]) -> str:
    value = metrics.get(path[0], {}).get(path[1])
    return "–" if value is None else f"{100 * value:.2f} %"


def format_markdown(columns: dict[str, dict], title: str = "") -> str:
    """The card's table, one column per model (e.g. "before" and "after"), counts in the last row.

    >>> print(format_markdown({"after": card_metrics([True], [True], ["a"])}).splitlines()[2])
    | Frame-level accuracy | 100.00 % |
    """
    names = list(columns)
    lines = [f"| Metric | {' | '.join(names)} |", "|---|" + "---|" * len(names)]
    for path, label in TABLE_ROWS:
        lines.append(f"| {label} | {' | '.join(_cell(columns[n], path) for n in names)} |")
    counts = [f"{columns[n]['frames']['n']} frames / {columns[n]['videos']['n']} videos" for n in names]
    lines.append(f"| Evaluated on | {' | '.join(counts)} |")
    text = "\n".join(lines) + "\n"
    return f"{title}\n\n{text}" if title else text


def write_report(folder: str | Path, results: dict[str, dict], meta: dict | None = None,
                 stem: str = "eval") -> tuple[Path, Path]:
    """Write ``<stem>.json`` (metrics, predictions, meta) and ``<stem>.md`` (the table) into `folder`.

    `results` maps a column name ("before", "after") to what :func:`evaluate_records` returned.

    >>> write_report("data/checkpoints/lora-run1", {"before": before, "after": after})  # doctest: +SKIP
    (PosixPath('…/eval.json'), PosixPath('…/eval.md'))
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta or {}, "metrics": {k: v["metrics"] for k, v in results.items()},
               "predictions": {k: v["predictions"] for k, v in results.items()}}
    json_path, md_path = folder / f"{stem}.json", folder / f"{stem}.md"
    json_path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    title = (meta or {}).get("title", "")
    md_path.write_text(format_markdown({k: v["metrics"] for k, v in results.items()}, title))
    return json_path, md_path


def read_export(folder: str | Path, splits: Iterable[str] | None = None) -> tuple[list[dict], dict]:
    """The records of a training export (image paths made absolute) and its manifest.

    >>> records, manifest = read_export("data/exports/run1", splits=["test"])  # doctest: +SKIP
    >>> manifest["snapshot_id"], records[0]["split"]  # doctest: +SKIP
    ('ev812-0a1b2c3d4e5f6a7b', 'test')
    """
    folder = Path(folder)
    manifest_path, data_path = folder / "manifest.json", folder / "training.jsonl"
    if not data_path.is_file():
        raise FileNotFoundError(f"{folder} holds no training.jsonl; write one with annotations.export_training_set")
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    wanted = None if splits is None else set(splits)
    records = []
    with open(data_path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            record = json.loads(line)
            if wanted is not None and record.get("split") not in wanted:
                continue
            image = Path(record["image"])
            record["image"] = str(image if image.is_absolute() else (folder / image).resolve())
            records.append(record)
    return records, manifest


def main(argv: list[str] | None = None) -> dict:
    """``python -m training.evaluate --model FOLDER_OR_HUB_ID --export EXPORT_DIR [--split test] [--out DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint folder or hub id")
    parser.add_argument("--revision", default=None)
    parser.add_argument("--export", required=True, help="folder written by annotations.export_training_set")
    parser.add_argument("--split", default="test", help="train, val or test (default test)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default="", help="folder for eval.json / eval.md (default: print only)")
    args = parser.parse_args(argv)
    records, manifest = read_export(args.export, [args.split])
    lm = load_model(ModelSpec(args.model, args.revision), EngineConfig(device=args.device))
    result = evaluate_records(lm, records, args.batch_size)
    title = f"{args.model} on the {args.split} split of export {manifest.get('snapshot_id', args.export)}"
    if args.out:
        write_report(args.out, {args.model: result}, {"title": title, "export": manifest.get("snapshot_id")})
    print(format_markdown({args.model: result["metrics"]}, title))
    return result["metrics"]


if __name__ == "__main__":
    main()
