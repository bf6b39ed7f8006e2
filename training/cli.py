"""Config dataclasses from command-line flags or a JSON file: one flag per field, flags win over the file.

    cfg = parse_config(FinetuneConfig, ["--export", "data/exports/run1", "--lr", "1e-4"], prog="finetune")
    cfg = parse_config(FinetuneConfig, ["--config", "finetune.json", "--device", "cuda"])
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path


def parse_bool(text: str) -> bool:
    """"true"/"false" (also 1/0, yes/no) as a bool, for flags like ``--register false``.

    >>> parse_bool("no"), parse_bool("True")
    (False, True)
    """
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def _optional(text: str) -> str | None:
    return None if text.strip().lower() in ("", "none", "null") else text


def _flag_kwargs(hint) -> dict:
    """argparse keyword arguments for a field's type hint."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return {"type": _optional} if inner == [str] else _flag_kwargs(inner[0])
    if origin is tuple:
        return {"nargs": "+", "type": args[0] if args and args[0] is not Ellipsis else str}
    if origin is dict or hint is dict:
        return {"type": json.loads, "metavar": "JSON"}
    if hint is bool:
        return {"type": parse_bool, "metavar": "true|false"}
    return {"type": hint}


def build_parser(cls, prog: str, description: str = "") -> argparse.ArgumentParser:
    """A parser with ``--config FILE.json`` and one ``--field-name`` flag per dataclass field.

    >>> @dataclasses.dataclass
    ... class Config:
    ...     lr: float = 2e-4
    ...     epochs: float = 10.0
    >>> build_parser(Config, "finetune").parse_args(["--lr", "1e-4"]).lr
    0.0001
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", help=f"JSON file with {cls.__name__} fields (flags override it)")
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        parser.add_argument("--" + field.name.replace("_", "-"), dest=field.name, default=None,
                            **_flag_kwargs(hints[field.name]))
    return parser


def parse_config(cls, argv: list[str] | None = None, prog: str = "", description: str = ""):
    """Build `cls` from its defaults, then the ``--config`` JSON file, then the flags given.

    >>> @dataclasses.dataclass
    ... class Config:
    ...     lr: float = 2e-4
    ...     epochs: float = 10.0
    >>> parse_config(Config, ["--epochs", "2"])
    Config(lr=0.0002, epochs=2.0)
    """
    args = vars(build_parser(cls, prog, description).parse_args(argv))
    path = args.pop("config")
    values = json.loads(Path(path).read_text()) if path else {}
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise SystemExit(f"{path}: unknown fields {sorted(unknown)}; {cls.__name__} has {sorted(names)}")
    values.update({k: v for k, v in args.items() if v is not None})
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if typing.get_origin(hints[name]) is tuple and isinstance(value, list):
            values[name] = tuple(value)
    return cls(**values)
