"""Fine-tuning on a real store's export: a short LoRA run on the embedded model, on CPU.

One run (module fixture) goes the whole way the app's loop goes: synthetic clips encoded with PyAV into a
real SQLite store, raw labels imported, two corrections through correct_label, the training export, a
few LoRA steps, the adapter and the merged checkpoint saved, the version registered with its lineage.
The tests then check each piece against something independent of it: the adapter through
PeftModel.from_pretrained, the merged folder through the app's loader, the eval table through
scikit-learn and by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import annotations as store
from annotations.exports import ExportConfig
from annotations.metrics import card_metrics, video_votes
from core import vocabulary
from core.config import EMBEDDED_BLIP2, ModelSpec
from core.engine import load_model, prepare_pixels, score_frames
from core.families import find_family
from training import synthetic
from training.cli import parse_config
from training.evaluate import format_markdown, metrics_of, read_export
from training.finetune import (
    FinetuneConfig,
    attach_lora,
    frozen_features,
    make_examples,
    project,
    run,
    total_steps,
)
from training.loop_experiment import flip_labels, import_raw_labels, work_queue
from training.tasks import CARD_TASK_MIX, usable_tasks

BASE = EMBEDDED_BLIP2
# 30 % validation and 30 % test videos, so a store of a dozen clips has all three splits.
SPLITS = ExportConfig(val_fraction=0.3, test_fraction=0.3)


def _build_store(root: Path, clips: int = 14, frames_per_clip: int = 4):
    """A store of at least `clips` real encoded clips (more until every split has one), their frames and raw
    labels; returns (db, truth by frame id)."""
    db = store.open_store(root / "store.db", root / "media")
    truth, rows, splits = {}, [], set()
    k = 0
    while k < clips or (splits != {"train", "val", "test"} and k < clips + 20):
        frames, truths = synthetic.make_clip(300 + k, num_frames=12, size=(224, 126))
        path = synthetic.write_clip(root / "clips" / f"clip{k}.mp4", frames)
        video_id = store.add_video(db, path, path.name, {"fps": 12.0})
        picked = list(range(0, 12, 12 // frames_per_clip))
        ids = store.add_frames(db, video_id, frames[picked], [i / 12 for i in picked], picked)
        truth.update({fid: truths[i] for fid, i in zip(ids, picked)})
        rows += [{"video": video_id, "frame_index": i, "sludge": truths[i].sludge, "layout": truths[i].layout}
                 for i in picked]
        splits.add(store.split_for_video(video_id, SPLITS))
        k += 1
    assert splits == {"train", "val", "test"}, f"the clips cover only {splits}; pick other seeds"
    (root / "raw.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    store.import_ground_truth(db, root / "raw.jsonl")
    return db, truth


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    db, truth = _build_store(root)
    store.add_labeler(db, "ana", "labeler")
    first = sorted(truth)[:2]
    for frame_id in first:
        store.correct_label(db, frame_id, "sludge", not truth[frame_id].sludge, "ana",
                            seen_revision=store.frame_revision(db, frame_id))
    manifest = store.export_training_set(db, root / "export", config=SPLITS)
    cfg = FinetuneConfig(
        export=str(root / "export"), base=str(BASE), name="lora-test", out_dir=str(root / "checkpoints"),
        max_steps=6, batch_size=8, grad_accum=2, eval_every=3, log_every=0, lr=3e-3, projector_lr=3e-4,
        tasks_per_frame=2, progress=False, db=str(root / "store.db"), media=str(root / "media"),
    )
    # One thread: these matrices are tiny, and a second thread only waits when the machine is busy.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run(cfg, db=db)
    finally:
        torch.set_num_threads(threads)
    return {"root": root, "db": db, "truth": truth, "manifest": manifest, "cfg": cfg, "result": result}


def test_loss_goes_down(finetuned):
    train = finetuned["result"].train
    assert train.steps == 6 and len(train.losses) == 6
    evals = train.eval_losses
    assert sorted(evals) == [0, 3, 6]
    # The eval rows are fixed, so their loss is comparable across steps: training must have lowered it.
    assert min(evals[3], evals[6]) < evals[0]
    best = min((3, 6), key=evals.get)
    assert (train.best_step, train.best_eval_loss) == (best, evals[best])
    assert np.mean(train.losses[-2:]) < train.losses[0]
    log_path = finetuned["result"].folder / "report" / "train_log.jsonl"
    log = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]


def test_adapter_loads_with_peft_and_matches_the_merged_checkpoint(finetuned):
    from peft import PeftConfig, PeftModel

    folder = finetuned["result"].folder
    adapter = folder / "adapter"
    config = PeftConfig.from_pretrained(adapter)
    assert config.r == 16 and config.lora_alpha == 32 and config.lora_dropout == 0.15
    # Only the language model's projections carry LoRA; the projector is saved whole.
    assert "language_model" in config.target_modules and "vision" not in config.target_modules
    assert config.modules_to_save == ["language_projection"]

    base = load_model(ModelSpec(str(BASE)))
    merged = load_model(ModelSpec(str(folder)))
    frames, _ = synthetic.make_frames(7, 3, pool="holdout")
    text = base.tokenizer.apply_chat_template(vocabulary.build_messages(vocabulary.CLASSIFY), add_generation_prompt=True,
                                              tokenize=False)
    inputs = base.processor(text=[text] * 3, images=list(frames), return_tensors="pt")
    with torch.no_grad():
        before = base.model(**inputs).logits[:, -1]
        peft_model = PeftModel.from_pretrained(base.model, adapter).eval()
        with_adapter = peft_model(**inputs).logits[:, -1]
        from_merged = merged.model(**inputs).logits[:, -1]
    assert not torch.allclose(before, with_adapter, atol=1e-4), "the adapter changes nothing"
    torch.testing.assert_close(with_adapter, from_merged, atol=1e-4, rtol=1e-4)
    names = [n for n, _ in peft_model.named_parameters() if "lora_" in n]
    assert names and all(".language_model." in n for n in names)


def test_merged_folder_loads_through_the_app_and_scores_frames(finetuned):
    from core.registry import find_checkpoints

    result = finetuned["result"]
    lm = load_model(ModelSpec(str(result.folder)))
    assert type(lm.model).__name__ == "Blip2ForConditionalGeneration" and lm.family is find_family("blip2")
    frames, _ = synthetic.make_frames(11, 5)
    scores = score_frames(lm, frames)
    assert len(scores) == 5 and all(0.0 <= s.p_sludge <= 1.0 for s in scores)
    assert result.folder in find_checkpoints([result.folder.parent])
    # Registered under the id the app stores predictions by, with its lineage.
    db = finetuned["db"]
    assert result.model_id == lm.identity.id
    row = db["models"].get(result.model_id)
    lineage = json.loads(row["lineage"])
    assert lineage["export_snapshot"] == finetuned["manifest"]["snapshot_id"]
    assert lineage["base"] == str(BASE) and lineage["base_id"] == result.base_id
    assert lineage["config"]["lora_r"] == 16 and lineage["metrics"]["after"] == result.after
    # Base and new version both scored the held-out frames, so the Review tab can set them side by side.
    test_frames = {r["frame_id"] for r in read_export(finetuned["root"] / "export", ["test"])[0]}
    for model_id in (result.base_id, result.model_id):
        assert store.frames_scored_by(db, model_id) == test_frames


def test_eval_table_matches_scikit_learn_and_a_hand_count(finetuned):
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    report = json.loads((finetuned["result"].folder / "report" / "eval.json").read_text())
    test_records = read_export(finetuned["root"] / "export", ["test"])[0]
    for column in ("before", "after"):
        predictions, metrics = report["predictions"][column], report["metrics"][column]
        assert [p["frame_id"] for p in predictions] == [r["frame_id"] for r in test_records]
        assert [p["sludge"] for p in predictions] == [r["sludge"] for r in test_records]
        y_true = [p["sludge"] for p in predictions]
        y_pred = [p["p_sludge"] >= 0.5 for p in predictions]
        assert [p["pred"] for p in predictions] == y_pred
        frames = metrics["frames"]
        assert frames["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-6)
        assert frames["precision"] == pytest.approx(precision_score(y_true, y_pred, zero_division=0), abs=1e-6)
        assert frames["recall"] == pytest.approx(recall_score(y_true, y_pred, zero_division=0), abs=1e-6)
        assert frames["f1"] == pytest.approx(f1_score(y_true, y_pred, zero_division=0), abs=1e-6)
        tp = sum(t and p for t, p in zip(y_true, y_pred))
        assert (frames["tp"], frames["n"]) == (tp, len(y_true))
        videos = {p["video_id"] for p in predictions}
        hits = 0
        for video in videos:
            rows = [p for p in predictions if p["video_id"] == video]
            hits += (2 * sum(p["sludge"] for p in rows) >= len(rows)) == (2 * sum(p["pred"] for p in rows) >= len(rows))
        assert metrics["videos"]["majority_accuracy"] == pytest.approx(hits / len(videos), abs=1e-6)
    md = (finetuned["result"].folder / "report" / "eval.md").read_text()
    assert "| Frame-level F1 |" in md and "before" in md and "after" in md


def test_card_metrics_against_scikit_learn_on_random_predictions():
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    rng = np.random.default_rng(3)
    y_true = rng.random(200) < 0.6
    y_pred = np.where(rng.random(200) < 0.8, y_true, ~y_true)
    videos = [f"v{i // 8}" for i in range(200)]
    m = card_metrics(y_true.tolist(), y_pred.tolist(), videos)
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average="binary")
    assert (m["frames"]["accuracy"], m["frames"]["precision"], m["frames"]["recall"], m["frames"]["f1"]) == \
        pytest.approx((accuracy_score(y_true, y_pred), p, r, f), abs=1e-6)
    assert m["frames"]["tp"] + m["frames"]["fp"] + m["frames"]["fn"] + m["frames"]["tn"] == 200
    # A tie goes to sludge, as in core.engine.decide_video.
    assert video_votes([True, False, False, False], ["a", "a", "b", "b"]) == {"a": True, "b": False}
    assert metrics_of([])["frames"]["accuracy"] is None
    table = format_markdown({"m": card_metrics([True, False], [True, True], ["a", "b"])})
    assert "| Frame-level accuracy | 50.00 % |" in table


def test_lora_targets_only_the_language_model_of_both_classes(tmp_path):
    from training.tiny_models import TinyConfig, build_tokenizer

    tok = build_tokenizer([vocabulary.CLASSIFY, "yes no vertical pip"], 300)
    model, processor = find_family("llava").build_tiny(tok, TinyConfig(vision_hidden=32, vision_heads=2, vision_mlp=64, text_hidden=32,
                                                   text_heads=2, text_kv_heads=1, text_head_dim=16, text_mlp=64,
                                                   llava_vision_layers=2, text_layers=1))
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    lm = load_model(ModelSpec(str(tmp_path)))
    frames, _ = synthetic.make_frames(1, 2, size=(64, 36))
    pixels = prepare_pixels(lm, frames)
    with torch.no_grad():
        expected = lm.family.encode(lm.model, pixels).embeds
    torch.testing.assert_close(project(lm, frozen_features(lm, pixels)), expected)
    peft_model = attach_lora(lm, FinetuneConfig())
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    # CLIP's vision tower has q_proj / k_proj / v_proj too; none of them may get an adapter.
    assert trainable and not [n for n in trainable if "vision_tower" in n]
    assert sum("lora_" in n for n in trainable) == 2 * 7  # one layer x seven projections x (A, B)
    assert {n for n in trainable if "lora_" not in n} and all(lm.family.projector.split(".")[-1] in n
                                                              for n in trainable if "lora_" not in n)


def test_task_mix_skips_what_a_frame_cannot_answer():
    single = synthetic.FrameTruth(False, "none", "", "Not sludge.")
    assert usable_tasks(single, CARD_TASK_MIX) == ["classify", "explain", "refuse"]
    rows = make_examples([{"sludge": True, "layout": "pip", "description": "a cat", "explanation": "x"}] * 300,
                         CARD_TASK_MIX, np.random.default_rng(0), tasks_per_frame=2)
    assert len(rows) == 600
    pairs = [(rows[k][1], rows[k + 1][1]) for k in range(0, 600, 2)]
    assert all(a != b for a, b in pairs)
    share = np.mean([q == vocabulary.EXPLAIN for _, q, _ in rows[::2]])
    assert 0.28 < share < 0.42  # 35 % of first draws are the coupled classify+explain task
    assert total_steps(8487, FinetuneConfig()) == 670


def test_config_from_json_file_and_flags(tmp_path):
    path = tmp_path / "ft.json"
    path.write_text(json.dumps({"export": "e", "lr": 1e-4, "lora_targets": ["q_proj", "v_proj"]}))
    cfg = parse_config(FinetuneConfig, ["--config", str(path), "--lr", "5e-4", "--register", "false",
                                        "--task-mix", '{"classify": 1.0}', "--base-revision", "main"])
    assert (cfg.export, cfg.lr, cfg.register, cfg.task_mix, cfg.base_revision) == \
        ("e", 5e-4, False, {"classify": 1.0}, "main")
    assert cfg.lora_targets == ("q_proj", "v_proj") and cfg.projector_lr == 2e-5


def test_scripted_labeler_fixes_flipped_labels_through_the_queue(tmp_path):
    db, truth = _build_store(tmp_path, clips=6, frames_per_clip=4)
    raw = flip_labels(truth, 0.25, seed=1)
    flipped = [f for f in truth if raw[f][0] != truth[f].sludge]
    assert len(flipped) == round(0.25 * len(truth))
    import_raw_labels(db, raw, tmp_path / "noisy.jsonl")  # the noisy labels replace the imported truth
    # A model that knows the truth disagrees with exactly the flipped labels.
    store.register_model(db, "oracle@1", "oracle", "1")
    ids = sorted(truth)
    store.record_predictions(db, "oracle@1", ids, [0.9 if truth[f].sludge else 0.1 for f in ids],
                             [{name: float(name == truth[f].layout) for name in vocabulary.LAYOUTS} for f in ids])
    store.add_labeler(db, "bot", "reviewer")
    done = work_queue(db, "bot", truth, budget=len(flipped) + 2, strategies=("disagreement", "uncertain"),
                      model_id="oracle@1")
    assert done["looked"] == len(flipped) + 2 and done["fixed"] == len(flipped)
    assert done["by_strategy"] == {"disagreement": len(flipped), "uncertain": 2}
    current = {r["frame_id"]: r["sludge"] for r in store.current_labels(db)}
    assert all(current[f] == truth[f].sludge for f in truth)
    events = db.execute("SELECT count(*) FROM label_events WHERE labeler = 'bot' AND field = 'sludge'").fetchone()[0]
    assert events == len(flipped) + 2


def test_semantic_noise_flips_the_preferred_frames_first():
    truth = {i: synthetic.FrameTruth(i % 2 == 0, "pip" if i % 2 == 0 else "none", "", "") for i in range(1, 41)}
    misread = {2, 4, 6, 8, 10, 12}
    raw = flip_labels(truth, 0.25, seed=3, prefer=misread)  # 10 flips: all 6 preferred, then 4 others
    flipped = {f for f in truth if raw[f][0] != truth[f].sludge}
    assert len(flipped) == 10 and misread <= flipped
    assert all(raw[f] == (False, "none") for f in misread)
    assert flip_labels(truth, 0.25, seed=3, prefer=misread) == raw  # the seed fixes the draw
    few = flip_labels(truth, 0.1, seed=3, prefer=misread)  # fewer flips than preferred frames
    assert {f for f in truth if few[f][0] != truth[f].sludge} < misread
