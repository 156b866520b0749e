"""A broker node stops in the middle of a release: the release goes on, on the other two nodes.

Which node each client uses is set by the order of its URLs and checked on the broker before the stop.
"""

from __future__ import annotations

from collections import Counter

from rc_cli.client import AdminClient
from schemas.enums import ReleaseState
from schemas.messages import PublishRelease
from schemas.topology import Topology
from tests._cluster import Cluster, node_stopped, wait_for
from tests.cluster.conftest import (
    RunningCoordinator,
    StartCoordinator,
    StartService,
    ask,
    create_release,
    release_in,
    require_healthy,
)


def where(cluster: Cluster) -> dict[str, list[int]]:
    """The nodes the coordinator and the two services are connected to, as the broker sees them."""
    return {
        name: cluster.nodes_of_connections(prefix)
        for name, prefix in (
            ("coordinator", "rc-coordinator@"),
            ("portal", "portal@"),
            ("search-index", "search-index@"),
        )
    }


async def test_a_release_publishes_when_the_node_of_its_coordinator_and_of_a_service_stops(
    cluster: Cluster,
    coordinators: StartCoordinator,
    services: StartService,
    operator: AdminClient,
    cluster_namespace: str,
) -> None:
    coordinator = await coordinators(cluster.urls([1, 2, 3]))
    portal = await services("portal", cluster.urls([1, 2, 3]))
    search = await services("search-index", cluster.urls([2, 3, 1]))
    await require_healthy(operator, ["portal", "search-index"])
    release_id = await create_release(operator)
    for handler in (portal, search):
        await wait_for(handler.processing.is_set, 30, f"{handler.service}: process() begun")
    before = {"coordinator": [1], "portal": [1], "search-index": [2]}
    await wait_for(lambda: where(cluster) == before, 30, f"clients on the nodes {before}")

    async with node_stopped(cluster, 1):
        await wait_for(
            lambda: active_elsewhere(cluster, coordinator), 60, "the coordinator active on node 2 or 3"
        )
        await wait_for(lambda: where(cluster)["portal"] in ([2], [3]), 60, "portal on another node")
        for handler in (portal, search):
            handler.go.set()
        await release_in(operator, release_id, ReleaseState.STAGED)
        await ask(operator, PublishRelease(release_id=release_id))
        await release_in(operator, release_id, ReleaseState.PUBLISHED)
        for handler in (portal, search):
            assert handler.calls == Counter(initialize=1, process=1, publish=1), handler.service
        assert await dead_letters(cluster, Topology(cluster_namespace)) == 0

    # Every quorum queue of the installation has three members (the initial group size RabbitMQ 3.10
    # gives on a cluster of three nodes), all back online now that node 1 is.
    topology = Topology(cluster_namespace)
    quorum = [topology.replies_queue, topology.admin_queue, topology.dead_letter_queue]
    quorum += [topology.task_queue("portal"), topology.task_queue("search-index")]
    for queue in quorum:
        await wait_for(lambda: all_online(cluster, queue), 60, f"{queue}: 3 members online")  # noqa: B023
        assert sorted(cluster.queue(queue)["members"]) == sorted(cluster.node_name(n) for n in (1, 2, 3))


def active_elsewhere(cluster: Cluster, running: RunningCoordinator) -> bool:
    return running.coordinator.active.is_set() and where(cluster)["coordinator"] in ([2], [3])


def all_online(cluster: Cluster, queue: str) -> bool:
    return len(cluster.queue(queue).get("online") or []) == 3


async def dead_letters(cluster: Cluster, topology: Topology) -> int:
    connection = await cluster.connect([2, 3])
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(topology.dead_letter_queue, passive=True)
        return int(queue.declaration_result.message_count or 0)
