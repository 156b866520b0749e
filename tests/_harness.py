"""Helpers behind the shared fixtures of ``tests/conftest.py``: reaching the broker and the store,
and removing what one test declared on the broker."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import importlib
import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import aio_pika
import aiormq
import pymongo

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
#: Port of the RabbitMQ management HTTP API, used (when enabled) to list what a test declared.
MANAGEMENT_PORT = 15672


class BrokerUnreachable(RuntimeError):
    """The RabbitMQ broker the tests need cannot be reached."""


class StoreUnreachable(RuntimeError):
    """The MongoDB-protocol server the tests need cannot be reached."""


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***``, fit for error messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


async def check_broker(url: str, connect_timeout: float = 5.0) -> None:
    """Open and close one AMQP connection to ``url``; raise :class:`BrokerUnreachable` naming it if not."""
    try:
        connection = await asyncio.wait_for(
            aio_pika.connect(url, timeout=connect_timeout), connect_timeout + 1
        )
    except Exception as error:
        raise BrokerUnreachable(
            f"RabbitMQ is not reachable at {redact(url)} ({type(error).__name__}: {error}). "
            "Start it (scripts/ensure-rabbitmq.sh) or point RC_AMQP_URL at a running broker."
        ) from error
    await connection.close()


def check_broker_blocking(url: str, timeout: float = 5.0) -> None:
    """:func:`check_broker` from synchronous code, on a private event loop in a worker thread."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, check_broker(url, timeout)).result()


def check_store(url: str, timeout: float = 5.0) -> None:
    """Ping the MongoDB-protocol server at ``url``; raise :class:`StoreUnreachable` naming it if it fails."""
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
        url, serverSelectionTimeoutMS=int(timeout * 1000), connectTimeoutMS=int(timeout * 1000)
    )
    try:
        client.admin.command("ping")
    except Exception as error:
        raise StoreUnreachable(
            f"the MongoDB-protocol server is not reachable at {redact(url)} ({type(error).__name__}: {error})"
        ) from error
    finally:
        client.close()


@contextlib.contextmanager
def docker_mongo() -> Iterator[str | None]:
    """A throw-away ``mongo:7`` container's URL if a Docker engine is reachable, else ``None`` (quietly)."""
    try:
        docker: Any = importlib.import_module("docker")  # untyped; imported this way to need no stubs

        try:
            from testcontainers.community.mongodb import MongoDbContainer
        except ImportError:  # testcontainers < 4.14
            from testcontainers.mongodb import MongoDbContainer

        docker.from_env(timeout=5).ping()
        container = MongoDbContainer("mongo:7")
    except Exception:
        yield None
        return
    try:
        container.start()
    except Exception:
        with contextlib.suppress(Exception):
            container.stop()
        yield None
        return
    try:
        yield str(container.get_connection_url())
    finally:
        with contextlib.suppress(Exception):
            container.stop()


# ---------------------------------------------------------------------- broker cleanup


def _vhost(url: str) -> str:
    path = urllib.parse.urlsplit(url).path
    return urllib.parse.unquote(path[1:]) if len(path) > 1 else "/"


def _list_over_http(url: str) -> tuple[list[str], list[str]] | None:
    """Names of (queues, exchanges) from the management API, or ``None`` if it is not available."""
    parts = urllib.parse.urlsplit(url)
    scheme = "https" if parts.scheme == "amqps" else "http"
    base = f"{scheme}://{parts.hostname or '127.0.0.1'}:{MANAGEMENT_PORT}/api"
    vhost = urllib.parse.quote(_vhost(url), safe="")
    credentials = (
        f"{urllib.parse.unquote(parts.username or 'guest')}:{urllib.parse.unquote(parts.password or 'guest')}"
    )
    headers = {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}
    names: list[list[str]] = []
    for kind in ("queues", "exchanges"):
        request = urllib.request.Request(f"{base}/{kind}/{vhost}?columns=name", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                names.append([item["name"] for item in json.load(response)])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return names[0], names[1]


async def _list_with_rabbitmqctl(url: str) -> tuple[list[str], list[str]] | None:
    """Names of (queues, exchanges) from the local ``rabbitmqctl``, or ``None`` if it is not available."""
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None:
        return None
    names: list[list[str]] = []
    for kind in ("list_queues", "list_exchanges"):
        try:
            process = await asyncio.create_subprocess_exec(
                rabbitmqctl,
                kind,
                "-q",
                "--no-table-headers",
                "-p",
                _vhost(url),
                "name",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            out, _ = await asyncio.wait_for(process.communicate(), 30)
        except (OSError, TimeoutError):
            return None
        if process.returncode != 0:
            return None
        names.append([line.strip() for line in out.decode(errors="replace").splitlines() if line.strip()])
    return names[0], names[1]


async def delete_namespace(url: str, namespace: str) -> None:
    """Delete every queue and exchange whose name starts with ``namespace + "."``; silently do nothing
    if they cannot be listed (neither the management API nor ``rabbitmqctl`` is available)."""
    prefix = namespace + "."
    host = urllib.parse.urlsplit(url).hostname or ""
    listed = await asyncio.to_thread(_list_over_http, url)
    if listed is None and host in {"127.0.0.1", "localhost", "::1"}:  # rabbitmqctl talks to the local node
        listed = await _list_with_rabbitmqctl(url)
    if listed is None:
        return
    queues = [name for name in listed[0] if name.startswith(prefix)]
    exchanges = [name for name in listed[1] if name.startswith(prefix)]
    if not queues and not exchanges:
        return
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        channel = await connection.channel()
        # Never if_unused/if_empty=True: quorum queues refuse them and the broker closes the connection.
        for name in queues:
            try:
                await channel.queue_delete(name, if_unused=False, if_empty=False)
            except aiormq.exceptions.ChannelLockedResource:
                # An exclusive queue of a connection still open: it goes when that connection closes.
                channel = await connection.channel()
        for name in exchanges:
            await channel.exchange_delete(name, if_unused=False)
