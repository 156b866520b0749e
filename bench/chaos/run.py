"""The chaos run itself: its installation on the broker, its store, its processes, and the order of things
(drive the releases with their planned faults, settle, check)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench.chaos.check import check, settle, stored
from bench.chaos.common import (
    ADMIN_AMQP_URL,
    BROKER_PORT,
    FAULTS,
    TIMEOUTS,
    Config,
    Proc,
    Report,
    delete_user,
    log,
    management_url,
)
from bench.chaos.faults import Injector
from bench.chaos.operator import Operator
from bench.chaos_cluster import NODE_FAULTS, PLANNED, NodeFaults, chaos_cluster, node_order
from bench.chaos_cluster import running as cluster_running
from bench.chaos_plan import make_plan
from bench.lib import file_handles
from coordinator.store import default_store_url, store_for
from deploy.apply import grant
from deploy.definitions import Installation, Permission
from schemas.topology import Topology
from tests._harness import delete_namespace
from tests._proxy import TcpProxy


class Chaos:
    def __init__(self, config: Config) -> None:
        self.config = config
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
        budget = file_handles() if config.broker_fault == "rabbitmqctl" else None
        self.handle_budget = budget[0] if budget else None
        self.procs: dict[str, Proc] = {}
        self.proxy: TcpProxy | None = None
        self.cluster = chaos_cluster() if config.broker_fault == "node-stop" else None
        self.nodes: NodeFaults | None = None
        self.store_url = ""
        self._workdir: Path | None = None
        self.database = f"chaos_{self.hex}"
        self.plan = make_plan(
            config.seed,
            self.first_round(),
            self.fault_kinds(),
            releases=config.releases,
            fault_gap=config.fault_gap,
        )
        self.injector = Injector(self)
        self.operator = Operator(self)

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

    def first_round(self) -> list[str]:
        """The faults every run injects: each kind once (node faults as often as planned)."""
        kinds = self.fault_kinds()
        once = [k for k in kinds if k not in NODE_FAULTS]
        return once + [k for k in kinds for _ in range(PLANNED.get(k, 0))]

    def fault_kinds(self) -> tuple[str, ...]:
        """The faults of this run: on the cluster, node faults instead of the broker outage."""
        if self.cluster is None:
            return FAULTS
        return (*(k for k in FAULTS if k != "broker_outage"), *NODE_FAULTS)

    def instances(self, service: str) -> list[str]:
        """The processes of one service: its name alone, or ``NAME#i`` with several instances."""
        if self.config.instances == 1:
            return [service]
        return [f"{service}#{i}" for i in range(1, self.config.instances + 1)]

    def journal(self, instance: str) -> Path:
        return self.workdir() / f"{instance}.journal"

    def workdir(self) -> Path:
        """The run's folder (logs, journals, the SQLite store): the configured one or a new temporary one."""
        if self._workdir is None:
            workdir = self.config.workdir or Path(tempfile.mkdtemp(prefix="rc-chaos-"))
            workdir.mkdir(parents=True, exist_ok=True)
            self._workdir = workdir
        return self._workdir

    async def stored(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Every release and every audit event of the run's store, as documents keyed by ``_id``."""
        return await stored(self.store_url, self.database)

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
            await self.operator.require_services()
            done = asyncio.Event()
            tap = asyncio.create_task(self.injector.tap(done))
            try:
                await asyncio.wait_for(self.operator.drive_all(), self.config.time_limit)
            except TimeoutError:
                log("time limit reached: stopping the drivers")
            done.set()
            tap.cancel()
            await asyncio.gather(tap, return_exceptions=True)
            await settle(self)
            await check(self)
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
        management = self.cluster.management_url(1) if self.cluster else management_url()
        try:
            await asyncio.to_thread(
                grant, self.installation, self.passwords, management_url=management, extra=intruder
            )
            yield
        finally:
            await self.injector.close()
            if self.cluster is None:  # (the cluster is deleted with all it holds)
                await self._delete_installation(management)

    async def _delete_installation(self, management: str | None) -> None:
        try:
            await delete_namespace(ADMIN_AMQP_URL, self.namespace)
        except Exception as error:  # still delete the users: they must not outlive the run
            log(f"could not delete every queue of {self.namespace}: {error!r}")
        for user in (*self.installation.users(), self.intruder):
            await asyncio.to_thread(delete_user, user, management)
        log("broker users, queues and exchanges deleted")

    @contextlib.asynccontextmanager
    async def _store(self) -> AsyncIterator[None]:
        """``RC_STORE_URL`` or ``RC_MONGODB_URL`` if set (its database is dropped at the end), else the
        default engine: a SQLite file in the run's folder."""
        configured = os.environ.get("RC_STORE_URL") or os.environ.get("RC_MONGODB_URL")
        self.store_url = configured or default_store_url(self.namespace, self.workdir())
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
                rng = random.Random(f"chaos-nodes:{self.config.seed}")
                self.nodes = NodeFaults(
                    self.cluster, rng, self.namespace, self.services, topology.replies_queue, log
                )
                yield
            return
        self.proxy = TcpProxy("127.0.0.1", BROKER_PORT)
        await self.proxy.start()
        try:
            yield
        finally:
            await self.proxy.stop()

    def _coordinator(self, workdir: Path, base: dict[str, str]) -> Proc:
        env = {
            **base,
            **TIMEOUTS,
            "RC_AMQP_URL": self.url(self.installation.coordinator_user),
            "RC_STORE_URL": self.store_url,
            "RC_MONGODB_DATABASE": self.database,
            "RC_NAMESPACE": self.namespace,
            "RC_METRICS_PORT": "0",
        }
        module = self.config.coordinator_module.split()
        return Proc("coordinator", [sys.executable, "-m", *module], env, workdir / "coordinator.log")

    def _service(self, workdir: Path, base: dict[str, str], position: int, instance: str) -> Proc:
        service = self.services[position]
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
        return Proc(instance, argv, env, workdir / f"{instance}.log")

    @contextlib.asynccontextmanager
    async def _processes(self) -> AsyncIterator[None]:
        workdir = self.workdir()
        log(f"logs and journals in {workdir}")
        base = {k: v for k, v in os.environ.items() if not k.startswith("RC_")}
        self.procs["coordinator"] = self._coordinator(workdir, base)
        for position, service in enumerate(self.services):
            for instance in self.instances(service):
                self.procs[instance] = self._service(workdir, base, position, instance)
        try:
            self.procs["coordinator"].start()
            await asyncio.sleep(1.5)  # the coordinator declares the topology the services check for
            for name, proc in self.procs.items():
                if name != "coordinator":
                    proc.start()
            yield
        finally:
            await asyncio.gather(*(asyncio.to_thread(proc.stop) for proc in self.procs.values()))
            log("processes stopped")
