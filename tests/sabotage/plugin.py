"""The sabotage matrix, as a plugin of the suite (see ``tests/conftest.py``).

A guarantee's own test is decorated with :func:`caught_by`, naming the variants of ``bench/sabotage.py``
that remove that guarantee. The test then runs once intact (``[intact]``, it must pass) and once under each
variant (``[sabotage:NAME]``, it must fail on an assertion: ``xfail(strict=True)``, so a sabotaged run
that passes fails the suite). The ``sabotage`` fixture applies the variant before any other fixture of the
test (a store opened under ``skip-unique-check`` has no unique index) and restores it after the last.

A sabotaged run uses the in-memory broker and the SQLite engine where the test runs on several: the
guarantee does not depend on them, and the matrix stays fast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from bench.sabotage import VARIANTS

Test = TypeVar("Test", bound=Callable[..., object])

#: Variant -> the tests (``module::function``) that must fail under it, filled as test modules are imported.
CATCHERS: dict[str, list[str]] = {}
#: How a sabotaged run must fail: a failed assertion or ``pytest.raises``, not an error of its own.
_CAUGHT = (AssertionError, pytest.fail.Exception)
#: Parameters a sabotaged run does not take: the guarantee is shown once, on the fastest combination.
_SKIPPED_WHEN_SABOTAGED = {"broker_kind": "rabbitmq", "engine": "mongodb"}


def caught_by(*names: str) -> Callable[[Test], Test]:
    """Run the decorated test intact, then under each named variant, where it must fail."""
    unknown = [name for name in names if name not in VARIANTS]
    assert not unknown, f"not variants of bench/sabotage.py: {unknown}"

    def mark(test: Test) -> Test:
        for name in names:
            CATCHERS.setdefault(name, []).append(f"{test.__module__}::{test.__name__}")
        runs = [pytest.param(None, id="intact")]
        runs += [
            pytest.param(
                name,
                id=f"sabotage:{name}",
                marks=pytest.mark.xfail(
                    strict=True, raises=_CAUGHT, reason=f"{name}: {VARIANTS[name].description}"
                ),
            )
            for name in names
        ]
        parametrized = pytest.mark.parametrize("sabotage", runs, indirect=True)(test)
        return pytest.mark.usefixtures("sabotage")(parametrized)  # type: ignore[no-any-return]

    return mark


@pytest.fixture
def sabotage(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The variant this run of the test is under (None: intact), applied for the whole test."""
    name: str | None = getattr(request, "param", None)
    if name is None:
        yield None
        return
    with VARIANTS[name].patch():
        yield name


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        skipped = params.get("sabotage") is not None and any(
            params.get(key) == value for key, value in _SKIPPED_WHEN_SABOTAGED.items()
        )
        (dropped if skipped else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
