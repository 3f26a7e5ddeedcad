"""The ``Example::`` blocks of the docstrings in ``engine`` and ``auth`` run and print
what they show (STYLE.md: every public docstring carries an example; these keep them
true)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from types import ModuleType

import pytest

import auth
import engine


def _modules() -> list[ModuleType]:
    found = []
    for package in (engine, auth):
        found.append(package)
        for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
            found.append(importlib.import_module(info.name))
    return found


def _with_examples() -> list[ModuleType]:
    finder = doctest.DocTestFinder()
    return [m for m in _modules() if any(t.examples for t in finder.find(m))]


@pytest.mark.parametrize("module", _with_examples(), ids=lambda m: m.__name__)
def test_docstring_examples_run(module: ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=True, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {module.__name__} failed"


def test_there_are_examples_to_run() -> None:
    assert len(_with_examples()) >= 5
