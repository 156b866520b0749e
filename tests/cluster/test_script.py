"""scripts/rabbitmq-cluster.sh: idempotent, says what it does, and refuses bad input in one line."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests._cluster import SCRIPT, Cluster, ClusterUnavailable


def test_start_on_a_running_cluster_changes_nothing(cluster: Cluster) -> None:
    output = cluster.start()
    for node in (1, 2, 3):
        assert f"node {node} {cluster.node_name(node)} already running" in output
    assert "joins" not in output
    assert "cluster running:" in output
    status = cluster.run("status")
    assert status.count(" running (pid ") == 3
    assert all(cluster.node_name(node) in status.splitlines()[-2] for node in (1, 2, 3))
    assert cluster.run("urls", "guest:guest") == ",".join(
        f"amqp://guest:guest@127.0.0.1:{p}/" for p in cluster.ports
    )


@pytest.mark.parametrize(
    ("args", "env", "error"),
    [
        (["stop-node", "4"], {}, "node number must be 1, 2 or 3, not '4'"),
        (["frobnicate"], {}, "usage: "),
        (["status"], {"RC_CLUSTER_PORTS": "5801 5802"}, "RC_CLUSTER_PORTS must name three ports"),
        (["status"], {"RC_CLUSTER_PORTS": "5801 5802 99999"}, "invalid port '99999'"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(args: list[str], env: dict[str, str], error: str) -> None:
    done = subprocess.run(
        [str(SCRIPT), *args],
        env={**os.environ, "RC_CLUSTER_PORTS": "5801 5802 5803", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith(f"rabbitmq-cluster: {error}")
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_stopped_cluster_says_so() -> None:
    stopped = Cluster((5801, 5802, 5803))
    with pytest.raises(ClusterUnavailable) as raised:  # status exits 1 when not every node runs
        stopped.run("status")
    assert "node 1 rc-5801@localhost AMQP 127.0.0.1:5801 stopped" in str(raised.value)
    assert "not running" in stopped.run("stop")
