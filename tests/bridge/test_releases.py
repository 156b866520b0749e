"""Releases through the real coordinator and broker, with a bridge in front of a fake HTTP service."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coordinator.store import Store
from rc_cli.client import AdminClient
from rc_http_bridge import task_id_for
from schemas.broker_url import broker_user
from schemas.enums import ReleaseState, TaskState
from schemas.messages import CancelRelease, CreateRelease, PublishRelease, ReleaseResult, RequireService
from tests.bridge.conftest import (
    CALLBACK_TOKEN,
    OUTBOUND_TOKEN,
    SERVICE,
    MakeFake,
    StartBridge,
    wait_for_heartbeat,
)
from tests.coordinator.fixtures import Running, wait_for_state

STUDIES = ("SD_ABCDEFGH", "SD_12345678")


async def create(admin: AdminClient) -> str:
    answer = await admin.request(CreateRelease(name="Bridged release", studies=STUDIES))
    assert answer.ok, answer.error
    assert isinstance(answer.result, ReleaseResult)
    return answer.result.release.id


async def publish(admin: AdminClient, release_id: str) -> None:
    answer = await admin.request(PublishRelease(release_id=release_id))
    assert answer.ok, answer.error


async def test_a_polled_service_publishes(
    coordinator: Running, admin: AdminClient, store: Store, start_bridge: StartBridge
) -> None:
    fake = await start_bridge()  # never calls back
    release_id = await create(admin)
    staged = await wait_for_state(store, release_id, ReleaseState.STAGED)
    assert staged.tasks[SERVICE].progress == 100
    await publish(admin, release_id)
    published = await wait_for_state(store, release_id, ReleaseState.PUBLISHED)
    assert published.tasks[SERVICE].state is TaskState.PUBLISHED
    task_id = task_id_for(release_id, SERVICE)
    assert fake.actions(task_id) == ["initialize", "start", "publish"]
    assert fake.polls() > 2
    assert fake.tasks[task_id].studies == list(STUDIES)
    assert not fake.unauthorized  # every call carried the outbound token


async def test_a_service_that_only_calls_back_publishes_without_polls(
    coordinator: Running, admin: AdminClient, store: Store, start_bridge: StartBridge
) -> None:
    # get_status answers 500 and the bridge would poll only after a minute: callbacks do it all.
    fake = await start_bridge(
        behaviour={"callbacks": True, "answers_status": False}, config={"poll_seconds": 60}
    )
    release_id = await create(admin)
    await wait_for_state(store, release_id, ReleaseState.STAGED)
    await publish(admin, release_id)
    await wait_for_state(store, release_id, ReleaseState.PUBLISHED)
    assert fake.callback_statuses
    assert set(fake.callback_statuses) == {200}
    seen = fake.releases[release_id]
    assert seen["id"] == release_id
    assert seen["studies"] == list(STUDIES)
    assert seen["version"] == "0.0.1"
    assert seen["state"] == "running"


async def test_a_rejection_cancels_the_release_with_the_body_as_reason(
    coordinator: Running, admin: AdminClient, store: Store, start_bridge: StartBridge
) -> None:
    await start_bridge(behaviour={"reject": "study SD_ABCDEFGH is not in our index"})
    release_id = await create(admin)
    canceled = await wait_for_state(store, release_id, ReleaseState.CANCELED)
    assert canceled.state_reason == "portal rejected the release: study SD_ABCDEFGH is not in our index"
    assert canceled.tasks[SERVICE].state is TaskState.REJECTED


async def test_an_unhealthy_service_refuses_the_release(
    coordinator: Running, admin: AdminClient, store: Store, start_bridge: StartBridge
) -> None:
    fake = await start_bridge(behaviour={"healthy": False})
    release_id = await create(admin)
    canceled = await wait_for_state(store, release_id, ReleaseState.CANCELED)
    assert canceled.state_reason == (
        f"portal rejected the release: the HTTP service is unhealthy: "
        f"GET {fake.url}/status answered HTTP 500: database unreachable"
    )
    assert fake.actions() == []  # not even asked to initialize


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        pytest.param({"end_state": "failed"}, "the HTTP service reports task {task_id} failed", id="fails"),
        pytest.param(
            {"start_answer": (500, "disk full")},
            "POST {url}/tasks (start) answered HTTP 500: disk full",
            id="start-500",
        ),
        pytest.param(
            {"start_answer": (200, "<html>oops</html>")},
            "POST {url}/tasks (start): the answer is not JSON: '<html>oops</html>'",
            id="garbage-answer",
        ),
        pytest.param(
            {"end_state": "exploded"},
            "POST {url}/tasks (get_status): unknown task state 'exploded'",
            id="unknown-state-polled",
        ),
        pytest.param(
            {"end_state": "exploded", "callbacks": True, "answers_status": False},
            "callback PATCH /tasks/{task_id}: unknown task state 'exploded'",
            id="unknown-state-called-back",
        ),
    ],
)
async def test_a_failure_fails_the_release_with_the_text(
    coordinator: Running,
    admin: AdminClient,
    store: Store,
    start_bridge: StartBridge,
    behaviour: dict[str, Any],
    expected: str,
) -> None:
    fake = await start_bridge(behaviour=behaviour)
    release_id = await create(admin)
    failed = await wait_for_state(store, release_id, ReleaseState.FAILED)
    text = expected.format(url=fake.url, task_id=task_id_for(release_id, SERVICE))
    assert failed.state_reason == f"portal failed during processing: HttpServiceError: {text}"


async def test_a_service_that_cancels_cancels_the_release_naming_it(
    coordinator: Running, admin: AdminClient, store: Store, start_bridge: StartBridge
) -> None:
    await start_bridge(behaviour={"end_state": "cancelled"})
    release_id = await create(admin)
    canceled = await wait_for_state(store, release_id, ReleaseState.CANCELED)
    task_id = task_id_for(release_id, SERVICE)
    assert canceled.state_reason == (
        f"portal canceled the release: StepCancelled: the HTTP service reports task {task_id} canceled"
    )


async def test_a_hanging_service_fails_the_release_once_stalled(
    coordinator: Running, admin: AdminClient, store: Store, start_bridge: StartBridge
) -> None:
    # The SDK's progress keepalives keep the coordinator's processing deadline alive while the
    # bridge waits, so a service stuck in `running` is caught by the bridge's stall limit.
    await start_bridge(behaviour={"end_state": None, "steps": 1}, config={"stall_seconds": 1.0})
    release_id = await create(admin)
    failed = await wait_for_state(store, release_id, ReleaseState.FAILED)
    task_id = task_id_for(release_id, SERVICE)
    assert failed.state_reason == (
        f"portal failed during processing: HttpServiceError: the HTTP service's task {task_id} "
        "has not changed for 1 s (last heard: running at 50%)"
    )


async def test_an_operator_cancel_reaches_the_service(
    coordinator: Running, admin: AdminClient, store: Store, start_bridge: StartBridge
) -> None:
    fake = await start_bridge(behaviour={"end_state": None})
    release_id = await create(admin)
    await wait_for_state(store, release_id, ReleaseState.RUNNING)
    task_id = task_id_for(release_id, SERVICE)
    # Canceled while the HTTP service works on the task: the bridge may get the start command and the
    # cancel at once, and then (rightly) never starts the task, so wait until the service has it.
    await wait_for_action(fake.actions, task_id, "start")
    answer = await admin.request(CancelRelease(release_id=release_id, reason="wrong studies"))
    assert answer.ok, answer.error
    canceled = await wait_for_state(store, release_id, ReleaseState.CANCELED)
    assert canceled.tasks[SERVICE].state is TaskState.CANCELED
    assert fake.actions(task_id) == ["initialize", "start", "cancel"]
    assert fake.tasks[task_id].state == "canceled"


async def wait_for_action(actions: Callable[[str], list[str]], task_id: str, action: str) -> None:
    """Poll the fake HTTP service until it received ``action`` for the task."""
    deadline = asyncio.get_running_loop().time() + 15
    while action not in actions(task_id):
        assert asyncio.get_running_loop().time() < deadline, f"{action} never reached {task_id}"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("token", [None, "wrong-token"], ids=["missing-token", "wrong-token"])
async def test_callbacks_without_the_token_are_refused_and_polling_finishes_the_job(
    coordinator: Running, admin: AdminClient, store: Store, start_bridge: StartBridge, token: str | None
) -> None:
    fake = await start_bridge(behaviour={"callbacks": True, "callback_token": token})
    release_id = await create(admin)
    await wait_for_state(store, release_id, ReleaseState.STAGED)
    await publish(admin, release_id)
    await wait_for_state(store, release_id, ReleaseState.PUBLISHED)
    assert fake.callback_statuses
    assert set(fake.callback_statuses) == {401}
    assert release_id not in fake.releases


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_the_command_serves_a_release_and_stops_on_sigterm(
    coordinator: Running,
    admin: AdminClient,
    store: Store,
    make_fake: MakeFake,
    amqp_url: str,
    namespace: str,
    tmp_path: Path,
) -> None:
    fake = await make_fake(callbacks=True)
    port = free_port()
    fake.callback_url = f"http://127.0.0.1:{port}"
    token_file = tmp_path / "token"
    token_file.write_text(OUTBOUND_TOKEN + "\n")
    answer = await admin.request(RequireService(service=SERVICE))
    assert answer.ok, answer.error
    environ = os.environ | {
        "RC_AMQP_URL": amqp_url,
        "RC_NAMESPACE": namespace,
        "RC_COORDINATOR_USER": broker_user(amqp_url),  # the coordinator of the fixtures
        "RC_HEARTBEAT_SECONDS": "0.3",
        "RC_BRIDGE_CALLBACK_TOKEN": CALLBACK_TOKEN,
        "RC_BRIDGE_POLL_SECONDS": "0.5",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rc_http_bridge",
        "--service",
        SERVICE,
        "--url",
        fake.url,
        "--listen",
        f"127.0.0.1:{port}",
        "--token-file",
        str(token_file),
        env=environ,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_for_heartbeat(store, within=20)
        release_id = await create(admin)
        await wait_for_state(store, release_id, ReleaseState.STAGED)
        await publish(admin, release_id)
        await wait_for_state(store, release_id, ReleaseState.PUBLISHED)
        assert set(fake.callback_statuses) == {200}
        assert not fake.unauthorized
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert b"bridge.started" in stderr
