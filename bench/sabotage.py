"""Coordinators with one guarantee removed, to show that the checks notice.

Each variant is a restorable patch (a context manager), registered under a name with a one-line
description. Two ways to use one:

    python -m bench.sabotage NAME          # patch, then run the coordinator (e.g. under bench/chaos/)
    python -m bench.chaos --coordinator "bench.sabotage accept-spoofed"

    with VARIANTS["ignore-hold"].patch():  # in-process: the exhaustive explorer (tests/explore)
        ...

``python -m bench.sabotage`` alone lists the variants. A variant's ``level`` says what it breaks:
``machine`` (the pure state machine and the version rules, which the explorer drives),
``coordinator`` (the service around it: admission, outbox, recovery; and the machine's rules about
progress reports, which the explorer does not model) or ``sdk`` (the task SDK a service runs; applied
in-process only, as the coordinator does not run it). To add one, write a
generator that patches with :func:`patched` and yields once, and decorate it with
:func:`sabotage`.

Never deploy these: they exist only to prove that the checks report a violation.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from coordinator import admin, admission, machine, releases, replies, service, versioning
from coordinator.admission import Reply
from coordinator.audit import Cause
from coordinator.broker import Delivery
from coordinator.creation import Caller
from coordinator.machine import Decision, rules, step
from coordinator.store import _sqlite_schema
from schemas import messages
from schemas.documents import Task
from schemas.enums import Action, ReleaseState, TaskState
from schemas.messages import AdminRequest, AdminResult
from task_sdk import _runner
from task_sdk._settings import Settings

Level = Literal["machine", "coordinator", "sdk"]


@dataclass(frozen=True)
class Sabotage:
    name: str
    description: str
    level: Level
    patch: Callable[[], AbstractContextManager[None]]


VARIANTS: dict[str, Sabotage] = {}


def sabotage(
    name: str, description: str, level: Level
) -> Callable[[Callable[[], Iterator[None]]], Callable[[], AbstractContextManager[None]]]:
    """Register a generator (patch, ``yield``) as the variant ``name``."""

    def register(patches: Callable[[], Iterator[None]]) -> Callable[[], AbstractContextManager[None]]:
        patch = contextmanager(patches)
        VARIANTS[name] = Sabotage(name, description, level, patch)
        return patch

    return register


@contextmanager
def patched(owner: object, attribute: str, value: object) -> Iterator[None]:
    """Set ``owner.attribute`` to ``value``; put the original back on exit (even on an error)."""
    original = getattr(owner, attribute)
    setattr(owner, attribute, value)
    try:
        yield
    finally:
        setattr(owner, attribute, original)


# ---------------------------------------------------------------------- coordinator level


class _Everyone(Collection[str]):
    def __contains__(self, item: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


@sabotage("accept-spoofed", "replies are admitted whatever broker user signed them", "coordinator")
def accept_spoofed() -> Iterator[None]:
    admit = admission.admit_reply

    def admit_anyone(
        body: bytes, routing_key: str, user_id: str | None, trusted_users: Collection[str]
    ) -> Reply:
        return admit(body, routing_key, user_id or "anyone", _Everyone())

    with patched(replies, "admit_reply", admit_anyone):  # the name the replies module calls
        yield


@sabotage("accept-oversize", "a message over the size limit is read like any other", "coordinator")
def accept_oversize() -> Iterator[None]:
    with patched(messages, "MAX_BODY_BYTES", sys.maxsize):  # read by decode() at every call
        yield


@sabotage("forget-outbox", "the outbox is not replayed after a restart", "coordinator")
def forget_outbox() -> Iterator[None]:
    async def recover_nothing(self: service.Coordinator) -> None:
        for release in await self.store.open_releases():
            self.releases.arm(release)

    with patched(service.Coordinator, "_recover", recover_nothing):
        yield


class _AlreadyAcknowledged:
    """A delivery acknowledged on arrival: settling it later does nothing more."""

    def __init__(self, delivery: Delivery) -> None:
        self._delivery = delivery

    def __getattr__(self, name: str) -> object:
        return getattr(self._delivery, name)

    async def ack(self) -> None:
        return None

    async def requeue(self) -> None:
        return None

    async def dead_letter(self, reason: str) -> None:
        return None


@sabotage(
    "ack-before-store", "replies are acknowledged on arrival, before their effect is stored", "coordinator"
)
def ack_before_store() -> Iterator[None]:
    handle = replies.Replies._handle

    async def ack_first(self: replies.Replies, delivery: Delivery) -> None:
        await delivery.ack()
        await handle(self, _AlreadyAcknowledged(delivery))  # type: ignore[arg-type]

    with patched(replies.Replies, "_handle", ack_first):
        yield


@sabotage(
    "ack-held-replies",
    "replies whose write waits for the next ones are acknowledged before that write",
    "coordinator",
)
def ack_held_replies() -> Iterator[None]:
    apply_replies = releases.Releases.apply_replies

    async def stored_at_once(
        self: releases.Releases, release_id: str, causes: Sequence[Cause]
    ) -> tuple[list[Decision], asyncio.Future[None]] | None:
        applied = await apply_replies(self, release_id, causes)
        if applied is None:
            return None
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return applied[0], done

    with patched(releases.Releases, "apply_replies", stored_at_once):
        yield


@sabotage("answer-twice", "an operator's request delivered again is carried out again", "coordinator")
def answer_twice() -> Iterator[None]:
    async def execute_every_time(self: admin.Admin, request: AdminRequest, user: str) -> AdminResult:
        caller = Caller(user, request.operator, request.message_id)
        return await self.handlers[type(request.operation)](request.operation, caller)

    with patched(admin.Admin, "execute", execute_every_time):
        yield


@sabotage("answer-any-queue", "answers go to whatever queue a request names as reply_to", "coordinator")
def answer_any_queue() -> Iterator[None]:
    def anywhere(self: admin.Admin, reply_to: str) -> bool:
        return True

    with patched(admin.Admin, "may_answer", anywhere):
        yield


@sabotage("skip-unique-check", "the SQLite store has no unique index on versions", "coordinator")
def skip_unique_check() -> Iterator[None]:
    first, *rest = _sqlite_schema.MIGRATIONS
    for unique in ("tentative_version TEXT NOT NULL UNIQUE", "final_version TEXT UNIQUE"):
        assert unique in first, f"the schema changed: {unique!r} is gone"
        first = first.replace(unique, unique.removesuffix(" UNIQUE"))
    with patched(_sqlite_schema, "MIGRATIONS", (first, *rest)):
        yield


# ---------------------------------------------------------------------- state machine level


@sabotage("advance-early", "processing counts as done when the first service staged", "machine")
def advance_early() -> Iterator[None]:
    waiting_services = rules._waiting_services

    def first_stage_is_enough(tasks: Iterable[Task], action: Action) -> list[str]:
        return [] if action is Action.START else waiting_services(tasks, action)

    original = step._Step._advance_if_all_answered

    def advance(self: step._Step, now: datetime) -> machine.Decision:
        with patched(step, "_waiting_services", first_stage_is_enough):
            return original(self, now)

    with patched(step._Step, "_advance_if_all_answered", advance):
        yield


@sabotage("ignore-hold", "a held release can be published", "machine")
def ignore_hold() -> Iterator[None]:
    original = step._Step._publish

    def publish_even_if_held(self: step._Step, event: machine.Publish) -> machine.Decision:
        self.original = self.original.model_copy(update={"held": False})
        return original(self, event)

    with patched(step._Step, "_publish", publish_even_if_held):
        yield


@sabotage("ignore-deadlines", "a deadline check never changes anything", "machine")
def ignore_deadlines() -> Iterator[None]:
    def deadline(self: step._Step, event: machine.DeadlineCheck) -> machine.Decision:
        return self._unchanged(machine.Verdict.STALE, "deadlines are ignored")

    with patched(step._Step, "deadline", deadline):
        yield


@sabotage("accept-duplicates", "a reply already recorded is applied again", "machine")
def accept_duplicates() -> Iterator[None]:
    original = step._Step.reply

    def reply_again(self: step._Step, event: machine.ReplyReceived) -> machine.Decision:
        reply = event.reply
        task = self.tasks.get(reply.service)
        awaiting = rules._AWAITING_TASK_STATE.get(reply.action)
        awaited = rules._AWAITED_ACTION.get(self.original.state)
        recorded = task is not None and task.answers.get(reply.action) is reply.outcome
        if task is not None and recorded and awaiting is not None and reply.action is awaited:
            answers = {
                a: o for a, o in task.answers.items() if a is not reply.action
            }  # forget it: it counts again
            self.tasks[reply.service] = task.model_copy(update={"answers": answers, "state": awaiting})
        return original(self, event)

    with patched(step._Step, "reply", reply_again):
        yield


@sabotage("reuse-version", "a final version is not taken above the highest one assigned", "machine")
def reuse_version() -> Iterator[None]:
    def from_scratch(highest_final_version: str | None, *, is_major: bool) -> str:
        return versioning.next_final(None, is_major=is_major)

    with patched(step, "next_final", from_scratch):
        yield


@sabotage(
    "final-from-tentative",
    "a final version is taken above the release's own tentative version, not the highest one assigned",
    "machine",
)
def final_from_tentative() -> Iterator[None]:
    """Right while releases run one after the other (a release's tentative version then comes after
    every final version assigned), wrong when two are open at once: both are given the same one."""
    original = step._Step._publish

    def publish_from_own_version(self: step._Step, event: machine.Publish) -> machine.Decision:
        own = machine.Publish(event.now, event.operator, self.original.tentative_version)
        return original(self, own)

    with patched(step._Step, "_publish", publish_from_own_version):
        yield


@sabotage("skip-discard", "a cancel or failure marks tasks canceled without telling the services", "machine")
def skip_discard() -> Iterator[None]:
    def cancel_silently(self: step._Step, now: datetime, reason: str) -> list[str]:
        for task in list(self.tasks.values()):
            if not task.state.is_final:
                self._set_task(task.service, TaskState.CANCELED, now, reason)
        return []  # nobody told: the services keep what they staged

    with patched(step._Step, "_send_cancel_to_active", cancel_silently):
        yield


@sabotage(
    "ignore-stray-instance",
    "progress from an instance still processing a release it was told to discard gets it no cancel",
    "coordinator",  # a rule of the machine, but about progress reports, which the explorer does not model
)
def ignore_stray_instance() -> Iterator[None]:
    def never(release: ReleaseState, task: Task) -> bool:
        return False

    with patched(step, "told_to_discard", never):
        yield


# ---------------------------------------------------------------------- task SDK level


@sabotage("accept-forged-commands", "a task service acts on commands whatever broker user signed them", "sdk")
def accept_forged_commands() -> Iterator[None]:
    def refuse_nobody(settings: Settings, user_id: str | None) -> str | None:
        return None

    with patched(_runner, "command_refusal", refuse_nobody):  # the name the runner calls
        yield


def usage() -> str:
    width = max(len(name) for name in VARIANTS)
    lines = [f"  {v.name:<{width}}  {v.level:<11}  {v.description}" for v in VARIANTS.values()]
    return "usage: python -m bench.sabotage NAME\n" + "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in VARIANTS:
        if argv:
            print(f"bench.sabotage: unknown variant {argv[0]!r}", file=sys.stderr)
        print(usage(), file=sys.stderr)
        return 2
    if VARIANTS[argv[0]].level == "sdk":
        print(
            f"bench.sabotage: {argv[0]} breaks the task SDK, not the coordinator: apply it in-process",
            file=sys.stderr,
        )
        return 2
    from coordinator import __main__ as coordinator_main

    with VARIANTS[argv[0]].patch():
        return coordinator_main.main([])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
