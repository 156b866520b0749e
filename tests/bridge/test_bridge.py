"""The bridge against the fake HTTP service, driven by the SDK's in-memory harness (no broker)."""

from __future__ import annotations

import aiohttp

from rc_http_bridge import HttpBridge, task_id_for
from schemas.enums import Action, Outcome
from task_sdk import Settings
from task_sdk.testing import Harness, make_release
from tests.bridge.conftest import CALLBACK_TOKEN, SERVICE, MakeFake, OpenBridge


def harness(bridge: HttpBridge) -> Harness:
    return Harness(bridge, settings=Settings(heartbeat_seconds=0.5, shutdown_timeout=2), wait_seconds=10)


async def test_progress_polled_from_the_service_is_reported(
    make_fake: MakeFake, open_bridge: OpenBridge
) -> None:
    fake = await make_fake(steps=2, step_seconds=0.4)  # polled every 0.2 s: no step is missed
    test = harness(await open_bridge(fake))
    run = await test.run_release(studies=["SD_1"])
    assert run.outcomes == [Outcome.ACCEPTED, Outcome.STAGED, Outcome.PUBLISHED]
    notes = [p.note for p in run.progress]
    assert "HTTP service: running at 33%" in notes
    assert "HTTP service: running at 66%" in notes
    assert "HTTP service: staged at 100%" in notes
    assert [p.percent for p in run.progress][-1] == 100
    task_id = task_id_for(run.release.id, SERVICE)
    assert fake.actions(task_id) == ["initialize", "start", "publish"]
    await test.stop()


async def test_called_back_progress_is_reported(make_fake: MakeFake, open_bridge: OpenBridge) -> None:
    fake = await make_fake(callbacks=True, answers_status=False)
    test = harness(await open_bridge(fake, poll_seconds=60))
    run = await test.run_release()
    assert run.outcomes == [Outcome.ACCEPTED, Outcome.STAGED, Outcome.PUBLISHED]
    assert "HTTP service: running at 50%" in [p.note for p in run.progress]
    await test.stop()


async def test_a_connection_error_on_start_fails_with_the_error(
    make_fake: MakeFake, open_bridge: OpenBridge
) -> None:
    fake = await make_fake()
    test = harness(await open_bridge(fake))
    release = make_release()
    assert (await test.initialize(release)).outcome is Outcome.ACCEPTED
    await fake.stop()
    reply = await test.start_processing(release)
    assert reply.outcome is Outcome.FAILED
    assert reply.reason is not None
    assert reply.reason.startswith(
        f"HttpServiceError: POST {fake.url}/tasks (start) failed: ClientConnectorError"
    )
    await test.stop()


async def test_an_unreachable_service_refuses_the_release(
    make_fake: MakeFake, open_bridge: OpenBridge
) -> None:
    fake = await make_fake()
    bridge = await open_bridge(fake)
    await fake.stop()
    reply = await harness(bridge).initialize(make_release())
    assert reply.outcome is Outcome.REJECTED
    assert reply.reason is not None
    assert reply.reason.startswith(f"the HTTP service is unhealthy: GET {fake.url}/status failed:")


async def test_a_slow_answer_times_out(make_fake: MakeFake, open_bridge: OpenBridge) -> None:
    fake = await make_fake(answer_delay=1.0)
    reply = await harness(await open_bridge(fake, http_timeout=0.2)).initialize(make_release())
    assert reply.outcome is Outcome.REJECTED
    assert reply.reason == f"POST {fake.url}/tasks (initialize) got no answer within 0.2 s"


async def test_a_wrong_outbound_token_is_a_failure_not_a_hang(
    make_fake: MakeFake, open_bridge: OpenBridge
) -> None:
    fake = await make_fake()
    reply = await harness(await open_bridge(fake, token="wrong")).initialize(make_release())
    assert reply.outcome is Outcome.REJECTED
    assert reply.reason is not None
    assert "HTTP 401" in reply.reason
    assert fake.unauthorized == ["GET /status"]


async def test_a_cancel_during_processing_reaches_the_service(
    make_fake: MakeFake, open_bridge: OpenBridge
) -> None:
    fake = await make_fake(end_state=None, steps=1)
    test = harness(await open_bridge(fake))
    release = make_release()
    await test.initialize(release)
    start = test.command(Action.START, release)
    await test.send(start)
    await test.wait_for(lambda: len(test.reports(start)) >= 1, "progress from the bridge")
    assert (await test.cancel(release)).outcome is Outcome.CANCELED
    await test.drain(0.3)
    assert not [reply for reply in test.replies if reply.in_reply_to == start.message_id]
    task_id = task_id_for(release.id, SERVICE)
    assert fake.actions(task_id) == ["initialize", "start", "cancel"]
    assert fake.tasks[task_id].state == "canceled"
    await test.stop()


async def test_a_resumed_start_does_not_start_the_task_again(
    make_fake: MakeFake, open_bridge: OpenBridge
) -> None:
    fake = await make_fake(steps=2)
    bridge = await open_bridge(fake)
    release = make_release()
    first = harness(bridge)
    await first.initialize(release)
    assert (await first.start_processing(release)).outcome is Outcome.STAGED
    await first.stop()
    # A second runner (a restarted bridge) asked to start again: the service is already staged.
    second = harness(bridge)
    assert (await second.start_processing(release)).outcome is Outcome.STAGED
    assert fake.actions(task_id_for(release.id, SERVICE)) == ["initialize", "start"]


async def test_the_callback_endpoints(make_fake: MakeFake, open_bridge: OpenBridge) -> None:
    fake = await make_fake(end_state=None, steps=1)
    bridge = await open_bridge(fake)
    test = harness(bridge)
    release = make_release(studies=["SD_1", "SD_2"])
    await test.initialize(release)
    task_id = task_id_for(release.id, SERVICE)
    base = bridge.public_url
    good = {"Authorization": f"Bearer {CALLBACK_TOKEN}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/status") as response:
            assert response.status == 200
            assert await response.json() == {"name": "rc-http-bridge", "service": SERVICE}
        async with http.get(f"{base}/releases/{release.id}") as response:
            assert response.status == 401
        async with http.get(
            f"{base}/releases/{release.id}", headers={"Authorization": "Bearer nope"}
        ) as response:
            assert response.status == 401
        async with http.get(f"{base}/releases/{release.id}", headers=good) as response:
            assert response.status == 200
            shown = await response.json()
        assert shown["id"] == release.id
        assert shown["name"] == release.name
        assert shown["version"] == release.version
        assert shown["studies"] == ["SD_1", "SD_2"]
        assert shown["state"] == "initializing"
        async with http.get(f"{base}/releases/RE_UNKNOWN0", headers=good) as response:
            assert response.status == 404
        async with http.patch(
            f"{base}/tasks/TA_UNKNOWN", json={"state": "running"}, headers=good
        ) as response:
            assert response.status == 404
        async with http.patch(f"{base}/tasks/{task_id}", data="garbage", headers=good) as response:
            assert response.status == 400
            assert "not JSON" in (await response.json())["error"]
        async with http.patch(
            f"{base}/tasks/{task_id}", json={"state": "running", "progress": "30%"}, headers=good
        ) as response:
            assert response.status == 200
            assert await response.json() == {
                "name": SERVICE,
                "kf_id": task_id,
                "release_id": release.id,
                "state": "running",
                "progress": 30.0,
            }
    await test.stop()


async def test_the_bridge_needs_to_be_open(make_fake: MakeFake, open_bridge: OpenBridge) -> None:
    fake = await make_fake()
    bridge = await open_bridge(fake)
    await bridge.close()
    reply = await harness(bridge).initialize(make_release())
    assert reply.outcome is Outcome.FAILED
    assert reply.reason is not None
    assert "the bridge is not open" in reply.reason
