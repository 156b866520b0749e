"""Issue 21, item 5: the HTTP bridge no longer trusts the network.

What the attack found: the bridge listened on ``0.0.0.0:8780`` and took unauthenticated callbacks (one
``PATCH`` moved a release to staged), idle and slow-header connections stayed open for ever, nested JSON,
invalid UTF-8 or a bogus charset answered 500, and the password of ``--url http://user:pass@...`` reached
the start log and the release's ``state_reason`` (URL credentials with an outbound token raised
``ValueError``, which canceled the release).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from coordinator.store import Store
from rc_cli.client import AdminClient
from rc_http_bridge import BridgeConfig, HttpBridge, make_bridge, task_id_for
from rc_http_bridge.config import DEFAULT_LISTEN
from schemas.broker_url import broker_user
from schemas.enums import ReleaseState
from schemas.messages import CreateRelease, ReleaseResult, RequireService
from task_sdk import Runner, Settings
from task_sdk._amqp import AmqpTransport
from task_sdk.testing import make_release
from tests.bridge.conftest import wait_for_heartbeat
from tests.bridge.fake_service import Behaviour, FakeTaskService
from tests.coordinator.fixtures import Running, wait_for_state

SERVICE = "portal"
TOKEN = "callback-secret"
USER, PASSWORD = "bridge", "s3cret-pw"
#: Every wait in this module ends by this bound; nothing is asserted about how fast things happen.
BOUND = 30.0


def config(**overrides: Any) -> BridgeConfig:
    values: dict[str, Any] = {
        "service": SERVICE,
        "url": "http://127.0.0.1:9",
        "listen": "127.0.0.1:0",
        "callback_token": TOKEN,
    }
    return BridgeConfig(**(values | overrides))


@pytest.fixture
async def opened() -> AsyncIterator[list[HttpBridge]]:
    bridges: list[HttpBridge] = []
    yield bridges
    for bridge in bridges:
        await bridge.close()


async def open_bridge(bridges: list[HttpBridge], **overrides: Any) -> HttpBridge:
    bridge = make_bridge(config(**overrides))
    await bridge.open()
    bridges.append(bridge)
    return bridge


# ------------------------------------------------------------------------------------------ where it listens


def test_the_bridge_listens_on_the_loopback_by_default() -> None:
    assert DEFAULT_LISTEN == "127.0.0.1:8780"
    assert BridgeConfig(service=SERVICE, url="http://portal:8080").listen == "127.0.0.1:8780"


@pytest.mark.parametrize("listen", ["0.0.0.0:8780", "[::]:8780", "192.0.2.7:8780", "bridge.example:8780"])
def test_off_the_loopback_it_refuses_to_start_without_a_callback_token(listen: str) -> None:
    with pytest.raises(ValueError, match="callbacks there need a token") as refused:
        BridgeConfig(service=SERVICE, url="http://portal:8080", listen=listen)
    assert "--insecure-callbacks" in str(refused.value)
    assert config(listen=listen).callback_token == TOKEN  # with a token it may


async def test_the_command_refuses_in_one_line() -> None:
    """``rc-http-bridge --listen 0.0.0.0:...`` without a token exits at once, saying why (no traceback)."""
    environ = {name: value for name, value in os.environ.items() if not name.startswith("RC_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rc_http_bridge",
        *("--service", SERVICE, "--url", f"http://{USER}:{PASSWORD}@portal:8080", "--listen", "0.0.0.0:0"),
        env=environ | {"RC_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), BOUND)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode != 0
    (line,) = (out + err).decode().strip().splitlines()
    assert line.startswith("rc-http-bridge: listen 0.0.0.0:0 is reachable from other machines")
    assert PASSWORD not in line


async def test_insecure_callbacks_start_with_a_warning_every_time(opened: list[HttpBridge]) -> None:
    with capture_logs() as logs:
        for _ in range(2):
            bridge = await open_bridge(
                opened, listen="0.0.0.0:0", callback_token=None, insecure_callbacks=True
            )
            await bridge.close()
    warnings = [entry for entry in logs if entry["event"] == "bridge.insecure_callbacks"]
    assert len(warnings) == 2
    assert all(entry["log_level"] == "warning" for entry in warnings)
    assert BridgeConfig.from_env(
        {"RC_BRIDGE_SERVICE": SERVICE, "RC_BRIDGE_URL": "http://p", "RC_BRIDGE_INSECURE_CALLBACKS": "1"}
    ).insecure_callbacks


async def test_reading_a_release_needs_the_token_too(opened: list[HttpBridge]) -> None:
    bridge = await open_bridge(opened)
    release = make_release()
    bridge.tracker.track(task_id_for(release.id, SERVICE), release, "running", 0.0)
    async with aiohttp.ClientSession() as http:
        for path in (f"/releases/{release.id}", "/releases/RE_UNKNOWN0"):
            async with http.get(f"{bridge.public_url}{path}") as response:
                assert response.status == 401, path  # no answer, not even "unknown", without the token
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with http.get(f"{bridge.public_url}/releases/{release.id}", headers=headers) as response:
            assert response.status == 200


# ---------------------------------------------------------------------------------------------- connections


async def until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` until it holds (at most :data:`BOUND` seconds)."""
    async with asyncio.timeout(BOUND):
        for _ in itertools.count():
            if condition():
                return
            await asyncio.sleep(0.01)


async def closed_by_the_server(reader: asyncio.StreamReader) -> bool:
    """Whether the server closes the connection within :data:`BOUND` (reading whatever it sends)."""
    with contextlib.suppress(ConnectionError):
        async with asyncio.timeout(BOUND):
            while await reader.read(1024):
                pass
    return reader.at_eof()


async def trickle(writer: asyncio.StreamWriter) -> None:
    """A slow client: the request line, then one header byte at a time, never the end of the headers."""
    with contextlib.suppress(ConnectionError):
        writer.write(b"PATCH /tasks/TA_AAAAAAAA HTTP/1.1\r\nHost: bridge\r\n")
        while True:
            await asyncio.sleep(0.1)
            writer.write(b"X")
            await writer.drain()


async def test_idle_and_slow_header_connections_are_closed(opened: list[HttpBridge]) -> None:
    bridge = await open_bridge(opened, idle_timeout=1.0)
    port = bridge.bound_port
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
    slow = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
    tricklers = [asyncio.create_task(trickle(writer)) for _, writer in slow]
    try:
        closed = await asyncio.gather(*(closed_by_the_server(reader) for reader, _ in [*idle, *slow]))
        assert all(closed), closed
    finally:
        for task in tricklers:
            task.cancel()
        for _, writer in [*idle, *slow]:
            writer.close()
    async with aiohttp.ClientSession() as http, http.get(f"{bridge.public_url}/status") as response:
        assert response.status == 200


async def test_connections_beyond_the_limit_are_refused(opened: list[HttpBridge]) -> None:
    bridge = await open_bridge(opened, max_connections=3, idle_timeout=BOUND * 2)
    connections = bridge.connections
    assert connections is not None
    port = bridge.bound_port
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    await until(lambda: connections.open == 3)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    async with asyncio.timeout(BOUND):
        answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 503 ")
    for _, held_writer in held:
        held_writer.close()
    await until(lambda: connections.open == 0)
    async with aiohttp.ClientSession() as http, http.get(f"{bridge.public_url}/status") as response:
        assert response.status == 200


# ---------------------------------------------------------------------------------------------- bodies


@pytest.mark.parametrize(
    ("content_type", "body", "error"),
    [
        ("application/json", b"[" * 20_000 + b"]" * 20_000, "nested too deep"),
        ("application/json; charset=utf-8", b'{"state": "\xff\xfe staged"}', "not valid utf-8"),
        ("application/json; charset=bogus-42", b'{"state": "staged"}', "unknown charset"),
        ("application/json; charset=rot13", b'{"state": "staged"}', "unknown charset"),
        ("application/json", b'{"state": ' + b"{" * 50_000, "not JSON"),
    ],
)
async def test_unreadable_callbacks_answer_400(
    opened: list[HttpBridge], content_type: str, body: bytes, error: str
) -> None:
    bridge = await open_bridge(opened)
    release = make_release()
    task_id = task_id_for(release.id, SERVICE)
    bridge.tracker.track(task_id, release, "running", 0.0)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type}
    async with (
        aiohttp.ClientSession() as http,
        http.patch(f"{bridge.public_url}/tasks/{task_id}", data=body, headers=headers) as response,
    ):
        text = await response.text()
    assert response.status == 400, text
    assert error in text.lower() or error in text
    assert "Traceback" not in text


async def test_a_body_that_never_arrives_answers_408(opened: list[HttpBridge]) -> None:
    bridge = await open_bridge(opened, idle_timeout=1.0)
    release = make_release()
    task_id = task_id_for(release.id, SERVICE)
    bridge.tracker.track(task_id, release, "running", 0.0)
    reader, writer = await asyncio.open_connection("127.0.0.1", bridge.bound_port)
    writer.write(
        f"PATCH /tasks/{task_id} HTTP/1.1\r\nHost: bridge\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode()
    )
    async with asyncio.timeout(BOUND):
        answer = await reader.read(4096)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")


# ---------------------------------------------------------------------------------------------- credentials


def test_url_credentials_with_an_outbound_token_are_refused_at_start_without_the_password() -> None:
    url = f"http://{USER}:{PASSWORD}@portal:8080"
    with pytest.raises(ValueError, match="Authorization") as refused:
        config(url=url, token="outbound")
    assert PASSWORD not in str(refused.value)
    assert f"http://{USER}:***@portal:8080" in str(refused.value)
    for bad in (f"ftp://{USER}:{PASSWORD}@portal", f"http://{USER}:{PASSWORD}@portal:8080/?x=1"):
        with pytest.raises(ValueError, match="url") as refused:
            config(url=bad)
        assert PASSWORD not in str(refused.value)
    shown = config(url=url).loggable()
    assert PASSWORD not in repr(shown)
    assert PASSWORD not in repr(config(url=url, token=None, callback_token="cb"))


class BasicAuthService(FakeTaskService):
    """The fake HTTP service, answering only calls with HTTP basic authentication as USER:PASSWORD."""

    @web.middleware
    async def _check_token(self, request: web.Request, handler: Any) -> web.StreamResponse:
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            self.unauthorized.append(f"{request.method} {request.path}")
            return web.json_response({"message": "unauthorized"}, status=401)
        response: web.StreamResponse = await handler(request)
        return response


async def test_url_credentials_work_and_stay_out_of_reasons_and_logs(
    coordinator: Running, admin: AdminClient, store: Store, amqp_url: str, namespace: str
) -> None:
    fake = await BasicAuthService(Behaviour(start_answer=(500, "disk full"))).start()
    url = fake.url.replace("http://", f"http://{USER}:{PASSWORD}@")
    bridge = make_bridge(config(url=url, poll_seconds=0.2, http_timeout=5.0, stall_seconds=0))
    # Commanded by the fixtures' coordinator, which logs in as the test's broker user.
    sdk = Settings.from_env(
        {"RC_COORDINATOR_USER": broker_user(amqp_url)},
        amqp_url=amqp_url,
        namespace=namespace,
        heartbeat_seconds=0.3,
        shutdown_timeout=2,
    )
    runner = Runner(bridge, AmqpTransport(sdk), sdk)
    with capture_logs() as logs:
        await bridge.open()
        try:
            assert (await admin.request(RequireService(service=SERVICE))).ok
            await runner.start()
            await wait_for_heartbeat(store, within=BOUND)
            answer = await admin.request(CreateRelease(name="With URL credentials", studies=("SD_AAAAAAAA",)))
            assert isinstance(answer.result, ReleaseResult), answer.error
            release_id = answer.result.release.id
            failed = await wait_for_state(store, release_id, ReleaseState.FAILED, within=BOUND)
        finally:
            await runner.stop()
            await bridge.close()
            await fake.stop()
    assert fake.actions(task_id_for(release_id, SERVICE)) == ["initialize", "start"]
    assert not fake.unauthorized, "the URL's credentials are sent as basic authentication"
    assert failed.state_reason is not None
    assert "disk full" in failed.state_reason
    events = await store.event_page(release_id, limit=500)
    for text in (failed.model_dump_json(), *(event.model_dump_json() for event in events.items), repr(logs)):
        assert PASSWORD not in text
    started = next(entry for entry in logs if entry["event"] == "bridge.started")
    assert started["url"] == f"http://{USER}:***@{fake.url.removeprefix('http://')}"
