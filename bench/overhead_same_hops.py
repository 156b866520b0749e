"""The same-hops floor of the overhead benchmark (:mod:`bench.overhead`): every broker hop of a coordinator's
release, made by this process with no logic and no store, and timed exactly as the coordinator's steps.

The floor of :mod:`bench.overhead_baselines` is the reply pattern alone (per step: N commands published with
confirms, N replies consumed). A coordinator's release has more hops; here they are, per release, in the
order and grouping of the coordinator's outbox (each group published with confirms, all in flight together,
on one channel with confirms, commands mandatory, announcements persistent on the events exchange; each
publication as the coordinator makes it, :func:`bench.lib.publish_confirmed`):

* the operator's create request (a real :class:`rc_cli.client.AdminClient`, as in the coordinator's run) is
  consumed from the coordinator's admin queue; N ``initialize`` commands and the ``release.initializing``
  announcement are published; then the answer (built beforehand, the request's id put in) goes to the
  client's reply queue, and the request is acked;
* the N-th ``initialize`` reply (consumed from the coordinator's reply queue with its prefetch, each acked at
  once) publishes N ``start`` commands and ``release.running``; the N-th ``start`` reply publishes
  ``release.staged``;
* the publish request publishes N ``publish`` commands and ``release.publishing``, then its answer; the N-th
  ``publish`` reply publishes ``release.published``.

Bodies are built before a release is timed, with the sizes of the coordinator's (an announcement and an
answer carry a view of an N-task release). The same hosts (no-op services) answer the commands. The steps
are timed by :func:`bench.lib.time_release`, the coordinator's own timing: initialize = create sent ->
``release.running`` received by the client's announcement listener; process = ``running`` -> ``staged``;
publish = publish sent -> ``published``. Not here: the coordinator's health check at creation (a passive
declare of each service's queue), its store, its decisions. Its CPU per step is this process's, which
plays the operator's client and announcement listener too (in the coordinator's run they are in this
process, not in the coordinator's): an upper bound of the bare coordinator's.
"""

from __future__ import annotations

import os
import statistics
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from bench.lib import (
    STEPS,
    Announcements,
    Child,
    CpuMeter,
    Measured,
    Publication,
    admin_client,
    amqp_message,
    announcement_publication,
    command_publications,
    now,
    publish_confirmed,
    publish_outbox,
    rabbitmq_pid,
    say,
    summary,
    time_release,
)
from bench.overhead_baselines import FLOOR_PREFETCH, sample_release
from schemas.broker_url import broker_user
from schemas.documents import ReleaseView
from schemas.enums import Action, ReleaseState
from schemas.messages import AdminAnswer, ReleaseResult, encode
from schemas.topology import Topology

#: The states a release goes through, each announced by the coordinator.
ANNOUNCED = (
    ReleaseState.INITIALIZING,
    ReleaseState.RUNNING,
    ReleaseState.STAGED,
    ReleaseState.PUBLISHING,
    ReleaseState.PUBLISHED,
)
#: Stands for the request's id in an answer built beforehand.
PLACEHOLDER = "in-reply-to-" + "x" * 20


@dataclass(frozen=True)
class Script:
    """The messages of one release, built before it is timed."""

    release_id: str
    #: The outbox of each transition: the create request, then each step's N-th reply, the publish request.
    outboxes: Mapping[str, Sequence[Publication]]
    #: The answers to the create and the publish request, with :data:`PLACEHOLDER` for the request's id.
    answers: Mapping[str, bytes]


def build_script(services: Sequence[str], topology: Topology) -> Script:
    release = sample_release(services)
    views = {state: ReleaseView.of(release.model_copy(update={"state": state})) for state in ANNOUNCED}
    events = {state: announcement_publication(views[state], state, topology) for state in ANNOUNCED}

    def commands(action: Action) -> list[Publication]:
        return command_publications(release.id, services, action, topology)

    def answer(state: ReleaseState) -> bytes:
        result = ReleaseResult(release=views[state])
        return encode(
            AdminAnswer(
                message_id=uuid.uuid4().hex, sent_at=now(), in_reply_to=PLACEHOLDER, ok=True, result=result
            )
        )

    S = ReleaseState
    outboxes = {
        "create request": [*commands(Action.INITIALIZE), events[S.INITIALIZING]],
        Action.INITIALIZE.value: [*commands(Action.START), events[S.RUNNING]],
        Action.START.value: [events[S.STAGED]],
        "publish request": [*commands(Action.PUBLISH), events[S.PUBLISHING]],
        Action.PUBLISH.value: [events[S.PUBLISHED]],
    }
    return Script(
        release.id,
        outboxes,
        {"create request": answer(S.INITIALIZING), "publish request": answer(S.PUBLISHING)},
    )


class BareCoordinator:
    """Plays the coordinator with no logic and no store, one release at a time: each request and each
    step's N-th reply publishes its outbox from the release's :class:`Script`."""

    def __init__(self, scripts: Sequence[Script], services: int, user: str) -> None:
        self.scripts, self.services, self.user = list(reversed(scripts)), services, user
        self.channel: AbstractChannel | None = None  # the publisher's: confirms, returns raising
        self.script: Script | None = None
        self.actions: list[Action] = []
        self.seen = 0

    async def on_request(self, message: AbstractIncomingMessage) -> None:
        """The create request starts the next script; the one after it is its publish request."""
        if self.script is None or not self.actions:
            self.script, self.actions = self.scripts.pop(), [Action.PUBLISH, Action.START, Action.INITIALIZE]
            request = "create request"
        else:
            request = "publish request"
        await self.publish(self.script.release_id, self.script.outboxes[request])
        body = self.script.answers[request].replace(
            PLACEHOLDER.encode(), (message.correlation_id or "").encode()
        )
        answer = amqp_message(body, uuid.uuid4().hex, "admin_answer", message.correlation_id, self.user)
        answer.delivery_mode = aio_pika.DeliveryMode.NOT_PERSISTENT
        assert self.channel is not None
        await publish_confirmed(self.channel, "", message.reply_to or "", answer, mandatory=False)
        await message.ack()

    async def on_reply(self, message: AbstractIncomingMessage) -> None:
        await message.ack()
        if self.script is None or message.correlation_id != self.script.release_id:
            return
        self.seen += 1
        if self.seen == self.services:
            self.seen = 0
            action = self.actions.pop()
            await self.publish(self.script.release_id, self.script.outboxes[action.value])

    async def publish(self, release_id: str, publications: Sequence[Publication]) -> None:
        assert self.channel is not None
        await publish_outbox(self.channel, release_id, publications, self.user)


async def measure_same_hops(
    url: str,
    namespace: str,
    services: Sequence[str],
    rounds: int,
    warmup: int,
    within: float,
    pids: Mapping[str, Measured | None],
) -> tuple[list[dict[str, float]], dict[str, float]]:
    """ms per step of ``rounds`` releases (after ``warmup``), and the CPU seconds of ``pids`` over them."""
    if rounds < 1:
        raise ValueError("the same-hops floor needs at least one round")
    topology = Topology(namespace)
    bare = BareCoordinator(
        [build_script(services, topology) for _ in range(warmup + rounds)], len(services), broker_user(url)
    )
    announcements, client, samples = Announcements(), None, []
    meter = CpuMeter(pids)
    connection = await aio_pika.connect(url, timeout=30)
    try:
        bare.channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        for queue, handler in (
            (topology.replies_queue, bare.on_reply),
            (topology.admin_queue, bare.on_request),
        ):
            channel = await connection.channel()  # one channel per queue, as the coordinator consumes
            await channel.set_qos(prefetch_count=FLOOR_PREFETCH)
            await (await channel.get_queue(queue, ensure=False)).consume(handler)
        client = await admin_client(url, namespace, within, announcements)
        for i in range(warmup + rounds):
            if i == warmup:
                meter.start()
            timed = await time_release(client, announcements, f"same hops {i}", within)
            if i >= warmup:
                samples.append(timed.steps)
        cpu = meter.stop()
    finally:
        if client is not None:
            await client.close()
        await connection.close()
    return samples, cpu


async def same_hops_of(
    result: dict[str, Any],
    url: str,
    namespace: str,
    services: Sequence[str],
    hosts: Sequence[Child],
    rounds: int,
    warmup: int,
    within: float,
) -> None:
    """The same-hops floor's ms per step (mean of a release's steps; median, p95 over releases), each
    step's, and its CPU seconds (this process, RabbitMQ, the hosts), put in ``result``."""
    n = len(services)
    say(f"N={n}: same-hops floor, {rounds} releases")
    pids = {"bench": os.getpid(), "rabbitmq": rabbitmq_pid(url)} | {h.name: h.pid for h in hosts}
    per_release, cpu = await measure_same_hops(url, namespace, services, rounds, warmup, within, pids)
    result["same_hops_cpu_seconds"] = cpu
    result["same_hops_ms_per_step"] = summary([statistics.fmean(r[s] for s in STEPS) for r in per_release])
    result["same_hops_steps_ms"] = {s: summary([r[s] for r in per_release]) for s in STEPS}
    say(f"N={n}: same-hops floor {result['same_hops_ms_per_step']['median']:.1f} ms/step (median)")
