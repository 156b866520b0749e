"""What the example services share: knobs read from the environment, paced simulated work, a staging area.

Each example reads three environment variables named after it (``PORTAL_SECONDS``, ``PORTAL_FAIL``,
``PORTAL_REJECT`` for the portal, and so on):

``<PREFIX>_SECONDS``  how long processing takes in total
``<PREFIX>_FAIL``     if set, processing fails half way with this text as the error
``<PREFIX>_REJECT``   if set, every release is rejected at initialization with this reason

They are read when a step runs (not when the service starts), so tests can change them per release.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from task_sdk import ProgressReporter, Reject


@dataclass(frozen=True)
class Knobs:
    """How an example service behaves, from ``<PREFIX>_SECONDS``, ``_FAIL`` and ``_REJECT``."""

    seconds: float
    fail: str | None = None
    reject: str | None = None

    @classmethod
    def from_env(cls, prefix: str, default_seconds: float) -> Knobs:
        raw = os.environ.get(f"{prefix}_SECONDS", "").strip()
        try:
            seconds = float(raw) if raw else default_seconds
        except ValueError:
            raise ValueError(f"{prefix}_SECONDS must be a number of seconds, not {raw!r}") from None
        if seconds < 0:
            raise ValueError(f"{prefix}_SECONDS must not be negative, not {raw!r}")
        return cls(
            seconds=seconds,
            fail=os.environ.get(f"{prefix}_FAIL") or None,
            reject=os.environ.get(f"{prefix}_REJECT") or None,
        )

    def check_accept(self) -> None:
        """Raise :class:`~task_sdk.Reject` if ``<PREFIX>_REJECT`` is set."""
        if self.reject:
            raise Reject(self.reject)


#: One chunk of simulated work: does the quick, real part of the chunk and returns its progress note.
Chunk = Callable[[], str]


async def work_through(chunks: Sequence[Chunk], progress: ProgressReporter, knobs: Knobs) -> None:
    """Run ``chunks`` spread over ``knobs.seconds``, reporting progress after each one.

    The pause before each chunk stands for the slow part (reading, indexing, copying). It is an
    ``await``, so a cancel command stops the work there: the SDK cancels the coroutine, and the
    service's ``cancel`` step then discards whatever was staged. With ``knobs.fail`` set, the work
    fails once past half way.
    """
    if not chunks:
        return
    pause = knobs.seconds / len(chunks)
    for done, chunk in enumerate(chunks, 1):
        await asyncio.sleep(pause)
        if knobs.fail and done * 2 > len(chunks):
            raise RuntimeError(knobs.fail)
        note = chunk()
        await progress.report(100 * done / len(chunks), note)


@dataclass
class StagingArea:
    """Stands in for a service's storage: what is staged per release, and what is public.

    ``staged`` maps a release id to ``{study: staged name}``; publishing copies a release's entry
    into ``public`` (``{study: public name}``), canceling drops it.
    """

    staged: dict[str, dict[str, str]] = field(default_factory=dict)
    public: dict[str, str] = field(default_factory=dict)

    def stage(self, release_id: str, items: dict[str, str]) -> None:
        self.staged[release_id] = dict(items)

    def make_public(self, release_id: str) -> dict[str, str]:
        """Make the release's staged items public and return them; ``RuntimeError`` if none are staged."""
        items = self.staged.get(release_id)
        if items is None:
            raise RuntimeError(f"nothing staged for {release_id}: was it processed by this instance?")
        self.public.update(items)
        return items

    def discard(self, release_id: str) -> dict[str, str]:
        """Drop what was staged for the release (nothing if nothing was); return it."""
        return self.staged.pop(release_id, {})
