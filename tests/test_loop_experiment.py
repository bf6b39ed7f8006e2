"""The learning-loop experiment end to end at a toy size (a few frames, two fine-tuning steps, one repeat).

What it checks is the plumbing, not the figures: the report's shape (per repeat and mean +- std, both noise
kinds, the oracle), that the scripted labeler's corrections went through the store into the export Y was
trained on, and that the last line printed is the headline ``gain_pp: <float>``. The units it is built
from (flip_labels, work_queue) are tested in test_finetune.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import annotations as store
from training.loop_experiment import (
    LABELER,
    NEW_STYLES,
    LoopConfig,
    check_config,
    main,
    render_style,
)

POOL_CLIPS, FRAMES_PER_CLIP = 8, 2


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    argv = ["--work-dir", str(root / "work"), "--checkpoints-dir", str(root / "checkpoints"),
            "--pool-clips", str(POOL_CLIPS), "--frames-per-clip", str(FRAMES_PER_CLIP), "--heldout-clips", "2",
            "--repeats", "1", "--max-steps", "2", "--batch-size", "8", "--eval-every", "1",
            # Two rounds of half the pool each: every pool frame is looked at, so every flipped label must be
            # fixed, and the second round must look only at frames the first one left.
            "--budget", str(POOL_CLIPS * FRAMES_PER_CLIP // 2), "--rounds", "2", "--noise", "0.25"]
    out = io.StringIO()
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(out):
            report = main(argv)
    finally:
        torch.set_num_threads(threads)
    return {"report": report, "stdout": out.getvalue(), "root": root}


def test_report_has_every_figure_per_repeat_and_summarised(tiny_run):
    report = tiny_run["report"]
    assert report["headline_noise"] == "uniform" and list(report["config"]["noise_kinds"]) == ["uniform", "semantic"]
    assert list(report["config"]["strategies"]) == ["label-issue"]
    summary = report["summary"]
    assert set(summary) == {"base", "oracle", "oracle_gain_pp"} | {
        f"{kind}.{row}" for kind in ("uniform", "semantic") for row in ("x", "y", "gain_pp", "y1", "gain1_pp")}
    for row in summary.values():
        assert len(row["values"]) == 1 and row["std"] is None  # one repeat: no sample std
    (repeat,) = report["repeats"]
    assert repeat["seeds"]["noise"] != repeat["seeds"]["train"]
    for kind in ("uniform", "semantic"):
        loop = repeat["loops"][kind]
        x, y = loop["accuracy_pct"]["x"], loop["accuracy_pct"]["y"]
        assert summary[f"{kind}.x"]["values"] == [x] and summary[f"{kind}.y"]["values"] == [y]
        assert loop["gain_pp"] == pytest.approx(y - x, abs=0.011)
        first, last = loop["rounds"]
        assert last["accuracy_pct"] == y and summary[f"{kind}.y1"]["values"] == [first["accuracy_pct"]]
        assert summary[f"{kind}.gain1_pp"]["values"] == [pytest.approx(first["accuracy_pct"] - x, abs=0.011)]
        # The first round is ranked by X, the second by the first round's model, which is not the final Y.
        assert first["ranked_by"] == loop["models"]["x"] and last["ranked_by"] == first["model"] != last["model"]
        assert loop["figures"]["x"]["frames"]["n"] == report["base"]["frames"]["n"]
    assert summary["oracle_gain_pp"]["mean"] == pytest.approx(
        repeat["oracle"]["accuracy_pct"] - summary["base"]["mean"], abs=0.011)
    assert report["gain_pp"] == summary["uniform.gain_pp"]["mean"]
    work = Path(report["config"]["work_dir"])
    assert json.loads((work / "report.json").read_text())["gain_pp"] == report["gain_pp"]
    assert "Y - X" in (work / "report.md").read_text()


@pytest.mark.parametrize("kind", ["uniform", "semantic"])
def test_corrections_go_through_the_store_into_the_export_y_trains_on(tiny_run, kind):
    loop = tiny_run["report"]["repeats"][0]["loops"][kind]
    assert loop["flipped"] == round(0.25 * POOL_CLIPS * FRAMES_PER_CLIP)
    assert loop["corrections"]["looked"] == POOL_CLIPS * FRAMES_PER_CLIP
    assert [r["corrections"]["looked"] for r in loop["rounds"]] == [POOL_CLIPS * FRAMES_PER_CLIP // 2] * 2
    assert loop["corrections"]["fixed"] == loop["flipped"] and loop["wrong_after_corrections"] == 0
    db = store.open_store(loop["store"], Path(loop["store"]).parent / "media")
    try:
        current = {r["frame_id"]: r for r in store.current_labels(db)}
        events = db.execute("SELECT count(*) FROM label_events WHERE labeler = ? AND field = 'sludge'",
                            [LABELER]).fetchone()[0]
    finally:
        db.conn.close()
    assert events == loop["corrections"]["looked"]  # one sludge event per frame looked at, fix or confirmation
    corrected = {f for f, r in current.items() if r["sludge_labeler"] == LABELER}
    assert len(corrected) == loop["corrections"]["looked"]
    folder = Path(loop["exports"]["corrected_dir"])
    records = {r["frame_id"]: r for r in map(json.loads, (folder / "training.jsonl").read_text().splitlines())}
    assert {f for f, r in records.items() if r["provenance"] == "corrected"} == corrected
    assert all(records[f]["sludge"] == bool(current[f]["sludge"]) for f in corrected)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["snapshot_id"] == loop["exports"]["corrected"]
    # Y's lineage names that export: it was trained on the corrected labels.
    checkpoints = Path(tiny_run["report"]["config"]["checkpoints_dir"])
    lineage = json.loads((checkpoints / f"loop-y-{kind}-r0" / "report" / "finetune.json").read_text())
    assert lineage["export_snapshot"] == loop["exports"]["corrected"] and lineage["model_id"] == loop["models"]["y"]


def test_semantic_noise_falls_on_the_new_styles(tiny_run):
    loops = tiny_run["report"]["repeats"][0]["loops"]
    semantic = loops["semantic"]
    assert semantic["flipped_new_styles"] == semantic["flipped"]


def test_last_line_is_the_headline(tiny_run):
    last = tiny_run["stdout"].strip().splitlines()[-1]
    match = re.fullmatch(r"gain_pp: (-?\d+(?:\.\d+)?)", last)
    assert match, last
    assert float(match.group(1)) == tiny_run["report"]["gain_pp"]


@pytest.mark.parametrize("style, sludge, layout", [("stickers", False, "none"), ("blend_stack", True, "vertical"),
                                                   ("blend_split", True, "horizontal")])
def test_new_styles_carry_their_truth_and_move(style, sludge, layout):
    frames, truth = render_style(style, 3, [0.0, 1.0], (96, 54), "train")
    assert frames.shape == (2, 96, 54, 3) and frames.dtype == np.uint8
    assert (truth.sludge, truth.layout) == (sludge, layout) and style in NEW_STYLES
    assert not np.array_equal(frames[0], frames[1])  # a clip, not a still


def test_a_bad_config_is_refused_before_any_work():
    with pytest.raises(ValueError, match="noise_kinds"):
        check_config(LoopConfig(noise_kinds=("systematic",)))
    with pytest.raises(ValueError, match="strategies"):
        check_config(LoopConfig(strategies=("loudest",)))
    with pytest.raises(ValueError, match="styles"):
        check_config(LoopConfig(style_mix={"plain": 0.5, "sepia": 0.5}))
    with pytest.raises(ValueError, match="rounds must be at least 1"):
        check_config(LoopConfig(rounds=0))
