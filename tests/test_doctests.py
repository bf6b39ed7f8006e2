"""Every `>>>` example in the library and the benchmarks runs and prints what it says, one test per module.

Examples that need a loaded model, a store with data, or files on disk are marked ``# doctest: +SKIP``;
every other example is checked here. `__main__` modules (command lines) are left out.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "annotations", "ui", "training", "bench")
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def module_names(package: str, folder: Path) -> list[str]:
    """A package and its modules and subpackages, by name, found on disk (collecting imports nothing)."""
    names = [package]
    for info in pkgutil.iter_modules([str(folder)]):
        name = f"{package}.{info.name}"
        if info.ispkg:
            names += module_names(name, folder / info.name)
        elif info.name != "__main__":
            names.append(name)
    return names


MODULES = [name for package in PACKAGES for name in module_names(package, REPO / package)]


def test_every_package_is_collected():
    assert {"core.config", "annotations.schema", "ui.format", "training.synthetic", "bench.clips"} <= set(MODULES)
    assert not [name for name in MODULES if name.endswith("__main__")]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report: list[str] = []
    # DocTestFinder skips what a module merely imports, so each example runs once, in its own module.
    for test in doctest.DocTestFinder().find(module, name):
        runner.run(test, out=report.append)
    if runner.failures:
        pytest.fail(f"{runner.failures} of {runner.tries} examples in {name} failed:\n" + "".join(report),
                    pytrace=False)
