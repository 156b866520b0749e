"""Every ``rc-task`` option, end to end: the installed console script, started as a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import urllib.parse
from pathlib import Path

import pytest

from schemas.broker_url import broker_user
from schemas.enums import Action, Outcome
from schemas.messages import Heartbeat, TaskReply, encode
from schemas.topology import Topology
from task_sdk import Settings, SqliteOutcomeStore
from task_sdk.testing import make_command, make_release
from tests.sdk._rabbit import REPOSITORY, RabbitBackend, next_message, rc_task_command
from tests.sdk.handlers import SERVICE

pytestmark = pytest.mark.integration


async def test_every_option_of_the_rc_task_command(amqp_url: str, namespace: str, tmp_path: Path) -> None:
    coordinator = RabbitBackend(Settings(amqp_url=amqp_url, namespace=namespace), amqp_url)
    await coordinator.open(SERVICE)
    state_dir = tmp_path / "state"
    options = ["--amqp-url", amqp_url, "--namespace", namespace, "--concurrency", "3"]
    options += ["--heartbeat-seconds", "0.25", "--state-dir", str(state_dir), "--shutdown-timeout", "4"]
    options += ["--publish-timeout", "4", "--reconnect-seconds", "0.5", "--log-level", "debug"]
    environment = {key: value for key, value in os.environ.items() if not key.startswith("RC_")}
    environment["RC_COORDINATOR_USER"] = broker_user(amqp_url)  # the test plays the coordinator
    service = await asyncio.create_subprocess_exec(
        *rc_task_command(),
        "tests.sdk.handlers:Slow",
        *options,
        cwd=REPOSITORY,
        env=environment,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        first = await next_message(coordinator, Heartbeat, within=8)  # --amqp-url and --namespace
        second = await next_message(coordinator, Heartbeat, within=2)
        initialize = make_command(SERVICE, Action.INITIALIZE, make_release())
        await coordinator.send(encode(initialize), Topology.command_key(SERVICE, Action.INITIALIZE))
        reply = await next_message(coordinator, TaskReply, within=5)
        service.send_signal(signal.SIGTERM)
        exit_code = await asyncio.wait_for(service.wait(), 8)
    finally:
        if service.returncode is None:
            service.kill()
            await service.wait()
        await coordinator.close()
    assert service.stderr is not None
    stderr = (await service.stderr.read()).decode(errors="replace")

    assert exit_code == 0, stderr[-3000:]
    assert (second.sent_at - first.sent_at).total_seconds() < 1  # --heartbeat-seconds (default 5)
    assert reply.outcome is Outcome.ACCEPTED
    store = SqliteOutcomeStore.in_directory(state_dir, SERVICE)  # --state-dir
    try:
        assert store.outcome(initialize.release_id, Action.INITIALIZE) == reply
    finally:
        store.close()
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    started = next(line for line in lines if line["event"] == "runner.started")
    assert {key: started[key] for key in ("concurrency", "shutdown_timeout", "state_dir")} == {
        "concurrency": 3,
        "shutdown_timeout": 4.0,
        "state_dir": str(state_dir),
    }
    assert (started["publish_timeout"], started["reconnect_seconds"]) == (4.0, 0.5)
    assert any(line["event"] == "slow.initialize" for line in lines)  # --log-level debug
    password = urllib.parse.urlsplit(amqp_url).password
    assert password is None or f":{password}@" not in stderr  # the URL is logged masked
