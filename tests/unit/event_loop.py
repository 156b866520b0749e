"""Synchronising in-process tests on the event loop itself, turn by turn, with no clock involved."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def turns_until(condition: Callable[[], bool], turns: int = 1000) -> None:
    """Run the event loop one turn at a time until ``condition`` holds; AssertionError after ``turns``."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"the condition did not hold within {turns} turns of the event loop")


async def run_turns(turns: int) -> None:
    """Let everything that is ready run for ``turns`` turns of the event loop."""
    for _ in range(turns):
        await asyncio.sleep(0)
