"""Average the weights of checkpoints of one architecture into a new checkpoint (a uniform "model soup").

    python -m training.average_checkpoints --out data/candidates/soup \
        models/tiny-vqwen-qformer data/candidates/tiny-vqwen-qformer

Checkpoints continued from one origin lie close together in weight space, and their mean often keeps what each
learned while smoothing what each got wrong by chance; it costs no training. The first checkpoint gives the
tokenizer, processor and configs. The last one gives the training record (its config and lineage, the last
training step), to which the average is appended as a step of its own; the held-out synthetic figures are
measured again on the averaged weights, and the model card is written from them. The real-footage record is
not carried over: measure it with ``bench.bench_real_video --json`` and regenerate the card.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

def average_state_dicts(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of state dicts with the same names and shapes, in the first one's dtypes.

    >>> a, b = {"w": torch.tensor([0.0, 2.0])}, {"w": torch.tensor([1.0, 4.0])}
    >>> average_state_dicts([a, b])["w"].tolist()
    [0.5, 3.0]
    >>> average_state_dicts([a, {"v": torch.zeros(2)}])
    Traceback (most recent call last):
    ...
    ValueError: the checkpoints differ in their weights' names: ['v', 'w']
    """
    first = states[0]
    for state in states[1:]:
        if set(state) != set(first):
            raise ValueError(f"the checkpoints differ in their weights' names: {sorted(set(state) ^ set(first))}")
        for name, tensor in state.items():
            if tensor.shape != first[name].shape:
                raise ValueError(f"the checkpoints differ in the shape of {name}: {tuple(first[name].shape)} "
                                 f"against {tuple(tensor.shape)}")
    return {name: (sum(state[name].double() for state in states) / len(states)).to(first[name].dtype)
            for name in first}


def describe_average(inputs: list[dict], history: list[str]) -> str:
    """The lineage entry of an average: its command, naming each checkpoint by its step in ``history``.

    >>> describe_average([{"history": ["a"]}, {"history": ["a", "b"]}], ["a", "b"])[:62]
    '`python -m training.average_checkpoints --out OUT STEP1 STEP2`'
    """
    steps = []
    for record in inputs:
        last = (record.get("history") or [None])[-1]
        steps.append(str(history.index(last) + 1) if last in history else "?")
    command = "python -m training.average_checkpoints --out OUT " + " ".join(f"STEP{n}" for n in steps)
    return f"`{command}` (the uniform average of the weights of the checkpoints of steps {' and '.join(steps)})"


def average_checkpoints(folders: list[Path], out: Path) -> Path:
    """Write the averaged checkpoint of ``folders`` to ``out``, with its training record and model card."""
    from safetensors.torch import load_file, save_file

    from core.config import EngineConfig, ModelSpec
    from core.engine import load_model
    from core.identity import REAL_FOOTAGE_RECORD, TRAINING_RECORD
    from core.families import UnknownFamilyError, find_family
    from training.model_card import write_model_card
    from training.train_tiny import evaluate_heldout

    if len(folders) < 2:
        raise ValueError("averaging needs at least two checkpoints")
    configs = [json.loads((folder / "config.json").read_text()) for folder in folders]
    kinds = {str(config.get("model_type")) for config in configs}
    try:
        family = find_family(kinds.pop()) if len(kinds) == 1 else None
    except UnknownFamilyError:
        family = None
    if family is None:
        raise ValueError(f"the checkpoints must be of one known architecture, not "
                         f"{sorted({str(c.get('model_type')) for c in configs})}")
    tokenizers = {(folder / "tokenizer.json").read_bytes() if (folder / "tokenizer.json").is_file() else b""
                  for folder in folders}
    if len(tokenizers) != 1:
        raise ValueError("the checkpoints have different tokenizers: only checkpoints continued from one origin "
                         "can be averaged")
    records = [json.loads((folder / TRAINING_RECORD).read_text()) for folder in folders]
    started = time.time()
    state = average_state_dicts([load_file(folder / "model.safetensors") for folder in folders])
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(folders[0], out)
    (out / REAL_FOOTAGE_RECORD).unlink(missing_ok=True)
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    record = dict(records[-1])
    history = list(record.get("history") or [])
    record["history"] = history + [describe_average(records, history)]
    record["averaged"] = {"checkpoints": len(folders), "seconds": round(time.time() - started, 1)}
    lm = load_model(ModelSpec(str(out)), EngineConfig())
    cfg = record["config"]
    record["figures"] = {**record["figures"], **evaluate_heldout(lm, cfg["seed"], cfg["eval_frames"], cfg["pool"])}
    record["parameters"] = sum(p.numel() for p in lm.model.parameters())
    (out / TRAINING_RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n")
    write_model_card(out, family.name)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.average_checkpoints",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder of the averaged checkpoint (replaced if it exists)")
    parser.add_argument("checkpoints", nargs="+", help="checkpoint folders of one architecture; the last one's "
                        "training record is the one continued")
    args = parser.parse_args(argv)
    out = average_checkpoints([Path(folder) for folder in args.checkpoints], Path(args.out))
    print(f"averaged {len(args.checkpoints)} checkpoints into {out}")


if __name__ == "__main__":
    main()
