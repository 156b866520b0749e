"""Fixtures of the ``rc`` tests: a fake coordinator on the real broker; the real ``rc`` as a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import pytest

from tests.cli.fake_coordinator import FakeCoordinator


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    elapsed: float

    def json(self) -> Any:
        return json.loads(self.stdout)

    def lines(self) -> list[Any]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


class Rc(Protocol):
    async def __call__(self, *args: str, env: dict[str, str] | None = None, limit: float = 30) -> Outcome: ...


async def run_rc(*args: str, env: dict[str, str], limit: float = 30) -> Outcome:
    """Run ``python -m rc_cli ARGS`` (the real entry point) and collect its output."""
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rc_cli",
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), limit)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Outcome(process.returncode, out.decode(), err.decode(), time.monotonic() - started)


def rc_env(amqp_url: str, namespace: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RC_")}
    env.update(
        RC_AMQP_URL=amqp_url, RC_NAMESPACE=namespace, RC_OPERATOR="tester", RC_TIMEOUT="5", COLUMNS="160"
    )
    return env


@pytest.fixture
def rc(amqp_url: str, namespace: str) -> Rc:
    """``await rc("release", "list", "--json")``: the command line against this test's namespace."""
    base = rc_env(amqp_url, namespace)

    async def call(*args: str, env: dict[str, str] | None = None, limit: float = 30) -> Outcome:
        return await run_rc(*args, env={**base, **(env or {})}, limit=limit)

    return call


@pytest.fixture
async def coordinator(amqp_url: str, namespace: str) -> AsyncIterator[FakeCoordinator]:
    async with FakeCoordinator(amqp_url, namespace) as fake:
        yield fake
