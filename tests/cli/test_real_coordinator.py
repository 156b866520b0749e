"""The real ``rc`` entry point against the real coordinator and the example services.

The coordinator runs in this test's event loop (as in ``tests/coordinator``); the three example
services run as ``rc-task`` subprocesses with short processing times; ``rc`` runs as a subprocess
(the ``rc`` fixture of ``tests/cli/conftest.py``) and its ``--json`` output is parsed. Fixtures are
named ``live_coordinator`` and ``example_services``: ``coordinator`` here is the fake one.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from coordinator.__main__ import broker_of
from coordinator.machine import Timeouts
from coordinator.service import Coordinator
from coordinator.store import store_for
from schemas.broker_url import broker_user
from tests.cli.conftest import Outcome, Rc, in_new_interpreters
from tests.coordinator.fixtures import SERVICES, Running, fast_settings

TARGETS = {
    "portal": ("examples.portal:Portal", "PORTAL"),
    "search-index": ("examples.search_index:SearchIndex", "SEARCH_INDEX"),
    "file-service": ("examples.file_service:FileService", "FILE_SERVICE"),
}
ROOT = Path(__file__).resolve().parents[2]
StartServices = Callable[..., None]


# ---------------------------------------------------------------------- fixtures


@pytest.fixture
def rc(rc: Rc) -> Rc:
    """The ``rc`` of ``tests/cli/conftest.py`` with a patient default timeout (the broker may be busy)."""

    async def call(
        *args: str, env: dict[str, str] | None = None, limit: float = 60, fresh: bool = False
    ) -> Outcome:
        return await rc(*args, env={"RC_TIMEOUT": "20", **(env or {})}, limit=limit, fresh=fresh)

    return call


@pytest.fixture
async def live_coordinator(amqp_url: str, store_url: str, namespace: str) -> AsyncIterator[Running]:
    """A real coordinator in this event loop, on this test's namespace and store."""
    settings = fast_settings(
        amqp_url,
        store_url,
        namespace,
        timeouts=Timeouts(
            initialize=timedelta(seconds=10),
            process=timedelta(seconds=10),
            publish=timedelta(seconds=10),
            cancel=timedelta(seconds=5),
        ),
        heartbeat_timeout=timedelta(seconds=10),
    )
    store = store_for(settings.store, settings.database)
    await store.open()
    running = await Running(Coordinator(settings, store, broker_of(settings))).started()
    try:
        yield running
    finally:
        await running.shutdown()
        await store.drop()


def _rc_task() -> list[str]:
    script = Path(sys.executable).with_name("rc-task")
    return [str(script)] if script.exists() else [sys.executable, "-m", "task_sdk.cli"]


@pytest.fixture
def example_services(amqp_url: str, namespace: str, tmp_path: Path) -> Iterator[StartServices]:
    """``example_services(seconds=2)``: the three examples as ``rc-task`` subprocesses."""
    started: list[subprocess.Popen[bytes]] = []

    def start(seconds: float = 1.5, **extra_env: str) -> None:
        base = {key: value for key, value in os.environ.items() if not key.startswith("RC_")}
        for name, (target, prefix) in TARGETS.items():
            env = base | {
                "RC_AMQP_URL": amqp_url,
                "RC_NAMESPACE": namespace,
                "RC_COORDINATOR_USER": broker_user(amqp_url),  # the coordinator of the fixtures
                "RC_HEARTBEAT_SECONDS": "0.5",
                "RC_SHUTDOWN_TIMEOUT": "2",
                f"{prefix}_SECONDS": str(seconds),
                **extra_env,
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


# ---------------------------------------------------------------------- helpers


def ok(outcome: Outcome) -> Any:
    assert outcome.code == 0, f"exit {outcome.code}: {outcome.stderr}"
    return outcome.json()


def refused(outcome: Outcome, reason: str) -> None:
    """Exit 1, the coordinator's reason on one line of stderr, and ``{"error": ...}`` with ``--json``."""
    assert outcome.code == 1, f"exit {outcome.code}: {outcome.stdout} {outcome.stderr}"
    assert outcome.stderr.count("\n") == 1
    assert re.search(reason, outcome.stderr), outcome.stderr
    assert re.search(reason, outcome.json()["error"])


async def require_all(rc: Rc) -> None:
    for name in SERVICES:
        ok(await rc("service", "require", name, "--json"))
    deadline = time.monotonic() + 30
    while True:  # a release created before every service heartbeats would be canceled at once
        services = ok(await rc("service", "list", "--json"))["services"]
        ready = {s["name"] for s in services if s["required"] and s["healthy"] and s["last_heartbeat_at"]}
        if ready == set(SERVICES):
            return
        assert time.monotonic() < deadline, f"services not ready: {services}"
        await asyncio.sleep(0.3)


async def wait_for_state(rc: Rc, release_id: str, state: str, within: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        shown: dict[str, Any] = ok(await rc("release", "show", release_id, "--json"))
        if shown["state"] == state:
            return shown
        assert time.monotonic() < deadline, f"{release_id} is {shown['state']}, wanted {state}"
        await asyncio.sleep(0.2)


async def create(rc: Rc, name: str = "Fall") -> dict[str, Any]:
    created: dict[str, Any] = ok(
        await rc("release", "create", "--name", name, "--study", "SD_ONE", "--study", "SD_TWO", "--json")
    )
    return created


# ---------------------------------------------------------------------- the operator path


async def test_the_full_operator_path(
    rc: Rc, live_coordinator: Running, example_services: StartServices
) -> None:
    rc = in_new_interpreters(rc)  # this path as an operator runs it: each command a new `python -m rc_cli`
    example_services(seconds=8)  # long enough for the watcher (a new interpreter) to see it running
    await require_all(rc)

    created = await create(rc)
    release_id = created["id"]
    assert re.fullmatch(r"RE_[0-9A-Z]{8}", release_id)
    assert (created["version"], created["final_version"]) == ("0.0.1", None)
    assert set(created["tasks"]) == set(SERVICES)

    watching = asyncio.create_task(
        rc("release", "watch", release_id, "--interval", "0.2", "--json", limit=60)
    )
    listed = ok(await rc("release", "list", "--json"))
    assert [release["id"] for release in listed["releases"]] == [release_id]

    staged = await wait_for_state(rc, release_id, "staged")
    assert {task["state"] for task in staged["tasks"].values()} == {"staged"}
    assert [r["id"] for r in ok(await rc("release", "list", "--state", "staged", "--json"))["releases"]] == [
        release_id
    ]

    assert ok(await rc("release", "hold", release_id, "--json"))["held"] is True
    refused(await rc("release", "publish", release_id, "--json"), "on hold")
    assert ok(await rc("release", "unhold", release_id, "--json"))["held"] is False
    publishing = ok(await rc("release", "publish", release_id, "--json"))
    assert (publishing["state"], publishing["version"]) == ("publishing", "0.1.0")

    watched = await watching
    assert watched.code == 0, watched.stderr
    views = watched.lines()
    assert views[-1]["state"] == "published"
    assert views[-1]["version"] == "0.1.0"
    assert {task["state"] for task in views[-1]["tasks"].values()} == {"published"}
    seen = [view["state"] for view in views]
    assert seen.index("running") < seen.index("staged") < seen.index("published")
    progress = {task["progress"] for view in views for task in view["tasks"].values()}
    assert any(0 < value < 100 for value in progress), "watch showed no progress in between"

    refused(await rc("release", "cancel", release_id, "--reason", "too late", "--json"), "already published")
    shown = ok(await rc("release", "show", release_id, "--json"))
    assert (shown["state"], shown["final_version"]) == ("published", "0.1.0")


async def test_publish_while_running_is_refused_and_a_cancel_stops_the_services(
    rc: Rc, live_coordinator: Running, example_services: StartServices
) -> None:
    example_services(seconds=60)
    await require_all(rc)
    release_id = (await create(rc))["id"]
    await wait_for_state(rc, release_id, "running")

    refused(
        await rc("release", "publish", release_id, "--json"),
        "only a staged release can be published; this one is running",
    )
    canceling = ok(await rc("release", "cancel", release_id, "--reason", "bad data in SD_TWO", "--json"))
    assert canceling["state"] in {"canceling", "canceled"}

    watched = await rc("release", "watch", release_id, "--json", limit=30)
    assert watched.code == 1
    assert "canceled" in watched.stderr
    final = watched.lines()[-1]
    assert final["state"] == "canceled"
    assert {task["state"] for task in final["tasks"].values()} == {"canceled"}


async def test_an_unknown_release_is_refused(rc: Rc, live_coordinator: Running) -> None:
    refused(await rc("release", "show", "RE_00000000", "--json"), "unknown release RE_00000000")
    refused(await rc("release", "publish", "RE_00000000", "--json"), "unknown release RE_00000000")
    refused(await rc("release", "watch", "RE_00000000", "--json"), "unknown release RE_00000000")


async def test_no_coordinator_answering_is_a_clear_error_within_the_timeout(
    rc: Rc, live_coordinator: Running
) -> None:
    ok(await rc("release", "list", "--json"))
    await live_coordinator.shutdown()  # its queue stays on the broker, with nobody consuming it

    outcome = await rc("release", "list", "--timeout", "2", "--json")  # a hang fails at the limit
    assert outcome.code == 3
    assert outcome.elapsed >= 2  # it waited its timeout (an upper bound is the fixture's limit, not a timing)
    assert outcome.stderr.count("\n") == 1
    assert "no coordinator answered within 2s" in outcome.stderr
    assert "guest:guest" not in outcome.stderr
    assert "no coordinator answered within 2s" in outcome.json()["error"]


async def test_a_namespace_without_coordinator_is_reported_at_once(rc: Rc, namespace: str) -> None:
    # At once: with a timeout far beyond rc's limit, waiting for an answer would fail the call itself.
    outcome = await rc("service", "list", "--namespace", f"{namespace}-nobody", "--timeout", "600", limit=60)
    assert outcome.code == 3
    assert "no coordinator has ever run" in outcome.stderr
