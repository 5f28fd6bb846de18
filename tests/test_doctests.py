"""Every `>>>` example in the package runs and prints what its docstring says.

Each module of `workbench` (found with pkgutil.walk_packages, so new modules are checked
without touching this file) is imported and its docstrings run through `doctest`; any failing
example fails the test for that module, with doctest's report in the message.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import workbench


def module_names() -> list[str]:
    """Every module and package under `workbench`, imported names first (walk_packages imports packages)."""
    return ["workbench"] + [info.name for info in pkgutil.walk_packages(workbench.__path__, "workbench.")]


MODULES = module_names()


def test_walk_finds_the_modules_with_examples():
    """A guard that the walk itself works: modules known to carry examples are in it."""
    for name in ("workbench.core.inputs", "workbench.core.lineage", "workbench.capture.store"):
        assert name in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str):
    module = importlib.import_module(name)
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    for test in sorted(tests, key=lambda t: t.name):
        runner.run(test, out=report.append)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{results.failed} of {results.attempted} examples failed in {name}:\n" + "".join(report)
