"""`python -m annotations`: import, export, stats, backup, restore on a real store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from store_helpers import build_store

import annotations as store
from annotations.__main__ import main

REPO = Path(__file__).resolve().parent.parent


def test_help_for_every_command():
    top = subprocess.run([sys.executable, "-m", "annotations", "--help"], cwd=REPO, capture_output=True, text=True)
    assert top.returncode == 0
    for command in ("import", "export", "stats", "backup", "restore"):
        assert command in top.stdout


@pytest.mark.parametrize("command", ["import", "export", "stats", "backup", "restore"])
def test_subcommand_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    assert len(capsys.readouterr().out.splitlines()) > 4


def test_import_export_stats_backup_restore(tmp_path, capsys, monkeypatch):
    # Exports and stats are about the model version the settings name, never merely the newest in the store.
    monkeypatch.setenv("SLUDGELENS_METRICS_MODEL", "tiny@1")
    db, videos = build_store(tmp_path, videos=3, frames_per_video=3)
    video = next(iter(videos))
    db.close()
    base = ["--db", str(tmp_path / "store.db"), "--media", str(tmp_path / "media")]
    truth = tmp_path / "truth.jsonl"
    truth.write_text(json.dumps({"video": video, "sludge": True, "layout": "pip"}) + "\n")

    assert main(base + ["import", str(truth)]) == 0
    assert json.loads(capsys.readouterr().out)["events"] == 6

    assert main(base + ["export", "training", str(tmp_path / "out"), "--model-labels",
                        "--push", str(tmp_path / "pushed")]) == 0
    out = capsys.readouterr().out
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["snapshot_id"] in out and manifest["counts"]["records"] == 9
    assert (tmp_path / "pushed" / "exports" / manifest["snapshot_id"] / "training.jsonl").is_file()
    assert main(base + ["export", "imagefolder", str(tmp_path / "if"), "--no-model-labels"]) == 0
    assert json.loads((tmp_path / "if" / "manifest.json").read_text())["counts"]["records"] == 3
    capsys.readouterr()

    assert main(base + ["stats", "--against", "raw-gt"]) == 0
    out = capsys.readouterr().out
    assert "| frames | accuracy | precision | recall | F1 |" in out and "label_events: 6" in out
    assert main(base + ["stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["counts"]["labelled_frames"] == 3 and stats["metrics"]["frames"]["n"] == 3

    assert main(base + ["backup", str(tmp_path / "backups")]) == 0
    assert "snapshot:" in capsys.readouterr().out
    moved = ["--db", str(tmp_path / "again" / "store.db"), "--media", str(tmp_path / "again" / "media")]
    assert main(moved + ["restore", str(tmp_path / "backups")]) == 0
    assert "restored" in capsys.readouterr().out
    again = store.open_store(tmp_path / "again" / "store.db", tmp_path / "again" / "media")
    assert again["label_events"].count == 6
    again.close()
    assert main(moved + ["restore", str(tmp_path / "backups")]) == 0
    assert "nothing restored" in capsys.readouterr().out

    assert main(base + ["stats", "--against", "nobody"]) == 1
    assert "no labeler 'nobody'" in capsys.readouterr().err
    assert main(base + ["backup"]) == 1  # no target configured
