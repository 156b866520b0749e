"""The dashboard's one subscription to the broker, kept up across connection losses.

On a connection of its own it binds two exclusive, server-named queues (they vanish with the connection):

- one to ``<ns>.events`` (``release.#``): the coordinator's announcements, passed to the hub as they are;
- one to ``<ns>.replies`` (``reply.*.reply`` and ``reply.*.progress``): the services' answers and progress
  reports, each taken only from the service's own broker user or a trusted one (``RC_TRUSTED_USERS``, the
  coordinator's rule; RabbitMQ vouches for ``user_id``); the coordinator dead-letters the others. An
  answer is a hint (release, service, message id): the hub reads the release again from the coordinator.
  A progress report is shown at once and confirmed by reading the release (:mod:`rc_dashboard.overlay`).
  This binding needs read access to the replies exchange; an operator user set up by ``rc-admin-setup``
  does not have it, and the dashboard then learns of progress by polling.

When the connection is lost (a broker restart, a network cut) the hub is told, and the feed connects again
every ``reconnect_seconds`` until it succeeds; the hub then catches up.

The same connection answers :meth:`BrokerFeed.consumers`: how many consumers a queue has, from a passive
declare on a throwaway channel (a passive declare of a missing queue closes its channel, nothing else).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterable
from typing import Protocol

import aio_pika
import aiormq.exceptions
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from rc_cli.client import _scrub
from schemas.broker_url import Rotation, mask_url, split_urls
from schemas.documents import ReleaseView
from schemas.messages import Announcement, MessageError, Progress, decode
from schemas.topology import Topology

log = structlog.get_logger("rc_dashboard")

#: Routing keys of the services' messages worth a new look at their release (not heartbeats).
REPLY_KEYS = ("reply.*.reply", "reply.*.progress")
#: The largest reply or progress report read for a hint (larger ones are the coordinator's to refuse).
MAX_HINT_BYTES = 256 * 1024


class FeedListener(Protocol):
    """What the feed reports to (the hub, in the dashboard)."""

    def observe(self, view: ReleaseView, *, complete: bool = True) -> None: ...
    def hint(self, release_id: str, service: str | None = None, message_id: str | None = None) -> None: ...
    def progress(self, report: Progress) -> None: ...
    def connection_changed(self, connected: bool, text: str, *, progress_feed: bool = False) -> None: ...


def read_hint(body: bytes) -> tuple[str, str, str] | None:
    """``(release_id, service, message_id)`` of a reply or progress report, or ``None`` if unreadable."""
    if len(body) > MAX_HINT_BYTES:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    fields = (data.get("release_id"), data.get("service"), data.get("message_id"))
    if not all(isinstance(value, str) and 0 < len(value) <= 200 for value in fields):
        return None
    release_id, service, message_id = fields
    return str(release_id), str(service), str(message_id)


class BrokerFeed:
    def __init__(
        self,
        amqp_url: str,
        namespace: str,
        listener: FeedListener,
        *,
        reconnect_seconds: float,
        trusted_users: frozenset[str] = frozenset(),
    ) -> None:
        self.amqp_url = amqp_url
        self.trusted_users = trusted_users
        self.topology = Topology(namespace)
        self.listener = listener
        self.reconnect_seconds = reconnect_seconds
        self.where = f"{mask_url(amqp_url)} (namespace {namespace})"
        #: A cluster's nodes: each connection that ends, or cannot be opened, moves to the next one.
        self._urls = Rotation(split_urls(amqp_url))
        self._connection: AbstractConnection | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Stay subscribed until ``stop`` is set."""
        while not stop.is_set():
            url = self._urls.current
            try:
                connection = await aio_pika.connect(
                    url, timeout=10, client_properties={"connection_name": "rc-dashboard live"}
                )
            except Exception as error:
                self._urls.lost(url)
                self._down(f"cannot reach the broker at {self.where}: {self._detail(error)}")
            else:
                self._urls.connected(url)
                await self._serve(connection, stop)
                self._urls.lost(url)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.reconnect_seconds)

    async def _serve(self, connection: AbstractConnection, stop: asyncio.Event) -> None:
        closed = asyncio.Event()
        connection.close_callbacks.add(lambda *_: closed.set())
        try:
            progress = await self._subscribe(connection)
        except aiormq.exceptions.ChannelNotFoundEntity:
            self._down(f"no coordinator has ever run on {self.where}: waiting for one")
            await self._close(connection)
            return
        except Exception as error:
            self._down(f"lost the broker at {self.where}: {self._detail(error)}")
            await self._close(connection)
            return
        self._connection = connection
        how = "as they happen" if progress else "by polling (no read access to the replies exchange)"
        log.info("dashboard.live", where=self.where, progress=how)
        self.listener.connection_changed(True, f"live: progress {how}", progress_feed=progress)
        stopping = asyncio.create_task(stop.wait())
        closing = asyncio.create_task(closed.wait())
        await asyncio.wait({stopping, closing}, return_when=asyncio.FIRST_COMPLETED)
        for task in (stopping, closing):
            task.cancel()
        self._connection = None
        if not stop.is_set():
            self._down(f"lost the broker at {self.where}: reconnecting")
        await self._close(connection)

    async def _subscribe(self, connection: AbstractConnection) -> bool:
        """Bind the announcements (required) and the replies (if allowed); whether replies are bound."""
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=256)
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        await queue.bind(self.topology.events_exchange, routing_key="release.#")
        await queue.consume(self._on_announcement, no_ack=True)
        try:
            replies = await connection.channel()
            hints = await replies.declare_queue("", exclusive=True, auto_delete=True)
            for key in REPLY_KEYS:
                await hints.bind(self.topology.replies_exchange, routing_key=key)
            await hints.consume(self._on_reply, no_ack=True)
        except (aiormq.exceptions.ChannelAccessRefused, aiormq.exceptions.ChannelNotFoundEntity) as error:
            log.info("dashboard.no_progress_feed", reason=self._detail(error))
            return False
        return True

    async def _on_announcement(self, message: AbstractIncomingMessage) -> None:
        try:
            announcement = decode(message.body, Announcement)
        except MessageError as error:
            log.warning("dashboard.invalid_announcement", reason=error.reason)
            return
        self.listener.observe(announcement.release, complete=True)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        """A service's message: passed on only if the coordinator would trust its sender too (a spoofed one
        is the coordinator's to dead-letter, and must not make the dashboard read releases for nothing)."""
        if (message.routing_key or "").endswith(".progress"):
            try:
                report = decode(message.body, Progress)
            except MessageError:
                return
            if self._trusted(message.user_id, report.service):
                self.listener.progress(report)
            return
        hint = read_hint(message.body)
        if hint is not None and self._trusted(message.user_id, hint[1]):
            release_id, service, message_id = hint
            self.listener.hint(release_id, service, message_id)

    def _trusted(self, user: str | None, service: str) -> bool:
        return user is not None and (user == service or user in self.trusted_users)

    def _down(self, text: str) -> None:
        log.warning("dashboard.broker_down", reason=text)
        self.listener.connection_changed(False, text)

    def _detail(self, error: BaseException) -> str:
        return _scrub(f"{type(error).__name__}: {error}", self.amqp_url)

    @staticmethod
    async def _close(connection: AbstractConnection) -> None:
        with contextlib.suppress(Exception):
            await connection.close()

    async def consumers(self, queues: Iterable[str]) -> dict[str, int | None]:
        """Consumers on each queue (``None``: unknown, the queue missing or the broker not reachable)."""
        counts: dict[str, int | None] = dict.fromkeys(queues)
        connection = self._connection
        if connection is None or connection.is_closed:
            return counts
        channel: AbstractChannel | None = None
        try:
            for name in counts:
                if channel is None or channel.is_closed:
                    channel = await connection.channel()
                with contextlib.suppress(aiormq.exceptions.AMQPError):
                    declared = await channel.declare_queue(name, passive=True)
                    counts[name] = declared.declaration_result.consumer_count
        except Exception as error:  # the connection went away meanwhile: the counts stay unknown
            log.info("dashboard.consumers_unknown", reason=self._detail(error))
        finally:
            if channel is not None and not channel.is_closed:
                with contextlib.suppress(Exception):
                    await channel.close()
        return counts
