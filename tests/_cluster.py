"""The local three-node RabbitMQ cluster of ``scripts/rabbitmq-cluster.sh``, for the tests and the chaos run.

::

    cluster = Cluster((5721, 5722, 5723))
    cluster.start()                          # idempotent; ClusterUnavailable with the reason if it fails
    url = cluster.urls([1, 2, 3])            # "amqp://guest:guest@127.0.0.1:5721/,...": node 1 first
    cluster.node_of_connection("portal@")    # which node (1, 2 or 3) a client is connected to
    cluster.stop_node(1); cluster.start_node(1)
    cluster.clean()                          # stop every node and delete the state directory

Where the cluster is seen from: the management API of each node (AMQP port + 10000), asked of the first
node that answers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import aiormq

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "rabbitmq-cluster.sh"
NODES = (1, 2, 3)
#: In a cluster's state directory: the pid of the process that started it for itself (a test session, a
#: chaos run), so that a cluster left behind by one that was killed can be told and stopped.
OWNER_FILE = "owner.pid"


class ClusterUnavailable(RuntimeError):
    """The cluster could not be started, stopped or reached; the text says why."""


@dataclass
class Cluster:
    ports: tuple[int, int, int]
    #: Default: the script's own, ``${TMPDIR:-/tmp}/rc-rabbitmq-cluster-<first port>``.
    state_dir: Path | None = None
    user: str = "guest"
    password: str = "guest"

    # ------------------------------------------------------------------ the script

    def run(self, *args: str, timeout: float = 300) -> str:
        """``scripts/rabbitmq-cluster.sh ARGS`` for this cluster; its output, or ClusterUnavailable."""
        env = {
            **os.environ,
            "RC_CLUSTER_PORTS": " ".join(map(str, self.ports)),
        }
        if self.state_dir is not None:
            env["RC_CLUSTER_DIR"] = str(self.state_dir)
        try:
            done = subprocess.run(
                [str(SCRIPT), *args],
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise ClusterUnavailable(f"rabbitmq-cluster.sh {' '.join(args)}: {error}") from None
        output = (done.stdout + done.stderr).strip()
        if done.returncode != 0:
            raise ClusterUnavailable(f"rabbitmq-cluster.sh {' '.join(args)} failed:\n{output[-3000:]}")
        return output

    def start(self) -> str:
        return self.run("start")

    def clean(self) -> str:
        return self.run("clean")

    def stop_node(self, node: int) -> None:
        self.run("stop-node", str(node))

    def start_node(self, node: int) -> None:
        self.run("start-node", str(node))

    def restart_node(self, node: int) -> None:
        self.stop_node(node)
        self.start_node(node)

    def leftovers(self) -> list[str]:
        """What of this cluster still runs: each process started as one of its nodes (the script names a
        node in ``RABBITMQ_NODENAME``), and each of its AMQP ports that still accepts a connection; empty
        once ``stop`` did its job."""
        names = {f"RABBITMQ_NODENAME={self.node_name(node)}".encode() for node in NODES}
        found = []
        for environ in Path("/proc").glob("[0-9]*/environ"):
            with contextlib.suppress(OSError):
                command = (environ.parent / "comm").read_text().strip()
                # epmd, started by the first Erlang node of the machine, serves every node: not a leftover
                if command != "epmd" and names.intersection(environ.read_bytes().split(b"\0")):
                    found.append(f"pid {environ.parent.name} ({command})")
        for port in self.ports:
            with socket.socket() as sock, contextlib.suppress(OSError):
                sock.settimeout(1)
                sock.connect(("127.0.0.1", port))
                found.append(f"port {port} accepts connections")
        return found

    # ------------------------------------------------------------------ addresses

    def port(self, node: int) -> int:
        return self.ports[node - 1]

    def node_name(self, node: int) -> str:
        return f"rc-{self.port(node)}@localhost"

    def node_number(self, name: str) -> int:
        """1, 2 or 3 for a node name; ValueError for a node not of this cluster."""
        for node in NODES:
            if self.node_name(node) == name:
                return node
        raise ValueError(f"{name!r} is not a node of this cluster")

    def url(
        self, node: int, *, user: str | None = None, password: str | None = None, vhost: str = "/"
    ) -> str:
        credentials = (
            f"{urllib.parse.quote(user or self.user, safe='')}:"
            f"{urllib.parse.quote(password or self.password, safe='')}"
        )
        return f"amqp://{credentials}@127.0.0.1:{self.port(node)}/{urllib.parse.quote(vhost, safe='')}"

    def urls(
        self,
        order: Sequence[int] = NODES,
        *,
        user: str | None = None,
        password: str | None = None,
        vhost: str = "/",
    ) -> str:
        """``RC_AMQP_URL`` listing the nodes in ``order`` (the first is tried first)."""
        return ",".join(self.url(node, user=user, password=password, vhost=vhost) for node in order)

    def management_url(self, node: int) -> str:
        return f"http://127.0.0.1:{self.port(node) + 10000}"

    # ------------------------------------------------------------------ what the cluster says

    def api(self, path: str) -> Any:
        """GET ``/api/<path>`` from the first node whose management API answers."""
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        failures = []
        for node in NODES:
            request = urllib.request.Request(
                f"{self.management_url(node)}/api/{path}", headers={"Authorization": f"Basic {token}"}
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return json.load(response)
            except urllib.error.HTTPError as error:
                if error.code == 404:
                    raise LookupError(f"/api/{path}: not found") from None
                failures.append(f"node {node}: HTTP {error.code}")
            except (OSError, ValueError) as error:
                failures.append(f"node {node}: {error}")
        raise ClusterUnavailable(f"no management API answered /api/{path}: {'; '.join(failures)}")

    def running_nodes(self) -> list[int]:
        return sorted(self.node_number(n["name"]) for n in self.api("nodes") if n.get("running"))

    def connections(self) -> list[dict[str, Any]]:
        """Every client connection: its ``name`` (``connection_name`` the client gave) and ``node``."""
        found = []
        for item in self.api("connections?columns=name,node,user,client_properties"):
            properties = item.get("client_properties") or {}
            found.append(
                {
                    "name": str(properties.get("connection_name") or item.get("name")),
                    "node": self.node_number(item["node"]),
                    "user": item.get("user"),
                }
            )
        return found

    def nodes_of_connections(self, prefix: str) -> list[int]:
        """The nodes of the connections whose name starts with ``prefix`` (a service's ``<name>@``)."""
        return sorted(c["node"] for c in self.connections() if c["name"].startswith(prefix))

    def queue(self, name: str, vhost: str = "/") -> dict[str, Any]:
        """A queue as the management API shows it (``leader``, ``members``, ``online``, ``messages``...)."""
        info: dict[str, Any] = self.api(
            f"queues/{urllib.parse.quote(vhost, safe='')}/{urllib.parse.quote(name, safe='')}"
        )
        return info

    def queue_names(self, vhost: str = "/") -> list[str]:
        return [q["name"] for q in self.api(f"queues/{urllib.parse.quote(vhost, safe='')}?columns=name")]

    def leader_of(self, queue: str, vhost: str = "/") -> int:
        """The node holding the leader of a quorum queue."""
        return self.node_number(self.queue(queue, vhost)["leader"])

    async def connect(
        self, order: Sequence[int] = NODES, vhost: str = "/"
    ) -> aio_pika.abc.AbstractConnection:
        """A plain connection (as guest) to the first node of ``order`` that answers."""
        failure: Exception | None = None
        for node in order:
            try:
                return await aio_pika.connect(self.url(node, vhost=vhost), timeout=10)
            except (TimeoutError, OSError) as error:
                failure = error
        raise ClusterUnavailable(f"no node of {list(order)} answers: {failure}")

    async def delete_namespace(self, namespace: str, vhost: str = "/") -> None:
        """Delete the queues and exchanges named ``<namespace>.*`` (quorum queues hold file handles)."""
        queues = [q for q in self.queue_names(vhost) if q.startswith(f"{namespace}.")]
        exchanges = [
            e["name"]
            for e in self.api(f"exchanges/{urllib.parse.quote(vhost, safe='')}?columns=name")
            if e["name"].startswith(f"{namespace}.")
        ]
        connection = await self.connect(vhost=vhost)
        async with connection:
            channel = await connection.channel()
            for name in queues:
                try:  # never if_unused/if_empty: quorum queues refuse them
                    await channel.queue_delete(name, if_unused=False, if_empty=False)
                except aiormq.exceptions.ChannelLockedResource:  # exclusive, of a connection still open
                    channel = await connection.channel()
            for name in exchanges:
                await channel.exchange_delete(name, if_unused=False)


async def wait_for(condition: Any, within: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``condition()`` (sync or async) until it returns something truthy; AssertionError naming
    ``what`` after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last_error: Exception | None = None
    while True:
        try:
            result = condition()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
        except (ClusterUnavailable, LookupError, OSError) as error:
            last_error = error
        if loop.time() > deadline:
            suffix = f" (last error: {last_error})" if last_error else ""
            raise AssertionError(f"{what}: not within {within:g}s{suffix}")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def node_stopped(cluster: Cluster, node: int) -> AsyncIterator[None]:
    """Node ``node`` stopped for the block, started again after it (even if the block fails). The script
    runs in a thread: the event loop (the clients under test) goes on meanwhile."""
    await asyncio.to_thread(cluster.stop_node, node)
    try:
        yield
    finally:
        await asyncio.to_thread(cluster.start_node, node)


# ---------------------------------------------------------------------- a cluster of one's own


def state_dir(first_port: int) -> Path:
    """The script's default state directory for a cluster whose first AMQP port is ``first_port``."""
    return Path(tempfile.gettempdir()) / f"rc-rabbitmq-cluster-{first_port}"


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def claim(first_port: int, tries: int = 20) -> Cluster:
    """A cluster of this process's own: the first three consecutive AMQP ports from ``first_port`` on
    (stepping by three) whose ports and their management (+10000) and distribution (+20000) ports are all
    free, recorded as owned by this process. Clusters left by dead owners are stopped first."""
    stop_abandoned()
    for base in range(first_port, first_port + 3 * tries, 3):
        ports = (base, base + 1, base + 2)
        if state_dir(base).exists() or not all(_bindable(p + d) for p in ports for d in (0, 10000, 20000)):
            continue
        state_dir(base).mkdir(parents=True)
        (state_dir(base) / OWNER_FILE).write_text(str(os.getpid()))
        return Cluster(ports)
    raise ClusterUnavailable(f"no three free ports from {first_port} on (tried {tries} sets)")


def stop_abandoned() -> list[int]:
    """Stop and delete the clusters whose owning process is gone; their first ports."""
    stopped = []
    for directory in Path(tempfile.gettempdir()).glob("rc-rabbitmq-cluster-*"):
        try:
            owner = int((directory / OWNER_FILE).read_text().strip())
            ports = sorted(int(child.name) for child in directory.iterdir() if child.name.isdigit())
        except (OSError, ValueError):
            continue
        if _alive(owner) or len(ports) != 3:
            continue
        with contextlib.suppress(ClusterUnavailable):
            Cluster((ports[0], ports[1], ports[2])).clean()
            stopped.append(ports[0])
    return stopped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
