"""SIGTERM while ``process`` runs: the service stops taking commands, finishes the step, replies, exits 0.

The service runs as a real subprocess started like production does (``python -m task_sdk.cli``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from schemas.broker_url import broker_user
from schemas.enums import Action, Outcome
from schemas.messages import Heartbeat, Progress, TaskReply, encode
from schemas.topology import Topology
from task_sdk import Settings
from task_sdk.testing import make_command, make_release
from tests.sdk._rabbit import REPOSITORY, RabbitBackend, next_message, waiting_in_queue
from tests.sdk.handlers import SERVICE

pytestmark = pytest.mark.integration


async def test_sigterm_during_process_drains_the_step_and_exits_0(amqp_url: str, namespace: str) -> None:
    coordinator = RabbitBackend(Settings(amqp_url=amqp_url, namespace=namespace), amqp_url)
    await coordinator.open(SERVICE)
    service = await _start_service(amqp_url, namespace, process_seconds=1.5)
    try:
        await next_message(coordinator, Heartbeat)  # it is up and consuming
        start = make_command(SERVICE, Action.START, make_release())
        await coordinator.send(encode(start), Topology.command_key(SERVICE, Action.START))
        await next_message(coordinator, Progress, lambda p: p.percent > 0)  # process() is running

        service.send_signal(signal.SIGTERM)
        late = make_command(SERVICE, Action.INITIALIZE, make_release())
        await coordinator.send(encode(late), Topology.command_key(SERVICE, Action.INITIALIZE))
        reply = await next_message(coordinator, TaskReply)
        exit_code = await asyncio.wait_for(service.wait(), 15)
    finally:
        if service.returncode is None:
            service.kill()
            await service.wait()
        await coordinator.close()

    assert exit_code == 0, (await _stderr(service))[-3000:]
    assert (reply.in_reply_to, reply.outcome) == (start.message_id, Outcome.STAGED)
    assert (
        await waiting_in_queue(amqp_url, Topology(namespace).task_queue(SERVICE)) == 1
    )  # `late` left for others


async def _start_service(amqp_url: str, namespace: str, process_seconds: float) -> asyncio.subprocess.Process:
    environment = os.environ | {
        "RC_AMQP_URL": amqp_url,
        "RC_NAMESPACE": namespace,
        "RC_COORDINATOR_USER": broker_user(amqp_url),  # the test plays the coordinator
        "RC_HEARTBEAT_SECONDS": "0.3",
        "RC_SHUTDOWN_TIMEOUT": "10",
        "SLOW_SECONDS": str(process_seconds),
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "task_sdk.cli",
        "tests.sdk.handlers:Slow",
        cwd=REPOSITORY,
        env=environment,
        stderr=asyncio.subprocess.PIPE,
    )


async def _stderr(service: asyncio.subprocess.Process) -> str:
    assert service.stderr is not None
    return (await service.stderr.read()).decode(errors="replace")
