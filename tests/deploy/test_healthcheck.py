"""``deploy.healthcheck`` against the real broker and a local HTTP server."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from deploy.healthcheck import check_consumer, check_health_file, check_http, main
from schemas.topology import Topology


async def _ignore(message: AbstractIncomingMessage) -> None:
    return None


async def test_task_check_needs_a_consumer(amqp_url: str, namespace: str) -> None:
    topology = Topology(namespace)
    queue_name = topology.task_queue("portal")
    assert "NOT_FOUND" in (await check_consumer(amqp_url, queue_name) or "")
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            queue_name, durable=True, arguments=topology.task_queue_arguments()
        )
        assert await check_consumer(amqp_url, queue_name) == f"{queue_name}: no consumer"
        tag = await queue.consume(_ignore)
        assert await check_consumer(amqp_url, queue_name) is None
        await queue.cancel(tag)
    assert (await check_consumer("amqp://nobody:wrong@127.0.0.1:5672/", queue_name) or "").startswith(
        "cannot"
    )


def test_task_command_line_without_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RC_AMQP_URL", raising=False)
    assert main(["task", "portal"]) == 1


@pytest.fixture
def http_server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/metrics" else 503)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_http_check(http_server: str) -> None:
    assert await asyncio.to_thread(check_http, f"{http_server}/metrics") is None
    assert await asyncio.to_thread(check_http, f"{http_server}/other") is not None
    assert await asyncio.to_thread(main, ["http", f"{http_server}/metrics"]) == 0
    assert await asyncio.to_thread(main, ["http", "http://127.0.0.1:9/metrics"]) == 1


def test_a_health_file_that_cannot_be_read_is_unhealthy(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    assert "FileNotFoundError" in (check_health_file(missing, 15) or "")
    garbage = tmp_path / "garbage"
    garbage.write_text("{not json")
    assert "JSONDecodeError" in (check_health_file(garbage, 15) or "")
    unhealthy = tmp_path / "unhealthy"
    unhealthy.write_text('{"at": "2026-01-01T00:00:00+00:00", "healthy": false, "detail": "broker down"}')
    now = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)
    assert check_health_file(unhealthy, 15, now=now) == "unhealthy: broker down"
    assert main(["task", "portal", "--health-file", str(missing)]) == 1
