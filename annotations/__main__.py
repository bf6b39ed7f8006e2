"""Command line for the annotation store: ingest, import, export, stats, backup, restore.

    python -m annotations ingest data/raw/crawl-2024 --frames 16
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
    p.add_argument("--model", help="model version for predictions / pseudo-labels (default: SLUDGELENS_METRICS_MODEL, "
                                   "else the configured model's version)")
    p.add_argument("--images", choices=("copy", "absolute"), default="copy",
                   help="training export: copy images into the folder (default) or point at the media folder")
    p.add_argument("--model-labels", action="store_true",
                   help="also write frames no one labelled, with the model's label as a pseudo-label (provenance "
                        "'model'; the manifest says so); by default an export holds human and imported labels only")
    p.add_argument("--no-model-labels", action="store_true", help="the default: leave out frames no one labelled")
    p.add_argument("--push", metavar="TARGET", help="then push to hf://datasets/owner/name or copy to a folder")

    p = sub.add_parser("stats", help="store counts and the model's metrics against the labels",
                       description="Counts of the store, then the vqwen card's table (frame accuracy, precision, "
                                   "recall, F1, video majority accuracy), confusion matrices, per-layout error and "
                                   "Cohen's kappa between labelers.")
    p.add_argument("--model", help="model version (default: SLUDGELENS_METRICS_MODEL, else the configured model's "
                                   "version)")
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
    add_ingest_parser(sub, settings)
    return parser


def add_ingest_parser(sub, settings) -> None:
    """The ``ingest`` subcommand's arguments.

    >>> add_ingest_parser(argparse.ArgumentParser().add_subparsers(), load_settings())  # doctest: +SKIP
    """
    from annotations.ingest import IngestConfig

    p = sub.add_parser("ingest", help="sample, score and store a whole collection: a folder, glob, manifest or dataset",
                       description="Sample, score and store every video of a folder (recursive), a glob, a CSV/JSONL "
                                   "manifest with a 'path' column (plus optional raw ground truth: sludge, layout, "
                                   "description, frame_index, imported as raw-gt), or a datasets dataset saved to "
                                   "disk. "
                                   "Re-running skips every video already stored with this model version's "
                                   "predictions; failures go to a JSONL report and never stop the run.")
    p.add_argument("source", help="a folder, a glob (quote it), a .csv/.jsonl manifest or a saved datasets folder")
    p.add_argument("--model", help=f"checkpoint folder or hub id (default: {settings.model.label})")
    p.add_argument("--revision", help="hub revision of --model")
    p.add_argument("--frames", type=int, default=settings.num_frames,
                   help=f"frames sampled per video (default: {settings.num_frames})")
    p.add_argument("--collection", help="collection name (default: the folder's, manifest's or dataset's name)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: decode worker processes feeding one model here; ray: a Ray Data pipeline")
    p.add_argument("--workers", type=int, help="local engine: decode processes (default: one per CPU)")
    p.add_argument("--batch-size", type=int, default=IngestConfig.batch_size,
                   help=f"frames per model forward, filled across videos (default: {IngestConfig.batch_size})")
    p.add_argument("--report", type=Path, help="JSONL report of failures and the summary "
                                               "(default: next to the store, ingest-<collection>-<time>.jsonl)")
    p.add_argument("--ray-address", help="ray engine: a running cluster ('auto', 'ray://host:10001'); "
                                         "default: a local Ray on this machine")
    p.add_argument("--actors", type=int, help="ray engine: scoring actors, one model each (default: one per GPU "
                                              "share, or on CPU about half the cluster's CPUs less one)")
    p.add_argument("--gpus-per-actor", type=float, default=None,
                   help="ray engine: GPUs per scoring actor, e.g. 1 or 0.5; 0 scores on CPU "
                        "(default: 1 where the cluster has GPUs, else 0)")
    p.add_argument("--cpus-per-actor", type=float, default=1.0, help="ray engine: CPUs per scoring actor (default: 1)")
    p.add_argument("--shards", type=Path, help="ray engine: folder of the Parquet shards "
                                               "(default: next to the store, under ingest-shards/)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_ingest(args, settings, db) -> int:
    """The ``ingest`` subcommand: prints a summary line and the summary JSON; 0 when the run finished (failed
    files are in the report), 1 when the source or an argument is refused, 3 when the model cannot load.

    >>> args = build_parser(load_settings()).parse_args(["ingest", "clips/"])  # doctest: +SKIP
    >>> run_ingest(args, load_settings(), db)  # doctest: +SKIP
    0
    """
    from annotations.ingest import IngestConfig, IngestError, check_config, ingest, read_source
    from core.config import ModelSpec

    spec = ModelSpec(args.model, args.revision) if args.model else settings.model
    config = IngestConfig(num_frames=args.frames, batch_size=args.batch_size, workers=args.workers,
                          limits=settings.video, report_path=args.report, progress=not args.no_progress)
    try:
        check_config(config)
        collection = read_source(args.source, args.collection)
        if args.engine == "ray":
            from annotations.ingest_ray import RayConfig, ingest_with_ray

            ray = RayConfig(address=args.ray_address, actors=args.actors, gpus_per_actor=args.gpus_per_actor,
                            cpus_per_actor=args.cpus_per_actor, shards_dir=args.shards)
            summary = ingest_with_ray(collection, db, spec, config, ray)
        else:
            summary = ingest(collection, db, spec, config, settings.engine)
    except IngestError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        from core.engine import ModelLoadError

        if isinstance(error, ModelLoadError):
            print(f"error: {error}", file=sys.stderr)
            return 3
        raise
    print(summary.describe())
    if summary.failed:
        print(f"failures: {summary.report_path}")
    print(json.dumps(summary.to_dict(), indent=2, ensure_ascii=False))
    return 0


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
    from core.config import default_model_id, load_settings

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
        if args.command == "ingest":
            return run_ingest(args, settings, db)
        if args.command == "import":
            print(json.dumps(store.import_ground_truth(db, args.file, args.format), indent=2, ensure_ascii=False))
        elif args.command == "export":
            model_id = args.model or default_model_id(settings)
            out = args.out or Path(settings.export_dir) / args.kind
            config = store.ExportConfig(include_model_labels=args.model_labels and not args.no_model_labels,
                                        threshold=settings.engine.threshold)
            if args.kind == "training":
                manifest = store.export_training_set(db, out, model_id, images=args.images, config=config)
            elif args.kind == "imagefolder":
                manifest = store.export_imagefolder(db, out, model_id, config=config)
            else:
                manifest = store.export_label_studio(db, out, model_id)
            print(f"{manifest['kind']} export {manifest['snapshot_id']} -> {out}")
            print(json.dumps(manifest["counts"], indent=2, sort_keys=True))
            if args.push:
                print(f"pushed: {store.push_export_to_hub(out, args.push)}")
        elif args.command == "stats":
            counts = store_counts(db)
            model_id = args.model or default_model_id(settings)
            metrics = (store.compute_metrics(db, model_id, args.against, args.threshold)
                       if store.has_model(db, model_id) or args.model else None)
            if args.json:
                print(json.dumps({"counts": counts, "metrics": metrics}, indent=2, ensure_ascii=False))
            else:
                print(" · ".join(f"{k}: {v}" for k, v in counts.items()))
                print()
                print(store.format_metrics_table(metrics) if metrics else f"no predictions of {model_id} yet")
        return 0
    except store.StoreError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
