"""Like sqlite-utils' test_docs: every tab of the app and every command line is documented in README.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")
SPACE_CARD = (REPO / "Spaces" / "README.md").read_text(encoding="utf-8")


def subcommands(parser) -> list[str]:
    actions = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return sorted(name for a in actions for name in a.choices)


def script_modules() -> list[str]:
    """`python -m training.<name>` for every training script with a __main__ block."""
    found = []
    for path in sorted((REPO / "training").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
                found.append(f"python -m training.{path.stem}")
    return found


@pytest.fixture(scope="module")
def tabs(tmp_path_factory):
    """The tab labels of the app as built, on a throwaway store."""
    import gradio as gr

    from core.config import load_settings
    from ui import TABS, build_demo
    from ui.services import build_services

    root = tmp_path_factory.mktemp("docs")
    settings = load_settings({"SLUDGELENS_DB": str(root / "s.db"), "SLUDGELENS_MEDIA": str(root / "media")})
    demo = build_demo(build_services(settings))
    labels = [block.label for block in demo.blocks.values() if isinstance(block, gr.Tab)]
    assert labels == list(TABS)
    return labels


def test_every_tab_has_a_section(tabs):
    for label in tabs:
        assert re.search(rf"^### {label}$", README, re.M), f"README.md has no '### {label}' section"


def test_every_core_command_is_documented():
    from core.__main__ import build_parser

    for name in subcommands(build_parser()):
        assert f"python -m core {name}" in README, f"`python -m core {name}` is not in README.md"


def test_every_store_command_is_documented():
    from annotations.__main__ import build_parser
    from core.config import load_settings

    for name in subcommands(build_parser(load_settings({}))):
        assert f"python -m annotations {name}" in README, f"`python -m annotations {name}` is not in README.md"


@pytest.mark.parametrize("command", script_modules())
def test_every_training_script_is_documented(command):
    assert command in README, f"`{command}` is not in README.md"


def test_the_api_endpoints_and_the_space_are_documented():
    from gradio_client import Client  # noqa: F401  (the README example imports it)

    for endpoint in ("/analyze", "/correct_label", "/metrics"):
        assert f"`{endpoint}`" in README
    assert "<!-- api-example -->" in README and "## Deploying as a Hugging Face Space" in README
    front = SPACE_CARD.split("---")[1]
    for key in ("sdk: gradio", "sdk_version:", "app_file: app.py", "python_version:", "hf_oauth: true",
                "suggested_hardware:", "models:"):
        assert key in front, f"Spaces/README.md front matter has no {key!r}"
    import gradio

    assert f"sdk_version: {gradio.__version__}" in front
