"""A task team installs the SDK alone: it gets task_sdk and rc-task with aio-pika, pydantic, semver and
structlog, none of the coordinator's, rc's or the bridge's libraries, and a handler it writes takes part
in a real release on RabbitMQ."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from schemas.enums import ReleaseState
from schemas.messages import ListServices, PublishRelease, RequireService, ServiceList
from tests.coordinator.fixtures import Asks, Running, wait_for_state
from tests.coordinator.test_releases import call, create

ROOT = Path(__file__).parents[2]
HANDLER = """
from task_sdk import TaskHandler

class Light(TaskHandler):
    service = "light-service"

    async def initialize(self, release):
        pass

    async def process(self, release, progress):
        await progress.report(50, "half way")

    async def publish(self, release):
        pass

    async def cancel(self, release):
        pass
"""

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def light_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with ``pip install release-coordinator`` (no extra) from this checkout."""
    venv = tmp_path_factory.mktemp("light") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    done = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return venv


def installed(venv: Path) -> set[str]:
    listed = subprocess.run(
        [str(venv / "bin" / "pip"), "list", "--format=freeze", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return {line.split("==")[0].lower().replace("_", "-") for line in listed.splitlines()}


def test_the_sdk_alone_brings_only_what_a_task_service_needs(light_venv: Path) -> None:
    packages = installed(light_venv)
    assert {"aio-pika", "pydantic", "semver", "structlog", "release-coordinator"} <= packages
    assert not packages & {"pymongo", "typer", "rich", "aiohttp", "jinja2", "prometheus-client", "uvloop"}


def test_a_command_without_its_extra_says_which_to_install(light_venv: Path) -> None:
    done = subprocess.run(
        [str(light_venv / "bin" / "rc"), "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "rc: the library 'typer' is missing; install the 'cli' extra: pip install 'release-coordinator[cli]'"
    ]


async def test_a_handler_on_the_light_install_takes_part_in_a_release(
    light_venv: Path,
    coordinator: Running,
    admin: Asks,
    amqp_url: str,
    namespace: str,
    store: object,
    tmp_path: Path,
) -> None:
    (tmp_path / "light_handler.py").write_text(HANDLER)
    env = {key: value for key, value in os.environ.items() if not key.startswith("RC_")} | {
        "RC_AMQP_URL": amqp_url,
        "RC_NAMESPACE": namespace,
        "RC_TRUSTED_USERS": "guest",
        "RC_COORDINATOR_USER": "guest",
        "RC_HEARTBEAT_SECONDS": "0.5",
        "PYTHONPATH": str(tmp_path),
    }
    service = await asyncio.create_subprocess_exec(
        str(light_venv / "bin" / "rc-task"),
        "light_handler:Light",
        cwd=tmp_path,  # not the checkout: only what the light install brings is importable
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert (await admin.request(RequireService(service="light-service"))).ok
        await _heard_from(admin, "light-service")
        release_id = await create(admin)
        await wait_for_state(store, release_id, ReleaseState.STAGED, within=60)  # type: ignore[arg-type]
        await call(admin, PublishRelease(release_id=release_id))
        await wait_for_state(store, release_id, ReleaseState.PUBLISHED, within=60)  # type: ignore[arg-type]
    finally:
        service.terminate()
        _, err = await asyncio.wait_for(service.communicate(), 60)
    assert service.returncode == 0, err.decode()[-2000:]


async def _heard_from(admin: Asks, service: str, within: float = 60) -> None:
    """Until the service has sent a heartbeat (it consumes its queue by then)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        answer = await admin.request(ListServices())
        assert isinstance(answer.result, ServiceList)
        if any(s.name == service and s.last_heartbeat_at for s in answer.result.services):
            return
        assert asyncio.get_running_loop().time() < deadline, f"{service} never sent a heartbeat"
        await asyncio.sleep(0.5)
