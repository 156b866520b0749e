"""``rc-dashboard`` as operators run it: a process that serves until SIGTERM, and one-line errors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import aiohttp
import pytest

from tests.coordinator.fixtures import Running
from tests.dashboard.conftest import wait_for


def dashboard_env(amqp_url: str, namespace: str, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RC_")}
    return env | {"RC_AMQP_URL": amqp_url, "RC_NAMESPACE": namespace, **extra}


async def test_it_serves_until_sigterm(amqp_url: str, namespace: str, coordinator: Running) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rc_dashboard",
        "--listen",
        "127.0.0.1:0",
        env=dashboard_env(amqp_url, namespace, RC_DASHBOARD_TOKEN="a" * 20),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        serving: dict[str, str] = {}
        while not serving:
            line = await asyncio.wait_for(process.stderr.readline(), 30)
            assert line, "rc-dashboard exited before serving"
            record = json.loads(line)
            if record.get("event") == "dashboard.serving":
                serving = record
        assert serving["mode"] == "operator token set"
        assert "a" * 20 not in json.dumps(serving)
        async with aiohttp.ClientSession() as http:

            async def healthy() -> bool:
                async with http.get(f"{serving['url']}healthz") as response:
                    return response.status == 200 and (await response.json())["broker"] is True

            await wait_for(healthy, 30, "rc-dashboard /healthz")
            async with http.get(serving["url"]) as response:
                assert response.status == 200
                assert "Releases" in await response.text()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.parametrize(
    ("arguments", "extra", "message"),
    [
        (["--listen", "8780"], {}, "listen must be HOST:PORT"),
        ([], {"RC_DASHBOARD_TOKEN": "short"}, "RC_DASHBOARD_TOKEN must have at least 16 characters"),
        (["--timeout", "soon"], {}, "RC_TIMEOUT must be a number of seconds"),
        (["--public-url", "https://dash.example.org/rc"], {}, "the public URL must have no path"),
        ([], {"RC_DASHBOARD_PUBLIC_URL": "dash.example.org"}, "the public URL must start with https://"),
    ],
)
async def test_bad_settings_are_one_line_and_exit_2(
    arguments: list[str], extra: dict[str, str], message: str
) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RC_")} | extra
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rc_dashboard",
        *arguments,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert out == b""
    assert err.decode().count("\n") == 1
    assert err.decode().startswith(f"rc-dashboard: {message}")
