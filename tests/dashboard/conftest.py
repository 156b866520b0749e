"""Fixtures of the dashboard tests: a real coordinator, services, the dashboard, and a real browser.

- ``browser`` (session): Debian's Chromium (``/usr/bin/chromium``, or ``$RC_CHROMIUM``) driven by Playwright,
  headless. Missing Chromium is a failure, never a skip: ``make test`` installs it first
  (``scripts/ensure-chromium.sh``).
- ``context``: a fresh browser context (its own cookies) per test, closed afterwards.
- ``start_dashboard(token=..., url=..., trusted_users=..., **settings)``: the dashboard application served
  on a free port of 127.0.0.1 in this event loop, on this test's namespace (trusting ``guest``, as the
  coordinator of the fixtures does, unless told otherwise); stopped afterwards.
- ``example_services(seconds)``: the three example services as ``rc-task`` subprocesses.
- ``ready``: three required, healthy simulated services (fast answers, no progress).
- ``operator_url``: the broker URL of a user made for this test with the permissions ``rc-admin-setup``
  gives ``rc-operator`` (on this test's namespace; no read on the replies); deleted afterwards.
- ``coordinator``, ``admin``, ``services``: those of ``tests/coordinator/fixtures.py`` (a suite plugin).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, async_playwright

from deploy.apply import grant
from deploy.definitions import Installation
from rc_cli.client import AdminClient
from rc_dashboard.app import create_app
from rc_dashboard.context import HUB
from rc_dashboard.live import Hub
from rc_dashboard.settings import DashboardSettings
from schemas.broker_url import broker_user
from schemas.messages import ListServices, RequireService, ServiceList
from tests._broker_users import BrokerAdmin, with_credentials
from tests.cli.conftest import Outcome, Rc, rc_env, run_rc
from tests.coordinator.fixtures import SERVICES, Running
from tests.coordinator.simulated import SimulatedService

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("RC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
#: Where the tests write their screenshots (git-ignored).
ARTIFACTS = Path(os.environ.get("RC_TEST_ARTIFACTS", ROOT / ".artifacts" / "dashboard"))
TOKEN = "test-operator-token-0123456789"
OPERATOR = "dash-tester"
EXAMPLES = {
    "portal": ("examples.portal:Portal", "PORTAL"),
    "search-index": ("examples.search_index:SearchIndex", "SEARCH_INDEX"),
    "file-service": ("examples.file_service:FileService", "FILE_SERVICE"),
}

StartService = Callable[..., Awaitable[SimulatedService]]


async def wait_for(condition: Callable[[], Awaitable[bool] | bool], within: float, what: str) -> None:
    """Check ``condition`` every 50 ms until it holds; fail naming ``what`` after ``within`` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        outcome = condition()
        if outcome if isinstance(outcome, bool) else await outcome:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not within {within}s")
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------------- the browser


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: the dashboard tests need Debian's Chromium "
            "(run scripts/ensure-chromium.sh, which `make test` runs first)",
            pytrace=False,
        )
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    opened = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield opened
    finally:
        await opened.close()


# ---------------------------------------------------------------------- the dashboard


@dataclass
class Dashboard:
    url: str
    app: web.Application

    @property
    def hub(self) -> Hub:
        return self.app[HUB]

    async def live(self, within: float = 20) -> Dashboard:
        """Wait until its broker feed is up (subscribed to the announcements)."""
        await wait_for(lambda: self.hub.status.connected, within, f"dashboard at {self.url} live")
        return self


StartDashboard = Callable[..., Awaitable[Dashboard]]


@pytest.fixture
async def start_dashboard(amqp_url: str, namespace: str) -> AsyncIterator[StartDashboard]:
    runners: list[web.AppRunner] = []

    async def start(
        *,
        token: str | None = None,
        url: str | None = None,
        poll_seconds: float = 30,
        trusted_users: frozenset[str] = frozenset({"guest"}),  # as the coordinator of the fixtures
        **options: object,
    ) -> Dashboard:
        configured = DashboardSettings(
            amqp_url=url or amqp_url,
            namespace=namespace,
            timeout=10,
            listen="127.0.0.1:0",
            token=token,
            operator=OPERATOR,
            poll_seconds=poll_seconds,
            reconnect_seconds=0.2,
            trusted_users=trusted_users,
            **options,  # type: ignore[arg-type]
        )
        app = create_app(configured)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return await Dashboard(f"http://127.0.0.1:{port}", app).live()

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def operator_url(amqp_url: str, namespace: str) -> AsyncIterator[str]:
    path = urllib.parse.urlsplit(amqp_url).path
    installation = Installation(
        services=(),
        namespace=namespace,
        vhost=urllib.parse.unquote(path[1:]) if len(path) > 1 else "/",
        coordinator_user=f"{namespace}-coordinator",  # made too, never used
        operator_user=f"{namespace}-operator",
    )
    passwords = {user: secrets.token_hex(16) for user in installation.users()}
    admin = BrokerAdmin.for_url(amqp_url)
    try:
        await asyncio.to_thread(
            grant,
            installation,
            passwords,
            management_url=admin.management_url,
            user=admin.user,
            password=admin.password,
            topology=False,  # the coordinator declares it
        )
        operator = installation.operator_user
        yield with_credentials(amqp_url, operator, passwords[operator])
    finally:
        for user in installation.users():
            await asyncio.to_thread(admin.delete_user, user)


# ---------------------------------------------------------------------- services and rc


@pytest.fixture
def rc(amqp_url: str, namespace: str) -> Rc:
    """``await rc("release", "list", "--json")``: the real command line against this test's namespace."""
    base = rc_env(amqp_url, namespace) | {"RC_TIMEOUT": "20"}

    async def call(
        *args: str, env: dict[str, str] | None = None, limit: float = 60, fresh: bool = False
    ) -> Outcome:
        return await run_rc(*args, env={**base, **(env or {})}, limit=limit, fresh=fresh)

    return call


async def require_and_wait(client: AdminClient, names: tuple[str, ...] = SERVICES) -> None:
    """Require ``names`` and wait until each has sent a heartbeat (else a new release is canceled)."""
    for name in names:
        answer = await client.request(RequireService(service=name))
        assert answer.ok, answer.error

    async def heartbeating() -> bool:
        answer = await client.request(ListServices())
        assert isinstance(answer.result, ServiceList), answer.error
        seen = {s.name for s in answer.result.services if s.required and s.last_heartbeat_at}
        return seen >= set(names)

    await wait_for(heartbeating, 30, f"heartbeats of {names}")


@pytest.fixture
async def ready(
    coordinator: Running,
    admin: AdminClient,
    services: StartService,
) -> list[SimulatedService]:
    """A running coordinator with three required, healthy, well-behaved simulated services."""
    started = [await services(name) for name in SERVICES]
    await require_and_wait(admin)
    return started


def _rc_task() -> list[str]:
    script = Path(sys.executable).with_name("rc-task")
    return [str(script)] if script.exists() else [sys.executable, "-m", "task_sdk.cli"]


@pytest.fixture
def example_services(amqp_url: str, namespace: str, tmp_path: Path) -> Iterator[Callable[[float], None]]:
    """``example_services(seconds)``: the three example services as ``rc-task`` subprocesses."""
    started: list[subprocess.Popen[bytes]] = []

    def start(seconds: float) -> None:
        base = {key: value for key, value in os.environ.items() if not key.startswith("RC_")}
        for name, (target, prefix) in EXAMPLES.items():
            env = base | {
                "RC_AMQP_URL": amqp_url,
                "RC_NAMESPACE": namespace,
                "RC_COORDINATOR_USER": broker_user(amqp_url),  # the coordinator of the fixtures
                "RC_HEARTBEAT_SECONDS": "0.5",
                "RC_SHUTDOWN_TIMEOUT": "2",
                f"{prefix}_SECONDS": str(seconds),
            }
            with open(tmp_path / f"{name}.log", "wb") as log:
                started.append(
                    subprocess.Popen(
                        [*_rc_task(), target],
                        cwd=ROOT,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in started:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
