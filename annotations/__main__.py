"""Command line for the annotation store: import, export, stats, backup, restore.

    python -m annotations import truth.csv
    python -m annotations export training data/exports/run1 --model tiny@1
    python -m annotations stats --against raw-gt
    python -m annotations backup /mnt/backups
    python -m annotations restore hf://datasets/me/sludge-store

The store and media folder default to the settings (SLUDGELENS_DB, SLUDGELENS_MEDIA); --db and --media
override them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXPORT_KINDS = ("training", "imagefolder", "label-studio")


def build_parser(settings) -> argparse.ArgumentParser:
    """The argument parser, with defaults taken from ``settings``.

    >>> build_parser(load_settings()).parse_args(["stats", "--json"]).command  # doctest: +SKIP
    'stats'
    """
    parser = argparse.ArgumentParser(prog="python -m annotations", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, default=settings.db_path, help=f"store file (default: {settings.db_path})")
    parser.add_argument("--media", type=Path, default=settings.media_dir,
                        help=f"media folder of frame images (default: {settings.media_dir})")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("import", help="import raw ground truth (CSV or JSONL) as labeler raw-gt",
                       description="Import raw ground truth from CSV or JSONL as labeler 'raw-gt'. Rows name a "
                                   "video (sha256 id or stored name) and optionally a frame_index; columns sludge, "
                                   "layout, description. Re-importing the same file writes nothing new.")
    p.add_argument("file", type=Path, help="a .csv or .jsonl file")
    p.add_argument("--format", choices=("csv", "jsonl"), help="file format (default: from the suffix)")

    p = sub.add_parser("export", help="export labels for training, datasets' imagefolder, or Label Studio",
                       description="Write a reproducible export with a manifest.json (snapshot id, counts, "
                                   "provenance, model versions, sha256 of every file); optionally push it to a "
                                   "Hub dataset repo or copy it to a folder.")
    p.add_argument("kind", choices=EXPORT_KINDS, help="training: training.jsonl for the fine-tuning scripts; "
                                                      "imagefolder: datasets imagefolder; label-studio: tasks.json")
    p.add_argument("out", type=Path, nargs="?", help=f"output folder (default: {settings.export_dir}/<kind>)")
    p.add_argument("--model", help="model version for predictions / pseudo-labels (default: the latest)")
    p.add_argument("--images", choices=("copy", "absolute"), default="copy",
                   help="training export: copy images into the folder (default) or point at the media folder")
    p.add_argument("--no-model-labels", action="store_true",
                   help="leave out frames no one labelled instead of filling in the model's label")
    p.add_argument("--push", metavar="TARGET", help="then push to hf://datasets/owner/name or copy to a folder")

    p = sub.add_parser("stats", help="store counts and the model's metrics against the labels",
                       description="Counts of the store, then the vqwen card's table (frame accuracy, precision, "
                                   "recall, F1, video majority accuracy), confusion matrices, per-layout error and "
                                   "Cohen's kappa between labelers.")
    p.add_argument("--model", help="model version (default: the latest with predictions)")
    p.add_argument("--against", default="current", help="'current' labels (default), 'raw-gt', or a labeler")
    p.add_argument("--threshold", type=float, default=settings.engine.threshold, help="P(sludge) decision threshold")
    p.add_argument("--json", action="store_true", help="print JSON instead of Markdown tables")

    p = sub.add_parser("backup", help="snapshot the store (SQLite backup API) to a folder or Hub dataset repo",
                       description="Take a consistent snapshot while the app keeps writing, check it, and keep it "
                                   "under TARGET/snapshots with the media files under TARGET/media.")
    p.add_argument("target", nargs="?", default=settings.snapshot_target,
                   help=f"folder or hf://datasets/owner/name (default: {settings.snapshot_target})")
    p.add_argument("--keep", type=int, default=settings.snapshot_keep, help="snapshots to keep (local targets)")

    p = sub.add_parser("restore", help="restore the newest snapshot when the store file is missing",
                       description="Copy the newest intact snapshot from TARGET into place of the store, and "
                                   "missing media files back. Does nothing if the store exists, unless --force.")
    p.add_argument("target", nargs="?", default=settings.snapshot_target,
                   help=f"folder or hf://datasets/owner/name (default: {settings.snapshot_target})")
    p.add_argument("--force", action="store_true", help="replace an existing store")
    return parser


def store_counts(db) -> dict:
    """Rows per table and labelled frames, for `stats`.

    >>> store_counts(db)["frames"]  # doctest: +SKIP
    480
    """
    counts = {name: db[name].count for name in ("videos", "frames", "models", "predictions", "labelers",
                                                  "label_events", "reviews", "exports")}
    counts["labelled_frames"] = db.execute("SELECT count(*) FROM current_labels WHERE sludge IS NOT NULL").fetchone()[0]
    return counts


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (1 with a readable message when the store refuses).

    >>> main(["stats"])  # doctest: +SKIP
    0
    """
    import annotations as store
    from core.config import load_settings

    settings = load_settings()
    args = build_parser(settings).parse_args(argv)
    try:
        if args.command in ("backup", "restore") and not args.target:
            raise store.InvalidLabelError("no target: pass one, or set snapshot_target in the settings")
        if args.command == "backup":
            snapshot = store.backup_store(args.db, args.target, media_dir=args.media, keep=args.keep)
            print(f"snapshot: {snapshot}")
            return 0
        if args.command == "restore":
            restored = store.restore_store(args.target, args.db, media_dir=args.media, force=args.force)
            print(f"restored {args.db} from {restored}" if restored else
                  f"nothing restored ({args.db} exists; --force replaces it)" if args.db.exists() else
                  f"no intact snapshot under {args.target}")
            return 0
        db = store.open_store(args.db, args.media, store.StoreConfig(synchronous=settings.store_synchronous))
        if args.command == "import":
            print(json.dumps(store.import_ground_truth(db, args.file, args.format), indent=2, ensure_ascii=False))
        elif args.command == "export":
            out = args.out or Path(settings.export_dir) / args.kind
            config = store.ExportConfig(include_model_labels=not args.no_model_labels,
                                        threshold=settings.engine.threshold)
            if args.kind == "training":
                manifest = store.export_training_set(db, out, args.model, images=args.images, config=config)
            elif args.kind == "imagefolder":
                manifest = store.export_imagefolder(db, out, args.model, config=config)
            else:
                manifest = store.export_label_studio(db, out, args.model)
            print(f"{manifest['kind']} export {manifest['snapshot_id']} -> {out}")
            print(json.dumps(manifest["counts"], indent=2, sort_keys=True))
            if args.push:
                print(f"pushed: {store.push_export_to_hub(out, args.push)}")
        elif args.command == "stats":
            counts = store_counts(db)
            model_id = args.model or store.latest_model_id(db)
            metrics = store.compute_metrics(db, model_id, args.against, args.threshold) if model_id else None
            if args.json:
                print(json.dumps({"counts": counts, "metrics": metrics}, indent=2, ensure_ascii=False))
            else:
                print(" · ".join(f"{k}: {v}" for k, v in counts.items()))
                print()
                print(store.format_metrics_table(metrics) if metrics else "no model predictions yet")
        return 0
    except store.StoreError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
