"""The two tiers of the suite: what keeps the fast one free of TensorFlow, Chromium and Ray.

A test is ``slow`` when it needs TensorFlow, Chromium or Ray, or takes over 10 s;
``pytest -m "not slow"`` runs the others. Registered by ``conftest.py``, this plugin

* does not import a module whose ``pytestmark`` marks it slow when the run deselects slow
  tests (importing it may load Ray or Selenium), reading the mark from its source;
* notes which heavy module (:data:`HEAVY`) each test, and each test file's import, loads
  first; ``test_tiers.py``'s last test fails when a test not marked slow loaded one, or
  when a run without slow tests ended with one loaded;
* runs that last test last.
"""

from __future__ import annotations

import ast
import itertools
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

#: The modules the fast tier must not import (Selenium drives Chromium; Playwright
#: would too).
HEAVY = ("tensorflow", "keras", "ray", "selenium", "playwright")
#: The test that checks the notes: it runs last.
CHECK = "test_fast_tier_imports_no_heavy_module"

#: Heavy module -> (the node id of the test or test file that imported it first, slow?).
_LOADED_BY = pytest.StashKey[dict[str, tuple[str, bool]]]()
_ANY_SLOW = pytest.StashKey[bool]()


def heavy_modules() -> set[str]:
    """The modules of :data:`HEAVY` imported in this process."""
    return {name for name in HEAVY if name in sys.modules}


def deselects_slow(markexpr: str) -> bool:
    """Whether ``-m markexpr`` deselects every test marked slow, whatever its other marks."""
    if not markexpr.strip():
        return False
    try:
        from _pytest.mark.expression import Expression

        expression = Expression.compile(markexpr)
    except Exception:  # an older pytest, or an expression pytest itself will reject
        return False
    others = sorted(set(re.findall(r"[A-Za-z_][\w.]*", markexpr)) - {"slow", "and", "or", "not"})
    for values in itertools.product((False, True), repeat=len(others)):
        marks = {*itertools.compress(others, values), "slow"}
        if expression.evaluate(lambda name, /, marks=marks, **kwargs: name in marks):
            return False
    return True


def marks_module_slow(path: Path) -> bool:
    """Whether the test file at ``path`` sets ``pytestmark`` to (a list holding)
    ``pytest.mark.slow``, read from its source without importing it."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return False
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "pytestmark"
            for target in statement.targets
        ):
            return any(
                isinstance(node, ast.Attribute) and node.attr == "slow"
                for node in ast.walk(statement.value)
            )
    return False


def problems(config: pytest.Config) -> list[str]:
    """What the fast tier's rule was broken by in this run, one line each."""
    loaded_by = config.stash.get(_LOADED_BY, {})
    lines = [
        f"{module} was imported by {nodeid}, which is not marked slow"
        for module, (nodeid, slow) in loaded_by.items()
        if not slow
    ]
    if not config.stash.get(_ANY_SLOW, True):
        lines += [
            f"{module} is imported in a run without slow tests"
            for module in sorted(heavy_modules())
            if module not in loaded_by
        ]
    return lines


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_LOADED_BY] = {}


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if (
        collection_path.suffix == ".py"
        and collection_path.name.startswith("test_")
        and deselects_slow(config.option.markexpr)
        and marks_module_slow(collection_path)
    ):
        return True
    return None


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    with _noting(collector.config, collector):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    with _noting(item.config, item):
        return (yield)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.name == CHECK)


def pytest_collection_finish(session: pytest.Session) -> None:
    session.config.stash[_ANY_SLOW] = any(
        item.get_closest_marker("slow") is not None for item in session.items
    )


class _noting:
    """Notes which heavy modules ``node`` (a test, or a test file being imported)
    loads first, and whether it is marked slow."""

    def __init__(self, config: pytest.Config, node: pytest.Item | pytest.Collector):
        self.config, self.node = config, node

    def __enter__(self) -> None:
        self.before = heavy_modules()

    def __exit__(self, *exc: object) -> None:
        loaded_by = self.config.stash[_LOADED_BY]
        for module in sorted(heavy_modules() - self.before):
            slow = self.node.get_closest_marker("slow") is not None
            if not slow and isinstance(self.node, pytest.Module):
                slow = marks_module_slow(Path(self.node.path))
            loaded_by.setdefault(module, (self.node.nodeid, slow))
