"""Every step the world may take from a state: the real state machine inside a model of the
coordinator, the operators, the broker and the task services.

Real: every release decision is ``coordinator.machine.decide()`` on real release documents
(:mod:`tests.explore.machine`), and every version comes from ``coordinator.versioning``.

Modelled, after the code it mirrors:

* **The coordinator** (``coordinator/releases.py``, ``sweeper.py``, ``creation.py``, and the recovery
  in ``service.py``). It decides an input, stores the new release with the commands the decision caused
  in its outbox (one update), publishes the outbox with confirms, and acks the input; inputs of one
  release are decided one at a time, publication included. The broker
  may not confirm a publication (``Bound.unconfirmed``): the outbox stays stored and the coordinator
  goes on; its sweeper publishes it later. It may also die after storing a decision and before acking
  its input, which is then delivered again (a duplicate). Deadlines are
  armed from the stored release (``next_deadline``) and may pass at any moment. A created release is
  begun (``Begin``; services without a consumer, here the silent ones, are unhealthy); a service that
  reports itself unhealthy is applied to the releases that initialize.
* **Crashes of the coordinator** are those two faults; there is no crash move of its own, because it
  would change nothing. A crash loses what the coordinator holds in memory: its copies of releases and
  its deadlines (recovery reads and arms them again from the store), its publications under way and its
  list of outboxes to publish again (recovery publishes every stored outbox: the releases whose
  publication the crash cut short, and those the sweeper would have retried, so the same list), and the
  inputs it had not acked (delivered again). A crash between storing a decision and publishing it is
  therefore the unconfirmed outbox, published later by the sweeper or by recovery (one move, ``outbox``),
  and a crash before the ack is the duplicate delivery. So a state holds nothing of the coordinator but
  what is stored, and its outboxes are what it will publish.
* **Operators** hold, unhold, publish (given the highest final version stored), cancel, and re-run an
  ended release (a new release, its tentative version from the last created one), at any moment; with
  ``Bound.concurrent`` they also create a release while another is open, so that releases run (and
  publish) at the same time, each decided one input at a time. Creations are one after the other, as
  ``Creation`` does them (a lock, and the store's unique index on tentative versions).
* **The broker.** Messages in flight form a set: any may be delivered next (delayed past later ones),
  or delivered and kept in flight (delivered again later, a duplicate: its consumer died before the
  ack). A reply may be lost for good. A command the broker did not confirm is not lost: it stays in the
  outbox (above); one whose confirm was lost is in flight and still in the outbox (published twice).
  ``Bound.lose_commands`` also lets confirmed commands be lost (a broker that dead-letters them), which
  the design does not claim to survive.
* **Task services**: :mod:`tests.explore.services`. A service may also go silent: from then on it takes
  nothing and answers nothing (its commands wait in its queue).
"""

from __future__ import annotations

from collections.abc import Iterator

from coordinator.versioning import next_tentative
from schemas.enums import Action, ReleaseState
from tests.explore import services
from tests.explore.machine import SERVICE_NAMES, EventKey, Machine
from tests.explore.world import (
    ARCHIVED,
    EMPTY_PART,
    Bound,
    Budget,
    Command,
    Data,
    Message,
    Move,
    Reply,
    World,
    replace,
)

Successor = tuple[Move, World]
OPERATIONS = ("hold", "unhold", "publish", "cancel")


class Model:
    def __init__(self, bound: Bound, *, cross_check: bool = False) -> None:
        if not 1 <= bound.services <= len(SERVICE_NAMES):
            raise ValueError(f"services must be 1 to {len(SERVICE_NAMES)}, not {bound.services}")
        if bound.releases < 1:
            raise ValueError(f"releases must be at least 1, not {bound.releases}")
        self.bound = bound
        self.services = SERVICE_NAMES[: bound.services]
        self.machine = Machine(self.services, cross_check=cross_check)
        self._applicable: dict[tuple[int, str | None], tuple[tuple[str, EventKey], ...]] = {}
        #: Results of the state checks that read only the stored releases, by releases.
        self.checked_releases: dict[tuple[str, tuple[int, ...]], str | None] = {}

    def initial(self) -> World:
        """One release just created (stored, ``waiting``), nothing sent yet."""
        b = self.bound
        return World(
            releases=(self.machine.create(0, next_tentative(None), None),),
            outbox=(frozenset(),),
            network=frozenset(),
            parts=((EMPTY_PART,) * b.services,),
            silent=frozenset(),
            budget=Budget(b.duplicates, b.unconfirmed, b.losses, b.silent),
        )

    def moves(self, w: World) -> Iterator[Successor]:
        in_flight = sorted(w.network)  # one order every time (sets iterate by hash): the same trace
        yield from self._coordinator(w, in_flight)
        yield from self._operators(w)
        yield from self._broker(w, in_flight)
        yield from self._services(w, in_flight)

    # ------------------------------------------------------------------ coordinator

    def _coordinator(self, w: World, in_flight: list[Message]) -> Iterator[Successor]:
        for r, rid in enumerate(w.releases):
            facts = self.machine.facts[rid]
            if facts.state is ReleaseState.WAITING:
                yield from self._decide(w, "begin", r, ("begin", w.silent))
            if facts.armed:
                yield from self._decide(w, "deadline", r, ("deadline",))
            if facts.state is ReleaseState.INITIALIZING and self.bound.failures:
                for s in range(self.bound.services):
                    if s not in w.silent:
                        yield from self._decide(w, "unhealthy", r, ("unhealthy", s), s)
        for r, stored in enumerate(w.outbox):
            if stored:
                yield from self._sweep(w, r)
        for message in in_flight:
            if len(message) == 4:
                reply: Reply = message
                r, s, action, outcome = reply
                key = ("reply", s, action, outcome)
                yield from self._decide(w, "receive", r, key, s, reply)
                if w.budget.duplicates:
                    yield from self._decide(w, "receive", r, key, s, reply, keep=True)

    def _sweep(self, w: World, r: int) -> Iterator[Successor]:
        """The coordinator publishes a stored outbox again (its sweeper, or recovery after a crash)."""
        network = w.network | w.outbox[r]
        outbox = replace(w.outbox, r, frozenset())
        yield Move("outbox", r), World(w.releases, outbox, network, w.parts, w.silent, w.budget)
        b = w.budget
        if b.duplicates:  # the broker took it, the confirm was lost: it stays stored, to be published again
            twice = b._replace(duplicates=b.duplicates - 1)
            yield Move("outbox", r, keep=True), World(w.releases, w.outbox, network, w.parts, w.silent, twice)

    def _decide(
        self,
        w: World,
        kind: str,
        r: int,
        key: EventKey,
        s: int = -1,
        consumed: Reply | None = None,
        keep: bool = False,
        op: str = "",
    ) -> Iterator[Successor]:
        """The coordinator decides an input for release ``r``, stores the result with its outbox,
        publishes the outbox (or the broker does not confirm it), and acks the input ``consumed``
        (unless ``keep``: it dies first, and the input is delivered again)."""
        step = self.machine.step(w.releases[r], key)
        action, outcome = (consumed[2], consumed[3]) if consumed is not None else (None, None)
        move = Move(kind, r, s, action, outcome, keep, applied=step.applied, op=op, reason=step.reason)
        network = w.network if consumed is None or keep else w.network - {consumed}
        budget = w.budget._replace(duplicates=w.budget.duplicates - 1) if keep else w.budget
        if not step.applied:
            yield move, (w if network is w.network and not keep else w.with_network(network, budget))
            return
        releases = replace(w.releases, r, step.release)
        stored = w.outbox[r] | {(r, c, a) for c, a in step.commands}
        if stored:  # published with the whole stored outbox, confirmed
            outbox = replace(w.outbox, r, frozenset())
            yield move, World(releases, outbox, network | stored, w.parts, w.silent, budget)
        else:
            yield move, World(releases, w.outbox, network, w.parts, w.silent, budget)
        if step.commands and budget.unconfirmed:  # not confirmed: stored, to be published later
            outbox = replace(w.outbox, r, stored)
            later = budget._replace(unconfirmed=budget.unconfirmed - 1)
            yield move._replace(unconfirmed=True), World(releases, outbox, network, w.parts, w.silent, later)

    # ------------------------------------------------------------------ operators

    def _operators(self, w: World) -> Iterator[Successor]:
        top = self.machine.highest_final_version(w.releases)
        for r, rid in enumerate(w.releases):
            for op, key in self._operations(rid, top):
                yield from self._decide(w, "operator", r, key, op=op)
        if len(w.releases) < self.bound.releases:
            facts = self.machine.facts
            ended = [facts[rid].state.is_terminal for rid in w.releases]
            if self.bound.concurrent and not all(ended):
                yield Move("create", len(w.releases)), self._create(w, None)
            for r in range(len(w.releases)):
                if ended[r]:
                    yield Move("rerun", r, op=str(len(w.releases))), self._create(w, r)

    def _operations(self, rid: int, top: str | None) -> tuple[tuple[str, EventKey], ...]:
        """The operator commands that change release ``rid`` (the others are refused: nothing happens)."""
        found = self._applicable.get((rid, top))
        if found is None:
            keys = [(op, ("publish", top) if op == "publish" else (op,)) for op in OPERATIONS]
            found = tuple((op, key) for op, key in keys if self.machine.step(rid, key).applied)
            self._applicable[rid, top] = found
        return found

    def _create(self, w: World, rerun_of: int | None) -> World:
        """A new release (a re-run of release ``rerun_of``, or another one), its tentative version from
        the last created release (``Creation``). Releases that have ended are archived: what of them
        is still in flight or in their outbox is set aside, and only their state and versions are kept
        (``Machine.archived``). What is set aside concerns only them (their own id, document, outbox and
        service records), and their remaining runs are explored from the states before the creation, so
        interleaving it with the new release's steps would add states but no behaviour."""
        index = len(w.releases)
        last_created = self.machine.facts[w.releases[-1]].version
        rid = self.machine.create(index, next_tentative(last_created), rerun_of)
        ended = {r for r, old in enumerate(w.releases) if self.machine.facts[old].state.is_terminal}
        archived = (self.machine.archived(old) if r in ended else old for r, old in enumerate(w.releases))
        outbox = (frozenset() if r in ended else o for r, o in enumerate(w.outbox))
        parts = (ARCHIVED if r in ended else p for r, p in enumerate(w.parts))
        return World(
            (*archived, rid),
            (*outbox, frozenset()),
            frozenset(m for m in w.network if m[0] not in ended),
            (*parts, (EMPTY_PART,) * self.bound.services),
            w.silent,
            w.budget,
        )

    # ------------------------------------------------------------------ broker

    def _broker(self, w: World, in_flight: list[Message]) -> Iterator[Successor]:
        if not w.budget.losses:
            return
        budget = w.budget._replace(losses=w.budget.losses - 1)
        for message in in_flight:
            if len(message) == 4 or self.bound.lose_commands:
                r, s, action, *outcome = message
                move = Move("lose", r, s, action, outcome[0] if outcome else None)
                yield move, w.with_network(w.network - {message}, budget)

    # ------------------------------------------------------------------ task services

    def _services(self, w: World, in_flight: list[Message]) -> Iterator[Successor]:
        failures = self.bound.failures
        for message in in_flight:
            if len(message) == 3 and message[1] not in w.silent:
                yield from self._take(w, message)
        for r, parts in enumerate(w.parts):
            for s, part in enumerate(parts):
                if part[0] is Data.PROCESSING and s not in w.silent:
                    for outcome, after in services.finish(part, failures):
                        network = w.network | {(r, s, Action.START, outcome)}
                        yield (
                            Move("finish", r, s, Action.START, outcome),
                            w.with_part(r, s, after, network, w.budget),
                        )
        if w.budget.silences:
            budget = w.budget._replace(silences=w.budget.silences - 1)
            for s in range(self.bound.services):
                if s not in w.silent:
                    silent = World(w.releases, w.outbox, w.network, w.parts, w.silent | {s}, budget)
                    yield Move("silent", service=s), silent

    def _take(self, w: World, message: Command) -> Iterator[Successor]:
        """A service takes a command and acks it (unless ``keep``: it dies first; it comes again)."""
        r, s, action = message
        for keep in (False, True) if w.budget.duplicates else (False,):
            rest = w.network if keep else w.network - {message}
            budget = w.budget._replace(duplicates=w.budget.duplicates - 1) if keep else w.budget
            for op, outcome, part in services.handle(action, w.parts[r][s], self.bound.failures):
                network = rest if outcome is None else rest | {(r, s, action, outcome)}
                yield (
                    Move("command", r, s, action, outcome, keep, op=op),
                    w.with_part(r, s, part, network, budget),
                )
