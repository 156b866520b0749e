"""Node loss for the fault-injection run (``python -m bench.chaos --broker-fault node-stop``).

The run gets a three-node RabbitMQ cluster of its own (``scripts/rabbitmq-cluster.sh``; AMQP ports
``$RC_CHAOS_CLUSTER_PORTS``, else the first three free from 5711 on; stopped and deleted at the end), every
process gets the three nodes as its ``RC_AMQP_URL``, and at seeded moments during the releases a node is
stopped (``rabbitmqctl stop``) and started again:

* ``node_stop_coordinator``: the node the coordinator is connected to;
* ``node_stop_replies_leader``: the node holding the leader of ``<ns>.coordinator.replies``;
* ``node_stop_service``: the node a task service (chosen at random) is connected to;
* ``rolling_restart``: each of the three nodes in turn.

A node is started again before the next one stops, and the next fault waits until every quorum queue of the
run has its three members online again: one node down at a time, never a majority.

Recovery: for every node stop, the seconds from the stop to the next transition of each release in flight at
that moment; the baseline is the same measure taken once a second at the other moments of the run (no node
stopped within the 30 s before), so the ratio says what a node stop costs. And the coordinator's own switch,
from its log: the seconds from a lost broker connection to being active again on another node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import statistics
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.lib import percentile
from tests._cluster import NODES, Cluster, ClusterUnavailable, claim

NODE_FAULTS = ("node_stop_coordinator", "node_stop_replies_leader", "node_stop_service", "rolling_restart")
#: How often each node fault is planned (the run adds more at random once every planned fault was tried).
PLANNED = {
    "node_stop_coordinator": 2,
    "node_stop_replies_leader": 2,
    "node_stop_service": 2,
    "rolling_restart": 1,
}
#: Moments this close after a node stop are not baseline moments.
QUIET_SECONDS = 30.0


def chaos_cluster() -> Cluster:
    """``$RC_CHAOS_CLUSTER_PORTS``, else the first three free AMQP ports from 5711 on."""
    configured = os.environ.get("RC_CHAOS_CLUSTER_PORTS", "").split()
    if not configured:
        return claim(5711)
    if len(configured) != 3 or not all(p.isdigit() for p in configured):
        raise SystemExit("RC_CHAOS_CLUSTER_PORTS must name three ports")
    ports = [int(p) for p in configured]
    return Cluster((ports[0], ports[1], ports[2]))


@contextlib.asynccontextmanager
async def running(cluster: Cluster, say: Any) -> AsyncIterator[Cluster]:
    """The cluster, started (idempotent) for the block; stopped and its state deleted afterwards."""
    say(f"starting the RabbitMQ cluster on ports {', '.join(map(str, cluster.ports))}")
    try:
        await asyncio.to_thread(cluster.start)
    except ClusterUnavailable as error:
        with contextlib.suppress(ClusterUnavailable):
            await asyncio.to_thread(cluster.clean)
        raise SystemExit(f"chaos: the RabbitMQ cluster did not start: {error}") from None
    say("cluster running")
    try:
        yield cluster
    finally:
        say("stopping the RabbitMQ cluster")
        with contextlib.suppress(ClusterUnavailable):
            await asyncio.to_thread(cluster.clean)


def node_order(position: int) -> list[int]:
    """The nodes, starting with node ``position % 3 + 1``: processes spread over the cluster."""
    first = position % len(NODES)
    return [*NODES[first:], *NODES[:first]]


@dataclass(frozen=True)
class NodeStop:
    at: float  # wall clock (seconds since the epoch), when the stop was ordered
    node: int
    kind: str


@dataclass
class NodeFaults:
    """Stops and restarts nodes; remembers when, for the recovery figures."""

    cluster: Cluster
    rng: random.Random
    namespace: str
    services: Sequence[str]
    replies_queue: str
    say: Any
    stops: list[NodeStop] = field(default_factory=list)

    async def inject(self, kind: str) -> bool:
        """Run one node fault; False if its target cannot be told now (try again later)."""
        if kind == "rolling_restart":
            for each in NODES:
                await self._stop_and_start(each, kind)
            return True
        target: int | None = await asyncio.to_thread(self._target, kind)
        if target is None:
            return False
        await self._stop_and_start(target, kind)
        return True

    def _target(self, kind: str) -> int | None:
        try:
            if kind == "node_stop_replies_leader":
                return self.cluster.leader_of(self.replies_queue)
            prefix = (
                "rc-coordinator@" if kind == "node_stop_coordinator" else f"{self.rng.choice(self.services)}@"
            )
            nodes = self.cluster.nodes_of_connections(prefix)
        except (ClusterUnavailable, LookupError, KeyError, ValueError):
            return None
        return nodes[0] if nodes else None

    async def _stop_and_start(self, node: int, kind: str) -> None:
        self.stops.append(NodeStop(time.time(), node, kind))
        self.say(f"stopping node {node} ({kind.replace('_', ' ')})")
        await asyncio.to_thread(self.cluster.stop_node, node)
        await asyncio.sleep(self.rng.uniform(0.5, 2.0))
        await asyncio.to_thread(self.cluster.start_node, node)
        started = time.monotonic()
        await self.until_replicated()
        took = time.monotonic() - started
        self.say(f"node {node} back; all quorum queues have three members online ({took:.1f}s)")

    async def until_replicated(self, within: float = 180) -> None:
        """Wait until every quorum queue of the run has its three members online."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                if await asyncio.to_thread(self._replicated):
                    return
            except (ClusterUnavailable, LookupError):
                pass
            await asyncio.sleep(0.5)
        self.say(f"not every quorum queue had three members online within {within:g}s")

    def _replicated(self) -> bool:
        queues = self.cluster.api("queues/%2F?columns=name,type,online")
        ours = [q for q in queues if q["name"].startswith(f"{self.namespace}.") and q.get("type") == "quorum"]
        return bool(ours) and all(len(q.get("online") or []) == len(NODES) for q in ours)


# ---------------------------------------------------------------------- recovery figures


def transitions_by_release(events: Iterable[dict[str, Any]]) -> dict[str, list[float]]:
    """Per release, the times (epoch seconds) it was created and moved, in order."""
    times: dict[str, list[float]] = {}
    for event in events:
        if event.get("kind") in ("created", "transition") and event.get("release_id"):
            times.setdefault(str(event["release_id"]), []).append(event["at"].timestamp())
    return {release: sorted(moments) for release, moments in times.items()}


def delays_to_next_transition(moment: float, transitions: dict[str, list[float]]) -> list[float]:
    """For each release in flight at ``moment`` (created before, moved after), seconds to its next move."""
    delays = []
    for moments in transitions.values():
        if moments[0] < moment:
            later = [t for t in moments if t > moment]
            if later:
                delays.append(later[0] - moment)
    return delays


def recovery_figures(
    stops: Sequence[NodeStop], events: Iterable[dict[str, Any]], driven: Iterable[str]
) -> dict[str, float | int]:
    """Recovery after node stops against the baseline, for the report. Only the ``driven`` releases count:
    one created by a request the operator retried waits, staged and unwatched, for the clean-up at the end."""
    ours = set(driven)
    transitions = {r: t for r, t in transitions_by_release(events).items() if r in ours}
    after_stops = [d for stop in stops for d in delays_to_next_transition(stop.at, transitions)]
    every = sorted(t for moments in transitions.values() for t in moments)
    baseline: list[float] = []
    if every:
        moment = every[0] + 1.0
        while moment < every[-1]:
            if not any(0 <= moment - stop.at < QUIET_SECONDS for stop in stops):
                baseline.extend(delays_to_next_transition(moment, transitions))
            moment += 1.0
    figures: dict[str, float | int] = {
        "node stops": len(stops),
        "releases in flight at a node stop (pairs measured)": len(after_stops),
    }
    for name, values in (("after a node stop", after_stops), ("baseline, no node stop", baseline)):
        if values:
            figures[f"seconds to the next transition {name}, p50"] = round(statistics.median(values), 2)
            figures[f"seconds to the next transition {name}, p95"] = round(percentile(values, 95), 2)
    if after_stops and baseline:
        figures["recovery ratio (p50 after a node stop / p50 baseline)"] = round(
            statistics.median(after_stops) / statistics.median(baseline), 2
        )
    return figures


def coordinator_switches(log: Path) -> list[float]:
    """Seconds from each "broker connection lost" of the coordinator's log to its next "active"."""
    lost: float | None = None
    switches = []
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        try:
            entry = json.loads(line)
            at = datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00")).timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        if entry.get("event") == "broker connection lost; reconnecting":
            lost = at
        elif entry.get("event") == "active" and lost is not None:
            switches.append(at - lost)
            lost = None
    return switches


def switch_figures(switches: Sequence[float]) -> dict[str, float | int]:
    if not switches:
        return {}
    return {
        "coordinator switches to another node": len(switches),
        "seconds from a lost node to the coordinator active again, p50": round(
            statistics.median(switches), 2
        ),
        "seconds from a lost node to the coordinator active again, max": round(max(switches), 2),
    }
