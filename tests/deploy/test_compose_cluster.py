"""The `cluster` profile of docker-compose.yml holds together (structure only: no Docker engine here).

Three RabbitMQ nodes sharing a cookie and finding each other by name, every quorum queue grown to the three
nodes once they run, a three-member MongoDB replica set initiated once, two coordinators and the example
services, each process with the three broker nodes (its own user) in its RC_AMQP_URL.
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas.broker_url import broker_user, split_urls

ROOT = Path(__file__).resolve().parents[2]
NODES = ("rabbitmq-1", "rabbitmq-2", "rabbitmq-3")
MEMBERS = ("mongodb-1", "mongodb-2", "mongodb-3")
COORDINATORS = ("coordinator-1", "coordinator-2")
TASKS = {
    "cluster-portal": ("portal", "examples.portal:Portal"),
    "cluster-search-index": ("search-index", "examples.search_index:SearchIndex"),
    "cluster-file-service": ("file-service", "examples.file_service:FileService"),
}
VARIABLE = re.compile(r"\$\{([A-Z_]+):\?[^}]*\}")


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return {name: s for name, s in document["services"].items() if "cluster" in s.get("profiles", ())}


def env(service: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in service.get("environment", {}).items()}


def resolved(value: str) -> str:
    """``value`` with every ``${VAR:?...}`` replaced by a placeholder password."""
    return VARIABLE.sub(lambda match: f"secret-{match.group(1).lower()}", value)


def test_the_profile_has_every_part(services: dict[str, Any]) -> None:
    assert set(services) == {
        *NODES,
        "rabbitmq-init",
        *MEMBERS,
        "mongodb-init",
        *COORDINATORS,
        *TASKS,
    }
    for name, service in services.items():
        assert service["restart"] in ("unless-stopped", "on-failure"), name
        if not name.endswith("-init"):
            assert service["restart"] == "unless-stopped", name
            assert service["healthcheck"]["test"], name


def test_three_rabbitmq_nodes_share_a_cookie_and_find_each_other(services: dict[str, Any]) -> None:
    for node in NODES:
        service = services[node]
        assert service["image"] == "rabbitmq:3.13-management"
        assert service["hostname"] == node
        assert env(service)["RABBITMQ_ERLANG_COOKIE"].startswith("${RC_ERLANG_COOKIE:?")
        assert "./deploy/rabbitmq/rabbitmq-cluster.conf:/etc/rabbitmq/rabbitmq.conf:ro" in service["volumes"]
        assert "broker-definitions:/etc/rabbitmq/definitions:ro" in service["volumes"]
        assert service["ulimits"]["nofile"]["soft"] >= 65536
    for node in NODES[1:]:  # node 1 forms the cluster, the others join it
        assert services[node]["depends_on"] == {"rabbitmq-1": {"condition": "service_healthy"}}
    config = (ROOT / "deploy/rabbitmq/rabbitmq-cluster.conf").read_text(encoding="utf-8")
    assert re.search(r"^cluster_formation\.peer_discovery_backend\s*=\s*classic_config$", config, re.M)
    named = re.findall(r"^cluster_formation\.classic_config\.nodes\.\d\s*=\s*rabbit@(\S+)$", config, re.M)
    assert named == list(NODES)
    assert re.search(r"^cluster_partition_handling\s*=\s*pause_minority$", config, re.M)
    assert re.search(r"^load_definitions\s*=\s*/etc/rabbitmq/definitions/definitions\.json$", config, re.M)


def test_quorum_queues_get_a_member_on_every_node(services: dict[str, Any]) -> None:
    """The definitions are loaded by node 1 alone: their queues are grown to nodes 2 and 3 afterwards."""
    init = services["rabbitmq-init"]
    assert init["depends_on"] == {node: {"condition": "service_healthy"} for node in NODES}
    command = " ".join(init["command"])
    for node in NODES[1:]:
        assert f"rabbitmq-queues --node rabbit@rabbitmq-1 grow rabbit@{node} all" in command


def test_a_three_member_replica_set_initiated_once(services: dict[str, Any]) -> None:
    for member in MEMBERS:
        service = services[member]
        assert service["image"] == "mongo:7"
        assert service["hostname"] == member
        started = " ".join(service["entrypoint"])
        assert "mongod --replSet rc" in started
        assert "--keyFile" in started
        assert env(service)["RC_MONGODB_KEYFILE"].startswith("${RC_MONGODB_KEYFILE:?")
        assert f"{member}-data:/data/db" in service["volumes"]
    init = services["mongodb-init"]
    assert init["depends_on"] == {member: {"condition": "service_healthy"} for member in MEMBERS}
    script = " ".join(init["entrypoint"])
    assert "rs.initiate" in script
    assert re.findall(r'host: "(mongodb-\d):27017"', script) == list(MEMBERS)


def test_two_coordinators_on_every_node_and_the_replica_set(services: dict[str, Any]) -> None:
    firsts = set()
    for name in COORDINATORS:
        service = services[name]
        assert service["command"] == ["rc-coordinator"]
        assert service["depends_on"] == {
            "rabbitmq-init": {"condition": "service_completed_successfully"},
            "mongodb-init": {"condition": "service_completed_successfully"},
        }
        variables = env(service)
        urls = split_urls(resolved(variables["RC_AMQP_URL"]))
        assert sorted(urllib.parse.urlsplit(url).hostname or "" for url in urls) == list(NODES)
        assert {broker_user(url) for url in urls} == {"rc-coordinator"}
        firsts.add(urllib.parse.urlsplit(urls[0]).hostname)
        mongo = urllib.parse.urlsplit(resolved(variables["RC_MONGODB_URL"]))
        assert mongo.netloc.rsplit("@", 1)[1] == ",".join(f"{m}:27017" for m in MEMBERS)
        assert "replicaSet=rc" in mongo.query
    assert len(firsts) == 2, "the two coordinators start on different nodes"


def test_the_example_services_use_every_node_as_their_own_user(services: dict[str, Any]) -> None:
    for name, (user, handler) in TASKS.items():
        service = services[name]
        assert service["command"] == ["rc-task", handler]
        assert service["depends_on"] == {"rabbitmq-init": {"condition": "service_completed_successfully"}}
        urls = split_urls(resolved(env(service)["RC_AMQP_URL"]))
        assert sorted(urllib.parse.urlsplit(url).hostname or "" for url in urls) == list(NODES)
        assert {broker_user(url) for url in urls} == {user}
        assert service["healthcheck"]["test"] == ["CMD", "python", "-m", "deploy.healthcheck", "task", user]
        assert f"{name}-state:/var/lib/rc" in service["volumes"]
