"""Seams for fault-injection tests: moments at which a test may stop the coordinator cold.

The product passes no hooks. Tests pass a :class:`Hooks` to :class:`coordinator.service.Coordinator` to
kill the process, or fail, exactly between two steps whose order a guarantee depends on (for example
between storing a transition and publishing its commands), instead of overriding private methods.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from coordinator.broker import Delivery
from coordinator.machine import Input
from schemas.documents import Release


async def _nothing(*_: object) -> None:
    return None


@dataclass(frozen=True)
class Hooks:
    #: A reply delivery has arrived, before anything is done with it.
    received: Callable[[Delivery], Awaitable[None]] = _nothing
    #: Inputs for one release are about to be decided and stored.
    storing: Callable[[str, Sequence[Input]], Awaitable[None]] = _nothing
    #: A transition is stored; its outbox is about to be published.
    stored: Callable[[Release], Awaitable[None]] = _nothing
