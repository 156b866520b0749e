"""Leader election across a node switch: exactly one coordinator is active before, during and after the
node of the active one stops (the exclusive queue ``<ns>.coordinator.leader`` is the lock)."""

from __future__ import annotations

import asyncio

from rc_cli.client import AdminClient
from schemas.messages import ListServices, ServiceList
from schemas.topology import Topology
from tests._cluster import Cluster, node_stopped, wait_for
from tests.cluster.conftest import RunningCoordinator, StartCoordinator, ask


class Leadership:
    """Watches the coordinators' ``active`` events: how many are active, and the most ever at once."""

    def __init__(self, coordinators: dict[str, RunningCoordinator]) -> None:
        self.active: set[str] = set()
        self.most_at_once = 0
        self.history: list[tuple[str, bool]] = []
        for name, running in coordinators.items():
            running.coordinator.active = _Tracked(self, name, running.coordinator.active.is_set())

    def changed(self, name: str, active: bool) -> None:
        if active:
            self.active.add(name)
        else:
            self.active.discard(name)
        self.history.append((name, active))
        self.most_at_once = max(self.most_at_once, len(self.active))


class _Tracked(asyncio.Event):
    def __init__(self, watcher: Leadership, name: str, is_set: bool) -> None:
        super().__init__()
        self.watcher, self.name = watcher, name
        if is_set:
            self.set()

    def set(self) -> None:
        super().set()
        self.watcher.changed(self.name, True)

    def clear(self) -> None:
        super().clear()
        self.watcher.changed(self.name, False)


async def consumers_of(cluster: Cluster, queue: str) -> int:
    connection = await cluster.connect([3, 2])
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.consumer_count or 0)


async def test_exactly_one_coordinator_is_active_across_the_loss_of_the_leaders_node(
    cluster: Cluster, coordinators: StartCoordinator, operator: AdminClient, cluster_namespace: str
) -> None:
    first = await coordinators(cluster.urls([1, 2, 3]))  # active, on node 1
    second = await coordinators(cluster.urls([2, 3, 1]), wait_active=False)  # stands by, on node 2
    watch = Leadership({"first": first, "second": second})
    replies = Topology(cluster_namespace).replies_queue
    assert watch.active == {"first"}
    # The active one holds its connection to node 1 (the standby connects to node 2 once a second).
    await wait_for(lambda: 1 in cluster.nodes_of_connections("rc-coordinator@"), 30, "the leader on node 1")
    assert await consumers_of(cluster, replies) == 1

    async with node_stopped(cluster, 1):
        await wait_for(lambda: ("first", False) in watch.history, 30, "the first one's session ended")
        await wait_for(lambda: len(watch.active) == 1, 60, "a coordinator active again")
        assert isinstance(await ask(operator, ListServices()), ServiceList)  # it answers
        assert await consumers_of(cluster, replies) == 1
    assert len(watch.active) == 1
    assert await consumers_of(cluster, replies) == 1
    assert watch.most_at_once == 1, watch.history
