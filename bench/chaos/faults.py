"""The chaos run's faults: each injector acts on the release the plan names, with picks (which service,
which captured reply) from the fault's own seeded generator, and says whether it found something to act on.

The replies services send are copied as they pass (:meth:`Injector.tap`), by release, to build duplicate,
reordered, stale and oversize replies of the targeted release from.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from bench.chaos.common import ADMIN_AMQP_URL, log, rabbitmqctl
from bench.chaos_cluster import NODE_FAULTS
from bench.chaos_plan import MESSAGE_FAULTS, PlannedFault
from bench.chaos_queue_fault import redeclare_as_classic, repair
from schemas.broker_url import split_urls
from schemas.enums import Action, Outcome, ReleaseState
from schemas.messages import TaskReply, encode
from schemas.topology import SCHEMA_VERSION_HEADER

if TYPE_CHECKING:
    from bench.chaos.run import Chaos

Captured = tuple[TaskReply, str]


@dataclass
class Target:
    """The release a fault hits. At its last attempt (``borrow``), a fault that copies replies may take them
    from another release when this one has none (it ended before it answered), and a forged failure may hit
    another release still processing when this one went past processing first: it notes which."""

    release_id: str
    borrow: bool = False
    copied_from: str | None = None
    #: The service a fault acted on, for those that act on one (a kill, a redeclared queue).
    service: str | None = None


class Injector:
    def __init__(self, chaos: Chaos) -> None:
        self.chaos = chaos
        #: Replies seen, by release: (reply, the broker user that signed it).
        self.captured: dict[str, list[Captured]] = {}
        #: Message ids of the invalid messages injected (each must be dead-lettered, none accepted).
        self.invalid: set[str] = set()
        self.connections: dict[str, aio_pika.abc.AbstractConnection] = {}
        #: One disruptive fault at a time, with the planned pause after it.
        self.lock = asyncio.Lock()

    async def attempt(
        self, number: int, fault: PlannedFault, release_id: str, seen: str, final: bool
    ) -> bool:
        """Inject fault ``number`` of the plan on ``release_id`` (seen in state ``seen``); record it if it
        acted, or if this is its ``final`` attempt. True if it acted. A forged or copied message is sent at
        once; a disruptive fault (a kill, a cut, a redeclared queue, a node stop) waits for the one before
        it, and the next waits for its pause."""
        if fault.kind in MESSAGE_FAULTS:
            return await self._attempt(number, fault, release_id, seen, final)
        async with self.lock:
            for (
                proc
            ) in self.chaos.procs.values():  # (never while a kill is under way: it would look uncaused)
                proc.check()
            applied = await self._attempt(number, fault, release_id, seen, final)
            if applied:
                await asyncio.sleep(fault.pause)
        return applied

    async def _attempt(
        self, number: int, fault: PlannedFault, release_id: str, seen: str, final: bool
    ) -> bool:
        chaos = self.chaos
        rng = random.Random(f"chaos-fault:{chaos.config.seed}:{number}")
        target = Target(release_id, borrow=final)
        started = time.time()  # the wall clock, as the store's times: to compare with when releases ended
        try:
            applied = await self._inject(fault.kind, rng, target)
        except Exception as error:
            log(f"fault {fault.kind} could not be injected: {error!r}")
            applied = False
        if applied or final:
            record = {"kind": fault.kind, "release": fault.release, "step": fault.step}
            record |= {"release_id": release_id, "seen": seen, "applied": applied}
            record |= {"started": round(started, 3), "ended": round(time.time(), 3)}
            if target.copied_from:
                record["copied from"] = target.copied_from
            if target.service:
                record["service"] = target.service
            chaos.report.injected.append(record)
            outcome = "done" if applied else "nothing to act on"
            log(f"fault {fault.kind}@{fault.release}/{fault.step} ({seen}): {outcome}")
        if applied:
            chaos.report.faults[fault.kind] += 1
        return applied

    async def _inject(self, kind: str, rng: random.Random, target: Target) -> bool:
        if kind in NODE_FAULTS:
            assert self.chaos.nodes is not None
            applied = await self.chaos.nodes.inject(kind)
            self.connections.clear()  # the injectors' connections may have been on that node
            return applied
        injectors: dict[str, Callable[[random.Random, Target], Awaitable[bool]]] = {
            "kill_coordinator": self._kill_coordinator,
            "kill_service": self._kill_service,
            "broker_outage": self._broker_outage,
            "duplicate": self._duplicate,
            "reordered": self._reordered,
            "stale": self._stale,
            "malformed": self._malformed,
            "oversize": self._oversize,
            "spoofed": self._spoofed,
            "redeclare_queue": self._redeclare_queue,
        }
        return await injectors[kind](rng, target)

    # ------------------------------------------------------------------ processes and the broker

    async def _kill_coordinator(self, rng: random.Random, target: Target) -> bool:
        self.chaos.procs["coordinator"].kill()
        await asyncio.sleep(rng.uniform(0.2, 1.5))
        self.chaos.procs["coordinator"].start()
        return True

    async def _kill_service(self, rng: random.Random, target: Target) -> bool:
        """SIGKILL one instance of a service (the only one, or one of several), restarted a moment later."""
        chaos = self.chaos
        target.service = rng.choice(chaos.services)
        proc = chaos.procs[rng.choice(chaos.instances(target.service))]
        proc.kill()
        await asyncio.sleep(rng.uniform(0.2, 1.5))
        proc.start()
        return True

    async def _redeclare_queue(self, rng: random.Random, target: Target) -> bool:
        chaos = self.chaos
        service = target.service = rng.choice(chaos.services)
        queue = chaos.topology.task_queue(service)
        who = await redeclare_as_classic(chaos.url(service, direct=True), ADMIN_AMQP_URL, queue)
        log(f"{queue} deleted and declared again as a classic queue by {who}")
        await asyncio.sleep(rng.uniform(1.0, 3.0))
        await repair(ADMIN_AMQP_URL, chaos.topology, service)
        return True

    async def _broker_outage(self, rng: random.Random, target: Target) -> bool:
        chaos = self.chaos
        if chaos.config.broker_fault == "rabbitmqctl":
            await asyncio.to_thread(rabbitmqctl, "stop_app")
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            await asyncio.to_thread(rabbitmqctl, "start_app")
            await asyncio.to_thread(rabbitmqctl, "await_startup")
            # start_app resets the file-handle budget to what the node's ulimit allows (often too few
            # for many quorum queues; see scripts/ensure-rabbitmq.sh): give back what the run found.
            if chaos.handle_budget:
                with contextlib.suppress(subprocess.SubprocessError):
                    limit = f"file_handle_cache:set_limit({chaos.handle_budget})."
                    await asyncio.to_thread(rabbitmqctl, "eval", limit)
            self.connections.clear()
            return True
        assert chaos.proxy is not None
        chaos.proxy.pause()
        chaos.proxy.cut()
        await asyncio.sleep(rng.uniform(0.5, 2.0))
        chaos.proxy.resume()
        return True

    # ------------------------------------------------------------------ replies of the targeted release

    def _copies(self, target: Target, *, least: int = 1, action: Action | None = None) -> list[Captured]:
        """The captured replies of the target release (of ``action`` if given), if there are ``least``; else,
        if the target may borrow, those of the release captured last that has as many."""

        def usable(release_id: str) -> list[Captured]:
            return [c for c in self.captured.get(release_id, []) if action is None or c[0].action is action]

        if len(own := usable(target.release_id)) >= least or not target.borrow:
            return own if len(own) >= least else []
        for release_id in reversed(list(self.captured)):
            if len(other := usable(release_id)) >= least:
                target.copied_from = release_id
                return other
        return []

    async def _duplicate(self, rng: random.Random, target: Target) -> bool:
        captured = self._copies(target)
        if not captured:
            return False
        reply, user = rng.choice(captured)
        await self._send(reply.model_dump_json().encode(), reply.service, user, reply.message_id)
        return True

    async def _reordered(self, rng: random.Random, target: Target) -> bool:
        recent = self._copies(target, least=2)[-20:]
        if len(recent) < 2:
            return False
        first, second = rng.sample(recent, 2)
        for reply, user in sorted((first, second), key=lambda c: c[0].sent_at, reverse=True):
            await self._send(reply.model_dump_json().encode(), reply.service, user, reply.message_id)
        return True

    async def _stale(self, rng: random.Random, target: Target) -> bool:
        old = self._copies(target, action=Action.INITIALIZE)
        if not old:
            return False
        reply, user = rng.choice(old)
        stale = reply.model_copy(
            update={"message_id": uuid.uuid4().hex, "outcome": Outcome.REJECTED, "reason": "stale rejection"}
        )
        await self._send(encode(stale), stale.service, user, stale.message_id)
        return True

    async def _malformed(self, rng: random.Random, target: Target) -> bool:
        service = rng.choice(self.chaos.services)
        message_id = f"malformed-{uuid.uuid4().hex}"
        self.invalid.add(message_id)
        body = rng.choice([b"{not json", b'{"kind": "reply"}', rng.randbytes(64)])
        await self._send(body, service, service, message_id)
        return True

    async def _oversize(self, rng: random.Random, target: Target) -> bool:
        captured = self._copies(target)
        if not captured:
            return False
        reply, user = rng.choice(captured)
        message_id = f"oversize-{uuid.uuid4().hex}"
        self.invalid.add(message_id)
        body = reply.model_copy(update={"message_id": message_id}).model_dump_json().encode() + b" " * 300_000
        await self._send(body, reply.service, user, message_id)
        return True

    async def _spoofed(self, rng: random.Random, target: Target) -> bool:
        """A failure in the name of a service processing the release, sent by another broker user: if the
        coordinator believed it, the release would fail."""
        stored = {r["_id"]: r for r in (await self.chaos.stored())[0]}
        release_id = target.release_id
        running = _running_tasks(stored.get(release_id, {}))
        if not running and target.borrow:  # its release went past processing before it could act
            for other in reversed(list(stored)):
                if other != release_id and (running := _running_tasks(stored[other])):
                    release_id = target.copied_from = other
                    break
        if not running:
            return False
        # The service furthest from staging: the forged failure must arrive while it still processes.
        service = rng.choice(sorted(s for s, p in running.items() if p == min(running.values())))
        forged = TaskReply(
            message_id=f"spoofed-{uuid.uuid4().hex}",
            sent_at=datetime.now(UTC),
            release_id=release_id,
            service=service,
            in_reply_to=f"{release_id}.start.{service}",
            action=Action.START,
            outcome=Outcome.FAILED,
            reason="forged failure",
            instance_id="intruder",
            sdk_version="intruder",
        )
        self.invalid.add(forged.message_id)
        await self._send(encode(forged), service, self.chaos.intruder, forged.message_id)
        return True

    # ------------------------------------------------------------------ the broker, as the injectors use it

    async def _send(self, body: bytes, service: str, user: str, message_id: str) -> None:
        connection = self.connections.get(user)
        if connection is None or connection.is_closed:
            connection = await self.connect(user)
            self.connections[user] = connection
        async with connection.channel(publisher_confirms=True) as channel:
            exchange = aio_pika.Exchange(
                channel, self.chaos.topology.replies_exchange, aio_pika.ExchangeType.TOPIC
            )
            message = aio_pika.Message(
                body,
                content_type="application/json",
                message_id=message_id,
                type="reply",
                headers={SCHEMA_VERSION_HEADER: 1},
                user_id=user,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            await exchange.publish(message, routing_key=f"reply.{service}.reply", timeout=10)

    async def tap(self, done: asyncio.Event) -> None:
        """Copy real replies as they pass, to build duplicates, reorderings and stale replies from."""
        chaos = self.chaos
        while not done.is_set():
            try:
                connection = await self.connect(chaos.installation.coordinator_user)
                async with connection:
                    channel = await connection.channel()
                    queue = await channel.declare_queue(f"{chaos.namespace}.chaos-tap", exclusive=True)
                    await queue.bind(chaos.topology.replies_exchange, "reply.*.reply")
                    async with queue.iterator() as messages:
                        async for message in messages:
                            self._capture(message)
                            await message.ack()
            except Exception:
                await asyncio.sleep(1)

    async def connect(self, user: str) -> aio_pika.abc.AbstractConnection:
        """A plain connection as ``user`` to the broker, or to the first node of the cluster that answers."""
        urls = split_urls(self.chaos.url(user, direct=True))
        for url in urls[:-1]:
            with contextlib.suppress(OSError):
                return await aio_pika.connect(url, timeout=10)
        return await aio_pika.connect(urls[-1], timeout=10)

    def _capture(self, message: AbstractIncomingMessage) -> None:
        with contextlib.suppress(Exception):
            reply = TaskReply.model_validate_json(message.body)
            if message.user_id == reply.service and not reply.message_id.startswith(("spoofed", "oversize")):
                self.captured.setdefault(reply.release_id, []).append((reply, reply.service))

    async def close(self) -> None:
        for connection in self.connections.values():
            with contextlib.suppress(Exception):
                await connection.close()


def _running_tasks(release: dict[str, Any]) -> dict[str, float]:
    """The progress of each task still processing, if the stored ``release`` is running."""
    if release.get("state") != ReleaseState.RUNNING.value:
        return {}
    return {s: t["progress"] for s, t in release["tasks"].items() if t["state"] == "running"}
