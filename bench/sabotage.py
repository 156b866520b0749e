"""Coordinators with one guarantee removed, to show that the fault-injection run notices.

    python -m bench.chaos --coordinator "bench.sabotage accept-spoofed"

* ``accept-spoofed``: replies are admitted whatever broker user signed them (no ``user_id`` check).
* ``advance-early``: processing counts as done when the *first* service staged, not every one.
* ``forget-outbox``: the outbox is not replayed after a restart: commands stored but not yet
  confirmed when the coordinator died are never sent.

Never deploy these: they exist only to prove that ``bench/chaos.py`` reports a violation.
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from datetime import datetime

from coordinator import __main__ as coordinator_main
from coordinator import admission, machine, replies, service
from coordinator.admission import Reply
from schemas.documents import Task
from schemas.enums import Action


class _Everyone(Collection[str]):
    def __contains__(self, item: object) -> bool:
        return True

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(())

    def __len__(self) -> int:
        return 0


def accept_spoofed() -> None:
    admit = admission.admit_reply

    def admit_anyone(
        body: bytes, routing_key: str, user_id: str | None, trusted_users: Collection[str]
    ) -> Reply:
        return admit(body, routing_key, user_id or "anyone", _Everyone())

    replies.admit_reply = admit_anyone  # type: ignore[attr-defined] # the name the replies module calls


def advance_early() -> None:
    is_awaiting = machine._is_awaiting

    def first_stage_is_enough(task: Task, action: Action) -> bool:
        return False if action is Action.START else is_awaiting(task, action)

    original = machine._Step._advance_if_all_answered

    def advance(self: machine._Step, now: datetime) -> machine.Decision:
        machine._is_awaiting = first_stage_is_enough
        try:
            return original(self, now)
        finally:
            machine._is_awaiting = is_awaiting

    machine._Step._advance_if_all_answered = advance  # type: ignore[method-assign]


def forget_outbox() -> None:
    async def recover_nothing(self: service.Coordinator) -> None:
        for release in await self.store.open_releases():
            self.releases.arm(release)

    service.Coordinator._recover = recover_nothing  # type: ignore[method-assign]


VARIANTS = {"accept-spoofed": accept_spoofed, "advance-early": advance_early, "forget-outbox": forget_outbox}

if __name__ == "__main__":
    VARIANTS[sys.argv[1]]()
    sys.exit(coordinator_main.main([]))
