"""What one state of the explored world is made of, and how far the world is explored (the bound).

A :class:`World` is a tuple of small hashable values, so that states can be hashed and compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple, TypeVar

from schemas.enums import Action, Outcome

T = TypeVar("T")


class Data(IntEnum):
    """What a service holds of one release."""

    NONE = 0
    PROCESSING = 1
    STAGED = 2
    DISCARDED = 3
    PUBLIC = 4

    @property
    def words(self) -> str:
        return _DATA_WORDS[self]


_DATA_WORDS = {
    Data.NONE: "nothing",
    Data.PROCESSING: "it in processing",
    Data.STAGED: "it staged",
    Data.DISCARDED: "nothing (discarded)",
    Data.PUBLIC: "it public",
}


ACTIONS = (Action.INITIALIZE, Action.START, Action.PUBLISH, Action.CANCEL)
SLOT = {action: i for i, action in enumerate(ACTIONS)}

#: A service's part in one release: what it holds, and its recorded outcome per action (in ACTIONS order).
Part = tuple[Data, tuple[Outcome | None, ...]]
EMPTY_PART: Part = (Data.NONE, (None, None, None, None))
#: The parts of a release archived by a re-run (see ``Model._rerun``).
ARCHIVED: tuple[Part, ...] = ()

#: In flight: a command (release, service, action) or a reply (release, service, action, outcome).
Command = tuple[int, int, Action]
Reply = tuple[int, int, Action, Outcome]
Message = Command | Reply


@dataclass(frozen=True)
class Bound:
    """How much of the world is explored. The defaults are the bound the test suite runs."""

    services: int = 2
    #: Releases in a run: the first, then re-runs of an ended one (and, with ``concurrent``, others).
    releases: int = 2
    #: Deliveries kept in flight (delivered again later) and outboxes published twice, per run.
    duplicates: int = 0
    #: Decisions whose outbox the broker does not confirm at once, per run: it stays stored and is
    #: published later (the coordinator's sweeper, or the next coordinator after a crash).
    unconfirmed: int = 1
    #: Messages lost for good, per run (replies; commands too with ``lose_commands``).
    losses: int = 0
    #: Services that may go silent.
    silent: int = 1
    #: Services may reject, fail, and report themselves unhealthy.
    failures: bool = True
    lose_commands: bool = False
    #: Operators may create a release while another is open (else only re-runs, once one has ended).
    concurrent: bool = False

    def describe(self) -> str:
        lost = "messages" if self.lose_commands else "replies"
        faults = "services reject, fail and report unhealthy" if self.failures else "services never fail"
        services = f"{self.services} service{'s' if self.services != 1 else ''}"
        created = " (created while others are open, or re-runs)" if self.concurrent else ""
        return (
            f"{services}, {self.releases} release(s){created}; per run up to {self.duplicates} "
            f"duplicate(s), {self.unconfirmed} unconfirmed outbox(es), {self.losses} lost {lost}, "
            f"{self.silent} silent service(s); {faults}"
        )


class Budget(NamedTuple):
    """The faults a run may still have."""

    duplicates: int
    unconfirmed: int
    losses: int
    silences: int


class World(NamedTuple):
    #: Each release as stored (its canonical id in the Machine), in creation order.
    releases: tuple[int, ...]
    #: Each release's stored outbox: the commands not yet confirmed by the broker. The coordinator's only
    #: state: what it holds in memory is rebuilt from the store after a crash (``tests.explore.model``).
    outbox: tuple[frozenset[Command], ...]
    network: frozenset[Message]
    #: parts[release][service]
    parts: tuple[tuple[Part, ...], ...]
    silent: frozenset[int]
    budget: Budget

    def with_network(self, network: frozenset[Message], budget: Budget) -> World:
        return World(self.releases, self.outbox, network, self.parts, self.silent, budget)

    def with_part(self, r: int, s: int, part: Part, network: frozenset[Message], budget: Budget) -> World:
        parts = replace(self.parts, r, replace(self.parts[r], s, part))
        return World(self.releases, self.outbox, network, parts, self.silent, budget)


class Move(NamedTuple):
    """One step of a run, as the trace shows it."""

    kind: str
    release: int = -1
    service: int = -1
    action: Action | None = None
    #: The reply received or lost, or the service's answer.
    outcome: Outcome | None = None
    #: Delivered and kept in flight (delivered again later) / an outbox published twice.
    keep: bool = False
    #: The coordinator's decision changed the release.
    applied: bool = False
    #: The broker did not confirm the decision's outbox: it stays stored.
    unconfirmed: bool = False
    #: The operator's command, or what the service did.
    op: str = ""
    #: The decision's reason.
    reason: str = ""


def replace(items: tuple[T, ...], index: int, value: T) -> tuple[T, ...]:
    return (*items[:index], value, *items[index + 1 :])
