"""Fine-tuning on a real store's export: a short LoRA run on the embedded model, on CPU.

One run (module fixture) goes the whole way the app's loop goes: synthetic clips encoded with PyAV into a
real SQLite store, raw labels imported, two corrections through correct_label, the training export, a
few LoRA steps, the adapter and the merged checkpoint saved, the version registered with its lineage.
The tests then check each piece against something independent of it: the adapter through
PeftModel.from_pretrained, the merged folder through the app's loader, the eval table through
scikit-learn and by hand.

Each ``--adapt`` option then trains the shipped tiny checkpoints (BLIP-2 and LLaVA) for three steps on a
few frames of the same export: exactly the intended weights move (checked against module lists spelled out
here from the stock classes' layouts), the cached features give the loss of the stock forward, and the
merged folder scores frames as the in-memory PEFT model did.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import annotations as store
from annotations.exports import ExportConfig
from annotations.metrics import card_metrics, video_votes
from core import vocabulary
from core.config import EMBEDDED_BLIP2, EMBEDDED_LLAVA, ModelSpec
from core.engine import load_model, prepare_pixels, score_frames
from core.families import FeatureStage, find_family
from training import synthetic
from training.cli import parse_config
from training.evaluate import format_markdown, load_image, metrics_of, read_export
from training.finetune import (
    FeatureBank,
    FinetuneConfig,
    attach_lora,
    batch_loss,
    check_adapt,
    feature_stage,
    frozen_features,
    make_examples,
    project,
    run,
    save_checkpoint,
    set_train_mode,
    total_steps,
    train,
)
from training.loop_experiment import flip_labels, import_raw_labels, work_queue
from training.tasks import CARD_TASK_MIX, answer_loss, build_training_rows, usable_tasks

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
def exported(tmp_path_factory):
    """A real store with raw labels and two corrections, and its training export under root/export."""
    root = tmp_path_factory.mktemp("finetune")
    db, truth = _build_store(root)
    store.add_labeler(db, "ana", "labeler")
    first = sorted(truth)[:2]
    for frame_id in first:
        store.correct_label(db, frame_id, "sludge", not truth[frame_id].sludge, "ana",
                            seen_revision=store.frame_revision(db, frame_id))
    manifest = store.export_training_set(db, root / "export", config=SPLITS)
    return {"root": root, "db": db, "truth": truth, "manifest": manifest}


@pytest.fixture(scope="module")
def finetuned(exported):
    root, db = exported["root"], exported["db"]
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
    return {**exported, "cfg": cfg, "result": result}


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
    report = json.loads((result.folder / "report" / "finetune.json").read_text())
    for recorded in (lineage, report):
        assert recorded["adapted"]["parts"] == ["lm", "projector"]
        assert recorded["adapted"]["projector"] == "trained whole"
        assert recorded["adapted"]["cached"] == "the projector's input"
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


def test_clip_noise_flips_whole_videos_with_one_layout_each(tmp_path):
    db, truth = _build_store(tmp_path, clips=8, frames_per_clip=4)
    video_of = {f: store.get_frame(db, f)["video_id"] for f in truth}
    raw = flip_labels(truth, 0.25, seed=3, clips=video_of)
    flipped = {f for f in truth if raw[f][0] != truth[f].sludge}
    videos = {video_of[f] for f in flipped}
    # Every frame of a drawn video is flipped, none of the others; just enough videos to reach the share.
    assert flipped == {f for f in truth if video_of[f] in videos}
    assert round(0.25 * len(truth)) <= len(flipped) < round(0.25 * len(truth)) + 4
    for video in videos:  # a video's single-stream frames flipped to sludge all get one layout
        layouts = {raw[f][1] for f in flipped if video_of[f] == video and not truth[f].sludge}
        assert len(layouts) <= 1
    assert all(raw[f] == (truth[f].sludge, truth[f].layout) for f in truth if f not in flipped)
    assert flip_labels(truth, 0.25, seed=3, clips=video_of) == raw  # drawn by the seed


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


# ---------------------------------------------------------------- what --adapt adapts

LM_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PROJECTOR = {"blip2": "language_projection", "llava": "model.multi_modal_projector"}
BASES = {"blip2": EMBEDDED_BLIP2, "llava": EMBEDDED_LLAVA}
OPTIONS = [
    ("blip2", ("lm", "projector-lora")),
    ("blip2", ("qformer",)),
    ("blip2", ("vision",)),
    ("blip2", ("lm", "projector", "qformer", "vision")),
    ("llava", ("lm", "projector")),
    ("llava", ("projector-lora", "vision")),
]


def expected_lora_modules(model, family: str, parts) -> set[str]:
    """The Linear layers each part is to put LoRA on, spelled out from the shipped tiny models' layouts."""
    linears = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    names = set()
    if "lm" in parts:
        names |= {n for n in linears if "language_model." in n and n.rsplit(".", 1)[-1] in LM_PROJECTIONS}
    if "projector-lora" in parts:
        names |= {n for n in linears if n.startswith(PROJECTOR[family])}
    if "qformer" in parts:
        # Four Q-Former layers with cross-attention in every second one (0 and 2): the query, key, value and
        # output dense layers of each self- and cross-attention, not the feed-forward (*_query.dense).
        for i in range(4):
            for kind in ("attention", "crossattention") if i % 2 == 0 else ("attention",):
                names |= {f"qformer.encoder.layer.{i}.{kind}.{x}"
                          for x in ("attention.query", "attention.key", "attention.value", "output.dense")}
    if "vision" in parts and family == "blip2":
        # Four blocks, the Q-Former reads the last one's output: the last two are blocks 2 and 3.
        names |= {f"vision_model.encoder.layers.{i}.{x}" for i in (2, 3)
                  for x in ("self_attn.qkv", "self_attn.projection", "mlp.fc1", "mlp.fc2")}
    if "vision" in parts and family == "llava":
        # Four blocks, but LLaVA reads hidden state -2 (block 2's output): the last two it reads are 1 and 2.
        names |= {f"model.vision_tower.encoder.layers.{i}.{x}" for i in (1, 2)
                  for x in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                            "mlp.fc1", "mlp.fc2")}
    assert names <= linears
    return names


def stock_loss(lm, records, rows) -> float:
    """The answer loss with the image tokens from the family's scoring pass (``encode``), no feature cache."""
    frames = sorted({i for i, _, _ in rows})
    pixels = prepare_pixels(lm, [load_image(records[i]["image"]) for i in frames])
    visual = lm.family.encode(lm.model, pixels).embeds
    ids, att, labels = build_training_rows(lm, [(q, a) for _, q, a in rows])
    rows_to_frame = torch.tensor([frames.index(i) for i, _, _ in rows])
    return answer_loss(lm, visual, rows_to_frame, ids, att, labels).item()


@pytest.fixture(scope="module", params=OPTIONS, ids=lambda option: f"{option[0]}-{'+'.join(option[1])}")
def adapted(request, exported, tmp_path_factory):
    """Three training steps of one --adapt option on a shipped tiny checkpoint, then its merged folder."""
    family, parts = request.param
    export = exported["root"] / "export"
    records = read_export(export, ["train"])[0][:6]
    eval_records = read_export(export, ["val"])[0][:2]
    cfg = FinetuneConfig(adapt=parts, base=str(BASES[family]), max_steps=3, batch_size=3, grad_accum=1,
                         eval_every=100, log_every=0, lr=1e-2, projector_lr=1e-3, progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lm = load_model(ModelSpec(cfg.base))
        expected = expected_lora_modules(lm.model, family, parts)
        stage = feature_stage(cfg.adapt, cfg.vision_blocks)
        # Filled before the adapter exists, as run() does: what it keeps must not depend on what trains.
        bank = FeatureBank(lm, stage=stage)
        bank.fill(records + eval_records)
        peft_model = attach_lora(lm, cfg)
        start = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
        trainable = {n for n, p in lm.model.named_parameters() if p.requires_grad}
        train(lm, peft_model, bank, records, eval_records, cfg)
        changed = {n for n, p in lm.model.named_parameters() if not torch.equal(p, start[n])}
        rows = make_examples(records[:3], CARD_TASK_MIX, np.random.default_rng(5))
        set_train_mode(lm, False)
        with torch.no_grad():
            losses = {"cached": batch_loss(lm, bank, records, rows)[0].item(),
                      "recomputed": batch_loss(lm, FeatureBank(lm, limit_gb=0, stage=stage), records, rows)[0].item(),
                      "stock": stock_loss(lm, records, rows)}
            with peft_model.disable_adapter():
                losses["base"] = stock_loss(lm, records, rows)
        frames, _ = synthetic.make_frames(11, 3)
        in_memory = score_frames(lm, frames)
        folder = tmp_path_factory.mktemp("adapted") / "merged"
        save_checkpoint(lm, peft_model, folder)
        merged = load_model(ModelSpec(str(folder)))
        from_folder = score_frames(merged, frames)
        base_weights = load_model(ModelSpec(cfg.base)).model.state_dict()
    finally:
        torch.set_num_threads(threads)
    return {"family": family, "parts": parts, "expected": expected, "stage": stage, "bank": bank,
            "trainable": trainable, "changed": changed, "losses": losses, "in_memory": in_memory,
            "folder": folder, "merged": merged, "from_folder": from_folder, "base_weights": base_weights}


def test_each_option_trains_exactly_its_weights(adapted):
    lora = {f"{module}.lora_{ab}.default.weight" for module in adapted["expected"] for ab in "AB"}
    whole = {n for n in adapted["trainable"] if ".modules_to_save." in n}
    # Only "projector" trains a whole copy (peft's modules_to_save), and only of the projector.
    assert bool(whole) == ("projector" in adapted["parts"])
    assert all(n.startswith(PROJECTOR[adapted["family"]] + ".modules_to_save.") for n in whole)
    assert adapted["trainable"] == lora | whole
    # Three steps move every LoRA matrix (B first, then A) and the projector copy; nothing else moves.
    assert adapted["changed"] == lora | whole


def test_cached_features_give_the_stock_loss(adapted):
    stage, bank, losses = adapted["stage"], adapted["bank"], adapted["losses"]
    parts = adapted["parts"]
    assert stage == (FeatureStage("vision", 2) if "vision" in parts else FeatureStage("qformer") if "qformer" in parts
                     else FeatureStage())
    cached = next(iter(bank.cache.values()))
    assert bank.keep and len(bank.cache) == 8
    if stage.start == "projector":  # the projector's input: 32 Q-Former queries, or 144 LLaVA patches
        assert cached.shape == ((32, 96) if adapted["family"] == "blip2" else (144, 128))
    else:  # a hidden state of the vision tower, CLS included
        assert cached.shape == ((257, 128) if adapted["family"] == "blip2" else (145, 128))
    # Cached before training, recomputed now, or the family's scoring pass end to end: one loss.
    assert losses["cached"] == pytest.approx(losses["stock"], abs=1e-5)
    assert losses["recomputed"] == pytest.approx(losses["stock"], abs=1e-5)
    # ... and the comparison can fail: the trained adapter changes that loss.
    assert abs(losses["stock"] - losses["base"]) > 1e-3


def test_merged_checkpoint_scores_like_the_peft_model(adapted):
    from peft import PeftConfig

    merged, family = adapted["merged"], adapted["family"]
    assert type(merged.model).__name__ == find_family(family).model_class.__name__ and merged.family.name == family
    for ours, theirs in zip(adapted["in_memory"], adapted["from_folder"]):
        assert theirs.p_sludge == pytest.approx(ours.p_sludge, abs=1e-5)
        assert theirs.layout_scores == pytest.approx(ours.layout_scores, abs=1e-5)
    # The adapter folder still saves, targeting exactly the intended modules.
    config = PeftConfig.from_pretrained(adapted["folder"] / "adapter")
    targeted = {n for n, m in merged.model.named_modules()
                if isinstance(m, torch.nn.Linear) and re.fullmatch(config.target_modules, n)}
    assert targeted == adapted["expected"]
    # The merged weights differ from the base's exactly in the adapted modules (and a projector trained whole).
    base, now = adapted["base_weights"], merged.model.state_dict()
    differ = {k for k in base if not torch.equal(base[k], now[k])}
    whole = {k for k in base if k.startswith(PROJECTOR[family] + ".")} if "projector" in adapted["parts"] else set()
    assert differ == {f"{m}.weight" for m in adapted["expected"]} | whole


def test_qformer_is_refused_on_llava(exported):
    lm = load_model(ModelSpec(str(EMBEDDED_LLAVA)))
    cfg = FinetuneConfig(adapt=("lm", "qformer"), base=str(EMBEDDED_LLAVA), register=False,
                         export=str(exported["root"] / "missing"))
    refusal = r"--adapt qformer: a llava model \(LlavaForConditionalGeneration\) has no Q-Former"
    with pytest.raises(ValueError, match=refusal):
        attach_lora(lm, cfg)
    # run() refuses right after loading the base, before it reads the export (which does not exist here).
    with pytest.raises(ValueError, match=refusal):
        run(cfg)
    with pytest.raises(ValueError, match=r"--vision-blocks 4: a llava model's features are read from 3 vision"):
        check_adapt(("vision",), 4, lm.family, lm.model)
    blip2 = load_model(ModelSpec(str(EMBEDDED_BLIP2)))
    with pytest.raises(ValueError, match=r"--vision-blocks 5: a blip2 model's vision tower has 4 blocks"):
        attach_lora(blip2, FinetuneConfig(adapt=("vision",), vision_blocks=5))


def test_adapt_combinations_and_flags():
    with pytest.raises(ValueError, match="projector trains the projector whole and projector-lora"):
        FinetuneConfig(adapt=("lm", "projector", "projector-lora"))
    with pytest.raises(ValueError, match="name at least one LoRA part"):
        FinetuneConfig(adapt=("projector",))
    with pytest.raises(ValueError, match="--adapt retina: unknown part"):
        FinetuneConfig(adapt=("lm", "retina"))
    with pytest.raises(ValueError, match="--vision-blocks 0"):
        FinetuneConfig(adapt=("vision",), vision_blocks=0)
    assert FinetuneConfig(adapt="lm, qformer").adapt == ("lm", "qformer")
    cfg = parse_config(FinetuneConfig, ["--adapt", "lm", "projector-lora", "vision", "--vision-blocks", "3"])
    assert (cfg.adapt, cfg.vision_blocks) == (("lm", "projector-lora", "vision"), 3)
    with pytest.raises(ValueError, match="choose one"):
        parse_config(FinetuneConfig, ["--adapt", "projector", "projector-lora"])


def test_the_default_is_the_card_recipe():
    cfg = FinetuneConfig()
    assert (cfg.adapt, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout) == (("lm", "projector"), 16, 32, 0.15)
    assert (cfg.lr, cfg.projector_lr) == (2e-4, 2e-5)
    assert feature_stage(cfg.adapt, cfg.vision_blocks) == FeatureStage()
    lm = load_model(ModelSpec(str(EMBEDDED_BLIP2)))
    frames, _ = synthetic.make_frames(2, 2, size=(64, 36))
    pixels = prepare_pixels(lm, frames)
    with torch.no_grad():
        # The default cache holds the Q-Former's output: the projector's input of the scoring pass.
        torch.testing.assert_close(project(lm, frozen_features(lm, pixels)), lm.family.encode(lm.model, pixels).embeds)
    lora = {f"{m}.lora_{ab}.default.weight" for m in expected_lora_modules(lm.model, "blip2", ("lm",)) for ab in "AB"}
    peft_model = attach_lora(lm, cfg)
    trainable = {n.removeprefix("base_model.model.") for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable == lora | {"language_projection.modules_to_save.default.weight",
                                "language_projection.modules_to_save.default.bias"}
    # Dropout on in the LM and the projector only; the vision tower and Q-Former compute as when cached.
    set_train_mode(lm, True)
    training = {n.split(".")[0] for n, m in lm.model.named_modules() if m.training and n}
    assert training == {"language_model", "language_projection"}


def test_run_adapts_the_vision_blocks_and_records_it(exported):
    """run() end to end with the last vision block adapted, on a bank kept at the default stage (as the
    learning-loop experiment shares one): the bank switches to the block's input and the report says so."""
    root = exported["root"]
    base = load_model(ModelSpec(str(EMBEDDED_BLIP2)))
    bank = FeatureBank(base)
    bank.fill(read_export(root / "export", ["train"])[0][:2])
    assert next(iter(bank.cache.values())).shape == (32, 96)
    cfg = FinetuneConfig(export=str(root / "export"), base=str(EMBEDDED_BLIP2), name="vision-test",
                         out_dir=str(root / "checkpoints"), adapt=("lm", "projector", "vision"), vision_blocks=1,
                         max_steps=2, batch_size=8, grad_accum=1, eval_every=2, log_every=0, progress=False,
                         register=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run(cfg, bank=bank)
    finally:
        torch.set_num_threads(threads)
    assert bank.stage == FeatureStage("vision", 1) and next(iter(bank.cache.values())).shape == (257, 128)
    report = json.loads((result.folder / "report" / "finetune.json").read_text())
    assert report["adapted"]["parts"] == ["lm", "projector", "vision"] and report["adapted"]["vision_blocks"] == 1
    assert report["adapted"]["cached"] == "the input of the last 1 vision blocks"
    assert "vision_model" in report["adapted"]["lora_target_modules"]
    assert "LoRA on the last 1 vision blocks" in (result.folder / "README.md").read_text()
    lm = load_model(ModelSpec(str(result.folder)))
    assert type(lm.model).__name__ == "Blip2ForConditionalGeneration" and result.after["frames"]["n"] > 0
