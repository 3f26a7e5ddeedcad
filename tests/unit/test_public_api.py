"""The public surface: sorted ``__all__``, every name importable and documented, the contract."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

CONTRACT = Path(__file__).resolve().parents[3] / "shared" / "tools" / "contract_names.txt"


@pytest.mark.parametrize("package", ["engine", "auth"])
def test_all_is_sorted_complete_and_documented(package: str) -> None:
    module = importlib.import_module(package)
    names = list(module.__all__)
    assert names == sorted(names, key=lambda n: (not n.isupper(), n)) or names == sorted(names)
    for name in names:
        value = getattr(module, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{package}.{name} has no docstring"


def test_api_md_names_are_provided() -> None:
    expected = (
        [
            line.strip()
            for line in CONTRACT.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        if CONTRACT.exists()
        else ["engine.Engine", "engine.v", "auth.AuthConfig", "auth.verify_webhook"]
    )
    for dotted in expected:
        package, _, name = dotted.partition(".")
        assert hasattr(importlib.import_module(package), name), dotted


def test_every_engine_error_pickles_and_copies_with_its_attributes() -> None:
    # Found by review: errors with keyword-only arguments (FunctionNotFound's name, ...)
    # could not be unpickled or copied, so they broke multiprocessing and futures.
    import copy
    import pickle

    import engine.errors as errors

    samples = [
        errors.FunctionNotFound("no such function", name="a:b"),
        errors.DocumentNotFound("gone", id="abc"),
        errors.LimitExceeded("too many", limit="TooManyReads"),
        errors.PaginationError("bad", code="PageSizeTooLarge"),
        errors.IndexNotFound("none", table="t", index="by_x"),
        errors.CorruptionError("broken", problems=["x"]),
        errors.ConvexError({"code": 1}),
        errors.ValidationError("bad value", path=".a"),
        errors.OptimisticConcurrencyControlFailure("busy", table="t", retries=4),
    ]
    for error in samples:
        for clone in (pickle.loads(pickle.dumps(error)), copy.copy(error)):
            assert type(clone) is type(error)
            assert str(clone) == str(error)
            assert vars(clone) == vars(error)


def test_the_error_tree_in_the_docstring_names_every_error() -> None:
    # Found by hunt: SystemTableError was missing from the drawn tree.
    from engine import errors

    tree = errors.__doc__ or ""
    assert "\n    EngineError\n" in tree  # the root
    missing = [n for n in errors.__all__ if n != "EngineError" and f"── {n}" not in tree]
    assert missing == []
