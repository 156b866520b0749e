"""Fixtures of the ``rc`` tests: a fake coordinator on the real broker; the real ``rc`` as a subprocess."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import pytest

from tests import _rc_client as rc_client
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
    async def __call__(
        self, *args: str, env: dict[str, str] | None = None, limit: float = 30, fresh: bool = False
    ) -> Outcome: ...


def in_new_interpreters(rc: Rc) -> Rc:
    """``rc`` with every command in a new interpreter (not forked from the pre-loaded one)."""

    async def call(
        *args: str, env: dict[str, str] | None = None, limit: float = 60, fresh: bool = True
    ) -> Outcome:
        return await rc(*args, env=env, limit=limit, fresh=True)

    return call


async def run_rc(*args: str, env: dict[str, str], limit: float = 30, fresh: bool = False) -> Outcome:
    """Run the real entry point, ``rc ARGS``, in a process of its own and collect its output: forked from
    a pre-loaded ``rc`` (``tests/_rc_fork.py``), or a new interpreter with ``fresh`` (or
    ``RC_TESTS_FRESH_RC=1``)."""
    started = time.monotonic()
    done = await rc_client.run(args, env, limit, fresh=fresh)
    return Outcome(done.code, done.stdout, done.stderr, time.monotonic() - started)


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

    async def call(
        *args: str, env: dict[str, str] | None = None, limit: float = 30, fresh: bool = False
    ) -> Outcome:
        return await run_rc(*args, env={**base, **(env or {})}, limit=limit, fresh=fresh)

    return call


@pytest.fixture
async def coordinator(amqp_url: str, namespace: str) -> AsyncIterator[FakeCoordinator]:
    async with FakeCoordinator(amqp_url, namespace) as fake:
        yield fake
