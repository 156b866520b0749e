"""Fault injection: run releases while killing, cutting and lying, then check every guarantee.

    python -m bench.chaos [--releases 20] [--services 5] [--seed N] [--time-limit 900]
                          [--broker-fault proxy|rabbitmqctl|node-stop] [--coordinator MODULE]

It builds a real installation on the local RabbitMQ: its own vhost, one broker user per service,
the coordinator and an operator user (``deploy.setup``), and no trusted users, so every reply is
signed by the broker. Coordinator and services are separate processes that reach the broker
through a TCP proxy. While an operator drives R releases, at random (seeded) moments it:

* kills the coordinator with SIGKILL and restarts it;
* kills a task service with SIGKILL and restarts it (its outcome store survives, as on disk);
* cuts every broker connection (through the proxy) or restarts the broker (``rabbitmqctl``);
  or, with ``node-stop``, runs on a three-node cluster of its own and stops nodes (bench/chaos_cluster.py);
* injects duplicate, reordered, stale, malformed, oversize and spoofed replies.

At the end it checks, from the store and from what every service journaled it did: releases
lost, releases stuck past their deadline, releases published while some service never staged,
data published by a service for a release that ended canceled or failed, duplicate or
out-of-order final versions, spoofed or malformed messages accepted, and coordinator crashes that
were not injected. Last line: ``chaos: R releases, K faults injected, V violations``; exit 1 if V > 0.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import logging
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from bench.chaos_cluster import (
    NODE_FAULTS,
    PLANNED,
    NodeFaults,
    chaos_cluster,
    coordinator_switches,
    node_order,
    recovery_figures,
    switch_figures,
)
from bench.chaos_cluster import running as cluster_running
from bench.chaos_plan import PlannedFault, kept_data, make_plan, outcome_figures, unplanned_ends
from bench.chaos_queue_fault import redeclare_as_classic, repair
from bench.chaos_service import read_journal
from bench.lib import file_handles
from coordinator.store import default_store_url, store_for
from deploy.apply import grant
from deploy.definitions import Installation, Permission
from rc_cli.client import AdminClient, AdminClientError
from schemas.broker_url import split_urls
from schemas.documents import ReleaseView
from schemas.enums import Action, EventKind, Outcome, ReleaseState, TaskState
from schemas.messages import (
    AdminAnswer,
    AdminOperation,
    CancelRelease,
    CreateRelease,
    PublishRelease,
    ReleaseResult,
    RequireService,
    ShowRelease,
    TaskReply,
    encode,
)
from schemas.topology import SCHEMA_VERSION_HEADER, Topology
from tests._harness import delete_namespace
from tests._proxy import TcpProxy

FAULTS = (
    "kill_coordinator",
    "kill_service",
    "broker_outage",
    "duplicate",
    "reordered",
    "stale",
    "malformed",
    "oversize",
    "spoofed",
    "redeclare_queue",
)
TERMINAL = {ReleaseState.PUBLISHED, ReleaseState.CANCELED, ReleaseState.FAILED}
BROKER_PORT = 5672
#: Used to set the installation up and tear it down (the local broker's administrator).
ADMIN_AMQP_URL = os.environ.get("RC_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
TIMEOUTS = {
    "RC_INITIALIZE_TIMEOUT": "10",
    "RC_PROCESS_TIMEOUT": "15",
    "RC_PUBLISH_TIMEOUT": "20",
    "RC_CANCEL_TIMEOUT": "10",
    "RC_HEARTBEAT_TIMEOUT": "8",
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Config:
    releases: int = 20
    services: int = 5
    seed: int = field(default_factory=lambda: secrets.randbelow(1_000_000))
    time_limit: float = 900.0
    broker_fault: str = "proxy"
    coordinator_module: str = "coordinator"
    fault_gap: tuple[float, float] = (1.5, 4.0)
    concurrency: int = 3
    #: Processes per task service (competing for its work; a kill takes one of them).
    instances: int = 1
    #: Seconds a service spends processing one release (spread +-50 %): long enough for faults to
    #: meet releases in flight.
    work_seconds: float = 4.0
    workdir: Path | None = None
    json_path: Path | None = None


@dataclass
class Report:
    figures: dict[str, int | str | float] = field(default_factory=dict)
    violations: dict[str, int] = field(default_factory=dict)
    faults: Counter[str] = field(default_factory=Counter)
    #: Driven releases that did not end as planned, each with how and why.
    unplanned: list[str] = field(default_factory=list)

    @property
    def total_violations(self) -> int:
        return sum(self.violations.values())


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    injected_kills: int = 0
    uncaused_exits: list[int] = field(default_factory=list)

    def start(self) -> None:
        with self.log_path.open("ab") as sink:
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )

    def check(self) -> None:
        """Notice an exit we did not cause, and restart."""
        if self.process is not None and self.process.poll() is not None:
            self.uncaused_exits.append(self.process.returncode)
            log(f"{self.name} exited by itself with {self.process.returncode}: restarting")
            self.start()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.injected_kills += 1

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Chaos:
    def __init__(self, config: Config) -> None:
        self.config = config
        #: Picks made while the run goes on (targets); the plan has a generator of its own.
        self.rng = random.Random(f"chaos-picks:{config.seed}")
        self.hex = uuid.uuid4().hex[:8]
        self.services = [f"chaos{self.hex}-s{i}" for i in range(1, config.services + 1)]
        self.namespace = f"chaos-{self.hex}"
        # The default vhost with a namespace of its own: every permission is scoped to the namespace's
        # names, and creating or deleting a vhost per run is slow on a busy broker.
        self.installation = Installation(
            services=tuple(self.services),
            namespace=self.namespace,
            vhost="/",
            coordinator_user=f"chaos{self.hex}-coordinator",
            operator_user=f"chaos{self.hex}-operator",
        )
        self.intruder = f"chaos{self.hex}-intruder"
        self.passwords = {
            user: secrets.token_urlsafe(12) for user in (*self.installation.users(), self.intruder)
        }
        self.topology = Topology(self.namespace)
        self.report = Report()
        #: Releases driven after the planned ones, when a fault kind still lacked a release to target.
        self.extra: list[asyncio.Task[None]] = []
        self.fault_attempts = 0
        budget = file_handles() if config.broker_fault == "rabbitmqctl" else None
        self.handle_budget = budget[0] if budget else None
        self.procs: dict[str, Proc] = {}
        self.release_ids: list[str] = []
        self.captured: deque[tuple[TaskReply, str]] = deque(maxlen=400)
        self.injected_invalid: set[str] = set()
        self.connections: dict[str, aio_pika.abc.AbstractConnection] = {}
        self.proxy: TcpProxy | None = None
        self.cluster = chaos_cluster() if config.broker_fault == "node-stop" else None
        self.nodes: NodeFaults | None = None
        self.store_url = ""
        self.workdir: Path | None = None
        self.database = f"chaos_{self.hex}"
        self.done = asyncio.Event()
        self.fault_counted = asyncio.Condition()
        self.plan = make_plan(
            config.seed,
            self.first_round(),
            self.fault_kinds(),
            releases=config.releases,
            fault_gap=config.fault_gap,
        )
        #: How each driven release is meant to end: published, or canceled on purpose once staged.
        self.planned: dict[str, ReleaseState] = {}

    # ------------------------------------------------------------------ urls

    def url(self, user: str, *, direct: bool = False, position: int = 0) -> str:
        """The broker URL for ``user``: through the proxy unless ``direct``; on the cluster, its three
        nodes, starting with node ``position % 3 + 1``."""
        if self.cluster is not None:
            vhost = self.installation.vhost
            return self.cluster.urls(
                node_order(position), user=user, password=self.passwords[user], vhost=vhost
            )
        port = BROKER_PORT if direct or self.proxy is None else self.proxy.port
        vhost = quote(self.installation.vhost, safe="")
        return (
            f"amqp://{quote(user, safe='')}:{quote(self.passwords[user], safe='')}@127.0.0.1:{port}/{vhost}"
        )

    # ------------------------------------------------------------------ run

    async def run(self) -> Report:
        started = time.monotonic()
        log(
            f"seed {self.config.seed}: {self.config.releases} releases, {self.config.services} services "
            f"({self.config.instances} instance(s) each), broker faults by {self.config.broker_fault}"
        )
        for line in self.plan.describe():
            log(line)
        async with self._broker(), self._installation(), self._store(), self._processes():
            await self._require_services()
            tap = asyncio.create_task(self._tap())
            faults = asyncio.create_task(self._inject_faults())
            try:
                await asyncio.wait_for(self._drive_all(), self.config.time_limit)
            except TimeoutError:
                log("time limit reached: stopping the drivers")
            self.done.set()
            await faults
            await asyncio.gather(*self.extra)
            tap.cancel()
            await asyncio.gather(tap, return_exceptions=True)
            await self._settle()
            await self._check()
            log("tearing down")
        log("done")
        self.report.figures["seconds"] = round(time.monotonic() - started, 1)
        return self.report

    @contextlib.asynccontextmanager
    async def _installation(self) -> AsyncIterator[None]:
        # A misconfigured account that may write to the replies exchange: the coordinator must still
        # refuse what it sends in a service's name.
        replies = re.escape(self.topology.replies_exchange)
        intruder = {self.intruder: Permission(configure="", write=f"^{replies}$", read="")}
        management = self.cluster.management_url(1) if self.cluster else _management_url()
        try:
            await asyncio.to_thread(
                grant, self.installation, self.passwords, management_url=management, extra=intruder
            )
            yield
        finally:
            for connection in self.connections.values():
                with contextlib.suppress(Exception):
                    await connection.close()
            if self.cluster is None:  # (the cluster is deleted with all it holds)
                await self._delete_installation(management)

    async def _delete_installation(self, management: str | None) -> None:
        try:
            await delete_namespace(ADMIN_AMQP_URL, self.namespace)
        except Exception as error:  # still delete the users: they must not outlive the run
            log(f"could not delete every queue of {self.namespace}: {error!r}")
        for user in (*self.installation.users(), self.intruder):
            await asyncio.to_thread(_delete_user, user, management)
        log("broker users, queues and exchanges deleted")

    def _workdir(self) -> Path:
        """The run's folder (logs, journals, the SQLite store): the configured one or a new temporary one."""
        if self.workdir is None:
            workdir = self.config.workdir or Path(tempfile.mkdtemp(prefix="rc-chaos-"))
            workdir.mkdir(parents=True, exist_ok=True)
            self.workdir = workdir
        return self.workdir

    @contextlib.asynccontextmanager
    async def _store(self) -> AsyncIterator[None]:
        """``RC_STORE_URL`` or ``RC_MONGODB_URL`` if set (its database is dropped at the end), else the
        default engine: a SQLite file in the run's folder."""
        configured = os.environ.get("RC_STORE_URL") or os.environ.get("RC_MONGODB_URL")
        self.store_url = configured or default_store_url(self.namespace, self._workdir())
        try:
            yield
        finally:
            if configured and configured.startswith("mongodb"):
                await store_for(configured, self.database).drop()

    @contextlib.asynccontextmanager
    async def _broker(self) -> AsyncIterator[None]:
        if self.cluster is not None:
            async with cluster_running(self.cluster, log):
                topology = self.topology
                self.nodes = NodeFaults(
                    self.cluster, self.rng, self.namespace, self.services, topology.replies_queue, log
                )
                yield
            return
        self.proxy = TcpProxy("127.0.0.1", BROKER_PORT)
        await self.proxy.start()
        try:
            yield
        finally:
            await self.proxy.stop()

    @contextlib.asynccontextmanager
    async def _processes(self) -> AsyncIterator[None]:
        workdir = self._workdir()
        log(f"logs and journals in {workdir}")
        base = {k: v for k, v in os.environ.items() if not k.startswith("RC_")}
        coordinator_env = {
            **base,
            **TIMEOUTS,
            "RC_AMQP_URL": self.url(self.installation.coordinator_user),
            "RC_STORE_URL": self.store_url,
            "RC_MONGODB_DATABASE": self.database,
            "RC_NAMESPACE": self.namespace,
            "RC_METRICS_PORT": "0",
        }
        module = self.config.coordinator_module.split()
        self.procs["coordinator"] = Proc(
            "coordinator", [sys.executable, "-m", *module], coordinator_env, workdir / "coordinator.log"
        )
        for position, service in enumerate(self.services):
            for instance in self.instances(service):
                env = {
                    **base,
                    "RC_AMQP_URL": self.url(service, position=position),
                    "RC_NAMESPACE": self.namespace,
                    "RC_COORDINATOR_USER": self.installation.coordinator_user,
                    "RC_HEARTBEAT_SECONDS": "1",
                    "RC_TASK_STATE_DIR": str(workdir / "state" / instance),
                    "RC_SHUTDOWN_TIMEOUT": "2",
                    "CHAOS_WORK_SECONDS": str(self.config.work_seconds),
                }
                argv = [sys.executable, "-m", "bench.chaos_service", service, str(self.journal(instance))]
                self.procs[instance] = Proc(instance, argv, env, workdir / f"{instance}.log")
        try:
            self.procs["coordinator"].start()
            await asyncio.sleep(1.5)  # the coordinator declares the topology the services check for
            for service in self.services:
                for instance in self.instances(service):
                    self.procs[instance].start()
            yield
        finally:
            await asyncio.gather(*(asyncio.to_thread(proc.stop) for proc in self.procs.values()))
            log("processes stopped")

    # ------------------------------------------------------------------ the operator

    async def _admin(self, operation: AdminOperation, *, patience: float = 60) -> AdminAnswer:
        """Ask until some coordinator answers (it may be dead, restarting, or cut off)."""
        deadline = time.monotonic() + patience
        while True:
            try:
                async with AdminClient(
                    self.url(self.installation.operator_user, direct=True),
                    self.namespace,
                    timeout=5,
                    operator="chaos",
                ) as client:
                    return await client.request(operation)
            except AdminClientError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    async def _require_services(self) -> None:
        for service in self.services:
            await self._admin(RequireService(service=service))
        await asyncio.sleep(2.5)  # first heartbeats

    async def _drive_all(self) -> None:
        gate = asyncio.Semaphore(self.config.concurrency)

        async def drive(number: int) -> None:
            async with gate:
                await self._drive(number)

        await asyncio.gather(*(drive(n) for n in range(self.config.releases)))

    async def _drive(self, number: int) -> None:
        # Spread the releases over the faults, so that every kind of fault meets releases in flight.
        releases = max(1, self.config.releases)
        planned = max(2 * len(FAULTS), releases)  # faults over the run: every kind twice or one per release
        wanted = max(0, (number + 1) * planned // releases - 1)
        async with self.fault_counted:
            await self.fault_counted.wait_for(lambda: self.fault_attempts >= wanted or self.done.is_set())
        answer = await self._admin(CreateRelease(name=f"chaos {number}", studies=("SD_CHAOS001",)))
        if not answer.ok or not isinstance(answer.result, ReleaseResult):
            log(f"release {number}: create refused: {answer.error}")
            return
        release_id = answer.result.release.id
        self.release_ids.append(release_id)
        cancel_it = number in self.plan.cancels
        self.planned[release_id] = ReleaseState.CANCELED if cancel_it else ReleaseState.PUBLISHED
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            view = await self._view(release_id)
            if view is not None and view.state in TERMINAL:
                final = view.final_version or ""
                log(f"release {number} {release_id}: {view.state} {final} {view.state_reason}")
                return
            if view is not None and view.state is ReleaseState.STAGED:
                if cancel_it:
                    await self._admin(CancelRelease(release_id=release_id, reason="chaos operator"))
                else:
                    await self._admin(PublishRelease(release_id=release_id))
            await asyncio.sleep(0.3)
        log(f"release {number} {release_id}: not finished within its driver's time")

    async def _view(self, release_id: str) -> ReleaseView | None:
        answer = await self._admin(ShowRelease(release_id=release_id, events=0))
        return answer.result.release if isinstance(answer.result, ReleaseResult) else None

    # ------------------------------------------------------------------ faults

    def first_round(self) -> list[str]:
        """The faults every run injects: each kind once (node faults as often as planned)."""
        kinds = self.fault_kinds()
        once = [k for k in kinds if k not in NODE_FAULTS]
        return once + [k for k in kinds for _ in range(PLANNED.get(k, 0))]

    async def _inject_faults(self) -> None:
        kinds = self.fault_kinds()
        planned = iter(self.plan.faults)  # the first round in a seeded order, then seeded picks
        pending = Counter(self.first_round())  # first-round kinds not injected yet
        retry: deque[str] = deque()  # kinds that found nothing to target: again after the first round
        injected, first_round = 0, sum(pending.values())
        while not (self.done.is_set() and not pending):  # until the drivers are done and every kind was tried
            fault = next(planned, None) or PlannedFault(self.rng.choice(kinds), self.config.fault_gap[1])
            await asyncio.sleep(fault.gap)
            for proc in self.procs.values():
                proc.check()
            kind = retry.popleft() if retry and injected >= first_round else fault.kind
            injected += 1
            self.fault_attempts += 1  # paces the releases, whether or not this kind finds a target
            try:
                if kind in NODE_FAULTS:
                    assert self.nodes is not None
                    applied = await self.nodes.inject(kind)
                    self.connections.clear()  # the injectors' connections may have been on that node
                else:
                    applied = await getattr(self, f"_fault_{kind}")()
            except Exception as error:
                log(f"fault {kind} could not be injected: {error!r}")
                applied = False
            if applied:
                self.report.faults[kind] += 1
                if pending[kind]:
                    pending[kind] -= 1
                    if not pending[kind]:
                        del pending[kind]
                log(f"fault: {kind}")
            async with self.fault_counted:
                self.fault_counted.notify_all()
            if not applied and (kind in FAULTS[3:] or kind in NODE_FAULTS):
                retry.append(kind)  # nothing captured yet to build it from: try again later
                if self.done.is_set() and all(task.done() for task in self.extra):
                    if len(self.extra) >= 10:
                        log(f"fault {kind}: no release in flight to build it from; giving up on it")
                        del pending[kind]
                        retry = deque(k for k in retry if k != kind)
                    else:  # every release ended before this kind found a target: drive one more for it
                        self.extra.append(asyncio.create_task(self._drive(self.config.releases + 1000)))

    def fault_kinds(self) -> tuple[str, ...]:
        """The faults of this run: on the cluster, node faults instead of the broker outage."""
        if self.cluster is None:
            return FAULTS
        return (*(k for k in FAULTS if k != "broker_outage"), *NODE_FAULTS)

    async def _fault_kill_coordinator(self) -> bool:
        self.procs["coordinator"].kill()
        await asyncio.sleep(self.rng.uniform(0.2, 1.5))
        self.procs["coordinator"].start()
        return True

    async def _fault_redeclare_queue(self) -> bool:
        service = self.rng.choice(self.services)
        queue = self.topology.task_queue(service)
        who = await redeclare_as_classic(self.url(service, direct=True), ADMIN_AMQP_URL, queue)
        log(f"{queue} deleted and declared again as a classic queue by {who}")
        await asyncio.sleep(self.rng.uniform(1.0, 3.0))
        await repair(ADMIN_AMQP_URL, self.topology, service)
        return True

    def instances(self, service: str) -> list[str]:
        """The processes of one service: its name alone, or ``NAME#i`` with several instances."""
        if self.config.instances == 1:
            return [service]
        return [f"{service}#{i}" for i in range(1, self.config.instances + 1)]

    def journal(self, instance: str) -> Path:
        return self._workdir() / f"{instance}.journal"

    async def _fault_kill_service(self) -> bool:
        """SIGKILL one instance of a service (the only one, or one of several), restarted a moment later."""
        proc = self.procs[self.rng.choice(self.instances(self.rng.choice(self.services)))]
        proc.kill()
        await asyncio.sleep(self.rng.uniform(0.2, 1.5))
        proc.start()
        return True

    async def _fault_broker_outage(self) -> bool:
        assert self.proxy is not None
        if self.config.broker_fault == "rabbitmqctl":
            await asyncio.to_thread(self._rabbitmqctl, "stop_app")
            await asyncio.sleep(self.rng.uniform(0.5, 2.0))
            await asyncio.to_thread(self._rabbitmqctl, "start_app")
            await asyncio.to_thread(self._rabbitmqctl, "await_startup")
            # start_app resets the file-handle budget to what the node's ulimit allows (often too few
            # for many quorum queues; see scripts/ensure-rabbitmq.sh): give back what the run found.
            if self.handle_budget:
                with contextlib.suppress(subprocess.SubprocessError):
                    await asyncio.to_thread(
                        self._rabbitmqctl, "eval", f"file_handle_cache:set_limit({self.handle_budget})."
                    )
            self.connections.clear()
            return True
        self.proxy.pause()
        self.proxy.cut()
        await asyncio.sleep(self.rng.uniform(0.5, 2.0))
        self.proxy.resume()
        return True

    async def _fault_duplicate(self) -> bool:
        if not self.captured:
            return False
        reply, user = self.rng.choice(list(self.captured))
        await self._send(reply.model_dump_json().encode(), reply.service, user, reply.message_id)
        return True

    async def _fault_reordered(self) -> bool:
        recent = [c for c in list(self.captured)[-20:]]
        if len(recent) < 2:
            return False
        first, second = self.rng.sample(recent, 2)
        for reply, user in sorted((first, second), key=lambda c: c[0].sent_at, reverse=True):
            await self._send(reply.model_dump_json().encode(), reply.service, user, reply.message_id)
        return True

    async def _fault_stale(self) -> bool:
        old = [c for c in self.captured if c[0].action is Action.INITIALIZE]
        if not old:
            return False
        reply, user = old[0]
        stale = reply.model_copy(
            update={"message_id": uuid.uuid4().hex, "outcome": Outcome.REJECTED, "reason": "stale rejection"}
        )
        await self._send(encode(stale), stale.service, user, stale.message_id)
        return True

    async def _fault_malformed(self) -> bool:
        service = self.rng.choice(self.services)
        message_id = f"malformed-{uuid.uuid4().hex}"
        self.injected_invalid.add(message_id)
        body = self.rng.choice([b"{not json", b'{"kind": "reply"}', self.rng.randbytes(64)])
        await self._send(body, service, service, message_id)
        return True

    async def _fault_oversize(self) -> bool:
        if not self.captured:
            return False
        reply, user = self.captured[-1]
        message_id = f"oversize-{uuid.uuid4().hex}"
        self.injected_invalid.add(message_id)
        body = reply.model_copy(update={"message_id": message_id}).model_dump_json().encode() + b" " * 300_000
        await self._send(body, reply.service, user, message_id)
        return True

    async def _fault_spoofed(self) -> bool:
        """A failure in a processing service's name, sent by another broker user: if the coordinator
        believed it, the release would fail."""
        running = [r for r in (await self._stored())[0] if r["state"] == ReleaseState.RUNNING.value]
        targets = [(r["_id"], s) for r in running for s, t in r["tasks"].items() if t["state"] == "running"]
        if not targets:
            return False
        release_id, service = self.rng.choice(targets)
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
        self.injected_invalid.add(forged.message_id)
        await self._send(encode(forged), service, self.intruder, forged.message_id)
        return True

    async def _send(self, body: bytes, service: str, user: str, message_id: str) -> None:
        connection = self.connections.get(user)
        if connection is None or connection.is_closed:
            connection = await self._connect(user)
            self.connections[user] = connection
        async with connection.channel(publisher_confirms=True) as channel:
            exchange = aio_pika.Exchange(channel, self.topology.replies_exchange, aio_pika.ExchangeType.TOPIC)
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

    async def _tap(self) -> None:
        """Copy real replies as they pass, to build duplicates, reorderings and stale replies from."""
        while not self.done.is_set():
            try:
                connection = await self._connect(self.installation.coordinator_user)
                async with connection:
                    channel = await connection.channel()
                    queue = await channel.declare_queue(f"{self.namespace}.chaos-tap", exclusive=True)
                    await queue.bind(self.topology.replies_exchange, "reply.*.reply")
                    async with queue.iterator() as messages:
                        async for message in messages:
                            self._capture(message)
                            await message.ack()
            except Exception:
                await asyncio.sleep(1)

    async def _connect(self, user: str) -> aio_pika.abc.AbstractConnection:
        """A plain connection as ``user`` to the broker, or to the first node of the cluster that answers."""
        urls = split_urls(self.url(user, direct=True))
        for url in urls[:-1]:
            with contextlib.suppress(OSError):
                return await aio_pika.connect(url, timeout=10)
        return await aio_pika.connect(urls[-1], timeout=10)

    def _capture(self, message: AbstractIncomingMessage) -> None:
        with contextlib.suppress(Exception):
            reply = TaskReply.model_validate_json(message.body)
            if message.user_id == reply.service and not reply.message_id.startswith(("spoofed", "oversize")):
                self.captured.append((reply, reply.service))

    # ------------------------------------------------------------------ settle and check

    async def _settle(self) -> None:
        """Faults are over: let every release reach a final state (or the resting staged state)."""
        for proc in self.procs.values():
            proc.check()
        log("settling: waiting for every release to finish")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            releases, _ = await self._stored()
            open_ = [r for r in releases if ReleaseState(r["state"]) not in TERMINAL]
            staged = [r for r in open_ if r["state"] == ReleaseState.STAGED.value]
            for release in staged:  # created by a retried request the operator never saw: clean up
                await self._admin(CancelRelease(release_id=release["_id"], reason="chaos cleanup"))
            if not open_:
                log("settled")
                return
            await asyncio.sleep(1)

    async def _stored(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Every release and every audit event, as documents keyed by ``_id``, read through the store."""
        store = store_for(self.store_url, self.database)
        await store.open()
        try:
            releases = [r async for batch in store.export_releases(500) for r in batch]
            events = [e async for batch in store.export_events(500) for e in batch]
        finally:
            await store.close()
        as_docs = [{**r.model_dump(mode="python"), "_id": r.id} for r in releases]
        return as_docs, [{**e.model_dump(mode="python"), "_id": e.id} for e in events]

    async def _check(self) -> None:
        stored, events = await self._stored()
        releases = {r["_id"]: r for r in stored}
        # (release, service) -> effect -> when the service (any of its instances) first did it
        effects: dict[tuple[str, str], dict[str, float]] = {}
        for service in self.services:
            for instance in self.instances(service):
                for entry in read_journal(self.journal(instance)):
                    done = effects.setdefault((str(entry["release"]), service), {})
                    effect, at = str(entry["effect"]), float(str(entry["at"]))
                    done[effect] = min(at, done.get(effect, at))
        states = Counter(r["state"] for r in releases.values())
        figures = self.report.figures
        figures["releases driven"] = len(self.release_ids)
        figures["releases stored"] = len(releases)
        for state in ("published", "canceled", "failed"):
            figures[f"releases {state}"] = states.get(state, 0)

        v = self.report.violations
        v["releases lost"] = sum(1 for rid in self.release_ids if rid not in releases)
        v["releases stuck in a non-final state"] = sum(
            1 for r in releases.values() if ReleaseState(r["state"]) not in TERMINAL
        )
        v["releases published while a service never staged"] = sum(
            1
            for rid, r in releases.items()
            if r["state"] == "published"
            and any(
                not _staged_before_published(effects.get((rid, s), {}))
                or t["state"] != TaskState.PUBLISHED.value
                for s, t in r["tasks"].items()
            )
        )
        v["services that published a release that ended canceled or failed"] = sum(
            1
            for (rid, _service), done in effects.items()
            if "published" in done and releases.get(rid, {}).get("state") in ("canceled", "failed")
        )
        planned = {r: s.value for r, s in self.planned.items()}
        figures.update(outcome_figures(planned, releases))
        self.report.unplanned = unplanned_ends(planned, releases)
        kept = kept_data(releases, effects)
        for release_id, service in kept:
            log(f"{service} kept staged data of {release_id}, which ended {releases[release_id]['state']}")
        v["services that kept staged data of a release that ended canceled or failed"] = len(kept)
        finals = [r["final_version"] for r in releases.values() if r.get("final_version")]
        v["duplicate final versions"] = len(finals) - len(set(finals))
        by_publication = sorted(
            (r for r in releases.values() if r.get("final_version")),
            key=lambda r: r["entered"]["publishing"],
        )
        keys = [tuple(int(x) for x in r["final_version"].split(".")) for r in by_publication]
        v["final versions not increasing in publication order"] = sum(
            1 for a, b in itertools.pairwise(keys) if b <= a
        )
        accepted = {
            e.get("message_id")
            for e in events
            if e["kind"] in (EventKind.ACCEPTED.value, EventKind.TRANSITION.value)
        }
        v["spoofed or malformed messages accepted"] = len(self.injected_invalid & accepted)
        dead = {e.get("message_id") for e in events if e["kind"] == EventKind.DEAD_LETTERED.value}
        figures["invalid messages injected"] = len(self.injected_invalid)
        figures["invalid messages dead-lettered"] = len(self.injected_invalid & dead)
        v["invalid messages neither dead-lettered nor refused"] = len(self.injected_invalid - dead)
        if self.nodes is not None:
            figures.update(recovery_figures(self.nodes.stops, events, self.release_ids))
            figures.update(switch_figures(coordinator_switches(self._workdir() / "coordinator.log")))
        v["coordinator crashes not injected"] = len(self.procs["coordinator"].uncaused_exits)
        v["service crashes not injected"] = sum(
            len(self.procs[i].uncaused_exits) for s in self.services for i in self.instances(s)
        )

    @staticmethod
    def _rabbitmqctl(*args: str) -> None:
        subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


# ---------------------------------------------------------------------- command line


def _staged_before_published(done: dict[str, float]) -> bool:
    """The service staged its data before it made it public (as its journal says)."""
    return "staged" in done and "published" in done and done["staged"] <= done["published"]


def _delete_user(user: str, management: str | None) -> None:
    if management:
        request = urllib.request.Request(
            f"{management}/api/users/{quote(user, safe='')}", method="DELETE", headers=_GUEST_AUTH
        )
        with contextlib.suppress(OSError), urllib.request.urlopen(request, timeout=30) as response:
            response.read()
    else:
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_user", user], capture_output=True, timeout=120, check=False
        )


_GUEST_AUTH = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}


def _management_url() -> str | None:
    """The management API of the local broker if it answers (much faster than rabbitmqctl)."""
    url = os.environ.get("RC_MANAGEMENT_URL", "http://127.0.0.1:15672")
    request = urllib.request.Request(f"{url}/api/overview", headers=_GUEST_AUTH)
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            response.read()
        return url
    except OSError:
        return None


def print_report(config: Config, report: Report) -> None:
    print(f"seed: {config.seed}")
    for name, value in report.figures.items():
        print(f"{name}: {value}")
    on_cluster = config.broker_fault == "node-stop"
    kinds = [k for k in FAULTS if not (on_cluster and k == "broker_outage")] + list(NODE_FAULTS) * on_cluster
    for kind in kinds:
        print(f"faults injected, {kind.replace('_', ' ')}: {report.faults.get(kind, 0)}")
    for line in report.unplanned:
        print(f"not as planned: {line}")
    for name, value in report.violations.items():
        print(f"violations, {name}: {value}")
    total_faults = sum(report.faults.values())
    print(
        f"chaos: {report.figures.get('releases driven', 0)} releases, {total_faults} faults injected, "
        f"{report.total_violations} violations"
    )


def parse(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--releases", type=int, default=20)
    parser.add_argument("--services", type=int, default=5)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--time-limit", type=float, default=900.0, help="seconds for the drivers (then settle)"
    )
    parser.add_argument(
        "--broker-fault",
        choices=("proxy", "rabbitmqctl", "node-stop"),
        default="proxy",
        help="cut every connection through a TCP proxy, stop and start the broker itself, or run on a "
        "three-node cluster and stop its nodes (bench/chaos_cluster.py)",
    )
    parser.add_argument(
        "--coordinator",
        default="coordinator",
        help="module run as the coordinator (e.g. a sabotaged one, see bench/sabotage.py)",
    )
    parser.add_argument("--fault-gap", type=float, nargs=2, default=(1.5, 4.0), metavar=("MIN", "MAX"))
    parser.add_argument(
        "--work-seconds", type=float, default=4.0, help="seconds a service processes one release (+-50%%)"
    )
    parser.add_argument(
        "--instances", type=int, default=1, help="processes per task service; a service kill takes one"
    )
    parser.add_argument("--json", type=Path, default=Path("bench/results/chaos.json"))
    args = parser.parse_args(argv)
    config = Config(
        releases=args.releases,
        services=args.services,
        time_limit=args.time_limit,
        broker_fault=args.broker_fault,
        coordinator_module=args.coordinator,
        fault_gap=(args.fault_gap[0], args.fault_gap[1]),
        work_seconds=args.work_seconds,
        instances=args.instances,
        json_path=args.json,
    )
    if config.instances < 1:
        parser.error(f"--instances must be 1 or more, not {config.instances}")
    if args.seed is not None:
        config.seed = args.seed
    return config


def main(argv: list[str] | None = None) -> int:
    config = parse(argv)
    if config.broker_fault == "node-stop":  # the run's own connections lose nodes on purpose: no tracebacks
        for name in ("aiormq", "aio_pika"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    report = asyncio.run(Chaos(config).run())
    print_report(config, report)
    if config.json_path is not None:
        config.json_path.parent.mkdir(parents=True, exist_ok=True)
        config.json_path.write_text(
            json.dumps(
                {
                    "seed": config.seed,
                    **report.figures,
                    "faults": dict(report.faults),
                    "violations": report.violations,
                    "unplanned": report.unplanned,
                },
                indent=2,
            )
            + "\n"
        )
    return 1 if report.total_violations else 0


if __name__ == "__main__":
    sys.exit(main())
