"""One store per test, on each engine: the contract holds for both.

``store`` is parametrized over ``sqlite`` (a file in the test's temporary directory) and ``mongodb`` (the
suite's MongoDB-protocol server, a database of the test's own); ``another`` opens a second store on the
same file or database, as a second coordinator would; ``empty_store`` is another store of the same engine
(another file or database), the target of a copy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from coordinator.store import Store, store_for

ENGINES = ("sqlite", "mongodb")
Opener = Callable[[], Awaitable[Store]]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def open_store(store_url: str, namespace: str) -> AsyncIterator[Opener]:
    """Opens stores on the test's file or database; all are closed, and the data dropped, at the end."""
    opened: list[Store] = []
    database = namespace.replace("-", "_")

    async def open_one() -> Store:
        store = store_for(store_url, database)
        await store.open()
        opened.append(store)
        return store

    yield open_one
    for store in opened[1:]:
        await store.close()
    if opened:
        await opened[0].drop()


@pytest.fixture
async def store(open_store: Opener) -> Store:
    return await open_store()


@pytest.fixture
async def empty_store(engine: str, store_url: str, namespace: str, tmp_path: Path) -> AsyncIterator[Store]:
    """A store of the test's engine apart from ``store``: another file, or another database."""
    url = f"sqlite:///{tmp_path / 'other.db'}" if engine == "sqlite" else store_url
    store = store_for(url, f"{namespace.replace('-', '_')}_other")
    await store.open()
    yield store
    await store.drop()
