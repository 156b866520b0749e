"""KeyedBatcher: items queued for one key while its handler runs are handled together, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from coordinator.batches import KeyedBatcher


async def test_items_queued_meanwhile_form_the_next_batch_in_order() -> None:
    calls: list[tuple[str, list[int]]] = []
    gate = asyncio.Event()

    async def handler(key: str, items: Sequence[int]) -> list[int]:
        calls.append((key, list(items)))
        await gate.wait()
        return [i * 10 for i in items]

    batcher: KeyedBatcher[int, int] = KeyedBatcher(handler)
    first = asyncio.create_task(batcher.submit("a", 1))
    await asyncio.sleep(0)  # the worker takes [1] and waits on the gate
    rest = [asyncio.create_task(batcher.submit("a", i)) for i in (2, 3, 4)]
    other = asyncio.create_task(batcher.submit("b", 5))
    await asyncio.sleep(0.01)
    gate.set()
    assert await first == 10
    assert [await t for t in rest] == [20, 30, 40]
    assert await other == 50
    assert calls == [("a", [1]), ("b", [5]), ("a", [2, 3, 4])]


async def test_one_key_is_never_handled_twice_at_once() -> None:
    running: set[str] = set()
    overlaps = 0

    async def handler(key: str, items: Sequence[int]) -> list[int]:
        nonlocal overlaps
        overlaps += key in running
        running.add(key)
        await asyncio.sleep(0.001)
        running.discard(key)
        return list(items)

    batcher: KeyedBatcher[int, int] = KeyedBatcher(handler, max_batch=3)
    results = await asyncio.gather(*(batcher.submit(f"k{i % 3}", i) for i in range(60)))
    assert results == list(range(60))
    assert overlaps == 0


async def test_a_failing_batch_fails_its_items_only() -> None:
    async def handler(key: str, items: Sequence[int]) -> list[int]:
        if 13 in items:
            raise ValueError("unlucky")
        return list(items)

    batcher: KeyedBatcher[int, int] = KeyedBatcher(handler)
    bad, good = await asyncio.gather(batcher.submit("x", 13), batcher.submit("y", 1), return_exceptions=True)
    assert isinstance(bad, ValueError)
    assert good == 1
    assert await batcher.submit("x", 2) == 2  # the key still works afterwards


async def test_a_handler_that_loses_outcomes_is_an_error() -> None:
    async def handler(key: str, items: Sequence[int]) -> list[int]:
        return []

    batcher: KeyedBatcher[int, int] = KeyedBatcher(handler)
    with pytest.raises(RuntimeError, match="0 outcomes for 1 items"):
        await batcher.submit("x", 1)


async def test_close_cancels_waiting_submitters() -> None:
    async def handler(key: str, items: Sequence[int]) -> list[int]:
        await asyncio.sleep(60)
        return list(items)

    batcher: KeyedBatcher[int, int] = KeyedBatcher(handler)
    waiting = asyncio.create_task(batcher.submit("x", 1))
    await asyncio.sleep(0.01)
    await batcher.close()
    with pytest.raises(asyncio.CancelledError):
        await waiting
