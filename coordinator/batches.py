"""Group concurrent work by key so that one worker handles everything queued for a key at once.

The coordinator receives the replies of one release concurrently (one task per delivery, up to the
prefetch). They must be applied one after the other anyway, so instead of taking a lock per reply
and paying one store round trip each, the replies waiting for the same release are handed to the
handler together: while one batch is being stored, the next one gathers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")

BatchHandler = Callable[[str, Sequence[Item]], Awaitable[Sequence[Outcome]]]


@dataclass
class _Waiting(Generic[Item, Outcome]):
    item: Item
    outcome: asyncio.Future[Outcome] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class KeyedBatcher(Generic[Item, Outcome]):
    """``await submit(key, item)`` returns the outcome the handler gave for that item.

    The handler is called with every item queued for ``key`` since its previous call, never twice at
    the same time for one key, and must return one outcome per item, in order. If it raises, every
    item of that batch gets the exception.
    """

    def __init__(self, handler: BatchHandler[Item, Outcome], max_batch: int = 256) -> None:
        self._handler = handler
        self._max_batch = max_batch
        self._queues: dict[str, list[_Waiting[Item, Outcome]]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}

    async def submit(self, key: str, item: Item) -> Outcome:
        waiting: _Waiting[Item, Outcome] = _Waiting(item)
        self._queues.setdefault(key, []).append(waiting)
        if key not in self._workers:
            self._workers[key] = asyncio.create_task(self._drain(key), name=f"batch:{key}")
        return await waiting.outcome

    async def _drain(self, key: str) -> None:
        try:
            while queue := self._queues.get(key):
                batch, self._queues[key] = queue[: self._max_batch], queue[self._max_batch :]
                await self._run(key, batch)
        finally:  # nothing can be queued between the empty check and here: no await in between
            del self._workers[key]
            for waiting in self._queues.pop(key, []):  # only when cancelled
                waiting.outcome.cancel()

    async def _run(self, key: str, batch: list[_Waiting[Item, Outcome]]) -> None:
        try:
            outcomes = await self._handler(key, [w.item for w in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"batch handler gave {len(outcomes)} outcomes for {len(batch)} items")
        except asyncio.CancelledError:
            for waiting in batch:
                waiting.outcome.cancel()
            raise
        except Exception as error:
            for waiting in batch:
                if not waiting.outcome.done():
                    waiting.outcome.set_exception(error)
            return
        for waiting, outcome in zip(batch, outcomes, strict=True):
            if not waiting.outcome.done():
                waiting.outcome.set_result(outcome)

    async def close(self) -> None:
        """Cancel the running workers; their waiting submitters get CancelledError."""
        workers = list(self._workers.values())
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
