"""What the state machine answers: a verdict, the release after it, and why."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from schemas.documents import (
    OutboxEntry,
    Release,
)

# --------------------------------------------------------------------------- output


class Verdict(StrEnum):
    APPLIED = "applied"
    #: The same answer was already recorded: nothing changes.
    DUPLICATE = "duplicate"
    #: The message belongs to a step the release is no longer in: nothing changes.
    STALE = "stale"
    #: An operator command or a message that is not allowed now: nothing changes.
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    release: Release
    reason: str
    #: Messages this decision added to the outbox (already part of ``release.outbox``).
    messages: tuple[OutboxEntry, ...] = ()
    #: Messages to send once, without storing anything: the release does not change (an ended release
    #: never does). The input that caused them causes them again if they are lost.
    unstored: tuple[OutboxEntry, ...] = ()

    @property
    def applied(self) -> bool:
        return self.verdict is Verdict.APPLIED
