"""Averaging checkpoints: the mean of real checkpoints' weights, their lineage, and a card from the new figures."""

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from core.config import EMBEDDED_BLIP2, EMBEDDED_LLAVA, ModelSpec
from core.engine import load_model, score_frames
from training import synthetic
from training.average_checkpoints import average_checkpoints, main


def copy_checkpoint(source, folder, shift: float = 0.0, note: str = ""):
    """A copy of an embedded checkpoint, its weights shifted by `shift`, its lineage ending in `note`, and
    its held-out evaluation made small so the test stays fast."""
    shutil.copytree(source, folder)
    if shift:
        state = load_file(folder / "model.safetensors")
        save_file({k: v + shift if v.is_floating_point() else v for k, v in state.items()},
                  folder / "model.safetensors", metadata={"format": "pt"})
    record = json.loads((folder / "training.json").read_text())
    record["config"]["eval_frames"] = 8
    if note:
        record["history"] = record["history"] + [note]
    (folder / "training.json").write_text(json.dumps(record))
    return folder


def test_an_average_is_the_mean_of_the_weights_and_a_step_of_its_lineage(tmp_path):
    first = copy_checkpoint(EMBEDDED_BLIP2, tmp_path / "a")
    second = copy_checkpoint(EMBEDDED_BLIP2, tmp_path / "b", shift=0.01, note="`a continued step` (seed 9)")
    out = average_checkpoints([first, second], tmp_path / "soup")
    a, b, mean = (load_file(f / "model.safetensors") for f in (first, second, out))
    for name in a:
        assert mean[name].dtype == a[name].dtype
        assert (mean[name].double() - (a[name].double() + b[name].double()) / 2).abs().max() < 1e-6, name
    record = json.loads((out / "training.json").read_text())
    history = record["history"]
    assert history[-2] == "`a continued step` (seed 9)"
    assert history[-1].endswith(f"(the uniform average of the weights of the checkpoints of steps {len(history) - 2} "
                                f"and {len(history) - 1})")
    assert record["averaged"]["checkpoints"] == 2 and record["figures"]["heldout_synthetic"]["frames"] == 8
    assert not (out / "real_footage.json").exists()  # measured on other weights: not carried over
    card = (out / "README.md").read_text()
    assert "uniform average of 2 checkpoints" in card and "The last training step, in full" in card
    # The average is a checkpoint like any other: the app's loader takes it and it scores frames.
    frames, _ = synthetic.make_frames(1, 2, size=(96, 54))
    assert len(score_frames(load_model(ModelSpec(str(out))), frames)) == 2


def test_checkpoints_of_different_architectures_are_refused(tmp_path, capsys):
    blip2 = copy_checkpoint(EMBEDDED_BLIP2, tmp_path / "blip2")
    llava = copy_checkpoint(EMBEDDED_LLAVA, tmp_path / "llava")
    with pytest.raises(ValueError, match="one known architecture"):
        average_checkpoints([blip2, llava], tmp_path / "out")
    other = copy_checkpoint(EMBEDDED_BLIP2, tmp_path / "other-tokenizer")
    (other / "tokenizer.json").write_text((other / "tokenizer.json").read_text().replace('"yes"', '"yes!"', 1))
    with pytest.raises(ValueError, match="different tokenizers"):
        average_checkpoints([blip2, other], tmp_path / "out")
    with pytest.raises(ValueError, match="at least two"):
        average_checkpoints([blip2], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    main(["--out", str(tmp_path / "cli"), str(blip2), str(blip2)])
    assert "averaged 2 checkpoints" in capsys.readouterr().out
    assert load_file(tmp_path / "cli" / "model.safetensors").keys() == load_file(blip2 / "model.safetensors").keys()
