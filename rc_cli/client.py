"""Talk to the coordinator over the broker: request/reply on the admin exchange, announcements on events.

:class:`AdminClient` connects once, sends :class:`~schemas.messages.AdminRequest` s and waits for the matching
:class:`~schemas.messages.AdminAnswer` on an exclusive, server-named reply queue. A refusal by the coordinator
is an answer (``ok`` is false), not an exception; everything that prevents getting an answer at all is an
:class:`AdminClientError` whose text is one line naming the broker URL with the password masked::

    async with AdminClient("amqp://guest:guest@127.0.0.1:5672/", namespace="rc", timeout=10) as client:
        answer = await client.request(ListReleases(limit=10))
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import urllib.parse
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

import aio_pika
import aiormq.exceptions
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)

from schemas.broker_url import Rotation, broker_user, mask_url, split_urls
from schemas.messages import (
    SCHEMA_VERSION,
    AdminAnswer,
    AdminOperation,
    AdminRequest,
    AdminResult,
    Announcement,
    MessageError,
    decode,
    encode,
)
from schemas.topology import SCHEMA_VERSION_HEADER, Topology

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_NAMESPACE = "rc"
DEFAULT_TIMEOUT = 10.0


class AdminClientError(Exception):
    """No answer could be obtained from the coordinator; the text is one line fit for an operator."""


class BrokerUnreachable(AdminClientError):
    """The broker cannot be reached, refused the credentials, or the connection was lost."""


class NoCoordinator(AdminClientError):
    """No coordinator has ever set up the namespace on this broker (missing exchange, unroutable request)."""


class NoAnswer(AdminClientError):
    """The request was routed but no answer came back in time."""


class InvalidAnswer(AdminClientError):
    """Something answered, but not with a valid ``AdminAnswer``."""


class Refused(Exception):
    """The coordinator answered with a refusal; ``reason`` is its one-line explanation."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"refused: {reason}")
        self.reason = reason


def expect_ok(answer: AdminAnswer) -> AdminResult | None:
    """The answer's result, or :class:`Refused` if the coordinator refused."""
    if not answer.ok:
        raise Refused(answer.error or "no reason given")
    return answer.result


# ---------------------------------------------------------------------- helpers


def default_operator() -> str:
    """``$RC_OPERATOR``, else the OS user name, else ``unknown``."""
    configured = os.environ.get("RC_OPERATOR", "").strip()
    if configured:
        return configured[:200]
    try:
        return getpass.getuser()[:200] or "unknown"
    except (OSError, KeyError, ImportError):
        return "unknown"


def format_seconds(seconds: float) -> str:
    return f"{seconds:g}s"


def _scrub(text: str, url: str) -> str:
    """Remove the password of ``url`` (of each URL of a list) from ``text`` (error messages of the AMQP
    libraries may quote it)."""
    urls = split_urls(url)
    if len(urls) > 1:
        for one in urls:
            text = _scrub(text, one)
        return text
    try:
        password = urllib.parse.urlsplit(url).password
    except ValueError:
        password = None
    if password:
        text = text.replace(password, "***")
        decoded = urllib.parse.unquote(password)
        if decoded:
            text = text.replace(decoded, "***")
    return " ".join(text.split())


# ---------------------------------------------------------------------- the client


class AdminClient:
    """One connection to the broker, over which any number of admin requests are made."""

    def __init__(
        self,
        amqp_url: str = DEFAULT_AMQP_URL,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        operator: str | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        #: The broker URL, or the URLs of a cluster's nodes (comma-separated), tried in turn.
        self._urls = Rotation(split_urls(amqp_url, "the broker URL (--amqp-url, RC_AMQP_URL)"))
        self.amqp_url = amqp_url
        self.namespace = namespace
        self.topology = Topology(namespace)
        self.timeout = timeout
        self.operator = operator or default_operator()
        self.user = broker_user(amqp_url)
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._reply_queue: AbstractQueue | None = None
        self._events_channel: AbstractChannel | None = None
        self._pending: dict[str, asyncio.Future[AdminAnswer]] = {}
        self._setup_lock = asyncio.Lock()

    # -------------------------------------------------------------- lifecycle

    @property
    def where(self) -> str:
        """``<masked url> (namespace <ns>)``: how errors name the installation."""
        return f"{mask_url(self.amqp_url)} (namespace {self.namespace})"

    async def connect(self) -> None:
        """Open the connection and the reply queue; :class:`BrokerUnreachable` if the broker is not there.

        With several broker URLs, each is tried in turn; a connection that was lost is opened again on the
        next node."""
        if self._connected():
            return
        if self._connection is not None and self._urls.last_connected is not None:
            self._urls.lost(self._urls.last_connected)
            self._channel = self._exchange = self._reply_queue = self._events_channel = None
        failure: BrokerUnreachable | None = None
        for url in self._urls.order():
            try:
                self._connection = await self._open(url)
            except BrokerUnreachable as error:
                self._urls.lost(url)
                failure = error
                continue
            self._urls.connected(url)
            await self._ensure_channel()
            return
        assert failure is not None
        raise failure

    def _connected(self) -> bool:
        """Whether the connection is open (a lost one is neither closed by us nor connected)."""
        connection = self._connection
        return connection is not None and not connection.is_closed and connection.connected.is_set()

    async def _open(self, url: str) -> AbstractConnection:
        try:
            return await asyncio.wait_for(
                aio_pika.connect(
                    url,
                    timeout=self.timeout,
                    client_properties={"connection_name": f"rc-cli {self.operator}"},
                ),
                self.timeout + 1,
            )
        except TimeoutError:
            raise BrokerUnreachable(
                f"cannot reach the broker at {mask_url(self.amqp_url)}: no connection within "
                f"{format_seconds(self.timeout)}"
            ) from None
        except Exception as error:
            detail = _scrub(f"{type(error).__name__}: {error}", self.amqp_url)
            raise BrokerUnreachable(
                f"cannot reach the broker at {mask_url(self.amqp_url)}: {detail}"
            ) from None

    async def close(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.cancel()
        self._pending.clear()
        connection, self._connection = self._connection, None
        self._channel = self._exchange = self._reply_queue = self._events_channel = None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(Exception):
                await connection.close()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _ensure_channel(self) -> tuple[AbstractExchange, AbstractQueue]:
        """The publishing channel and reply queue, (re)opened if the broker closed the channel."""
        async with self._setup_lock:
            if (
                self._channel is not None
                and not self._channel.is_closed
                and self._exchange is not None
                and self._reply_queue is not None
            ):
                return self._exchange, self._reply_queue
            connection = self._require_connection()
            try:
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
                await queue.consume(self._on_reply, no_ack=True)
            except Exception as error:
                raise self._lost(error) from None
            self._channel = channel
            self._reply_queue = queue
            # Not declared: the operator may not configure it, and a missing exchange is reported on publish.
            self._exchange = await channel.get_exchange(self.topology.admin_exchange, ensure=False)
            return self._exchange, queue

    def _require_connection(self) -> AbstractConnection:
        if self._connection is None or self._connection.is_closed:
            raise BrokerUnreachable(f"not connected to the broker at {mask_url(self.amqp_url)}")
        return self._connection

    def _lost(self, error: BaseException) -> AdminClientError:
        detail = _scrub(f"{type(error).__name__}: {error}", self.amqp_url)
        if isinstance(error, aiormq.exceptions.ChannelAccessRefused):
            return BrokerUnreachable(
                f"the broker at {mask_url(self.amqp_url)} refused access to user {self.user!r}: {detail}"
            )
        return BrokerUnreachable(f"lost the broker at {mask_url(self.amqp_url)}: {detail}")

    # -------------------------------------------------------------- requests

    def build_request(self, operation: AdminOperation) -> AdminRequest:
        return AdminRequest(
            message_id=uuid.uuid4().hex,
            sent_at=datetime.now(UTC),
            operator=self.operator,
            operation=operation,
        )

    async def request(self, operation: AdminOperation, *, wait: float | None = None) -> AdminAnswer:
        """Send one admin request and return the coordinator's answer (which may be a refusal).

        Raises :class:`AdminClientError` (one of its subclasses) when no valid answer arrives in time.
        """
        wait = self.timeout if wait is None else wait
        if self._connection is None or (len(self._urls.urls) > 1 and not self._connected()):
            await self.connect()  # with several nodes, a lost connection moves to the next one
        exchange, reply_queue = await self._ensure_channel()
        request = self.build_request(operation)
        message = aio_pika.Message(
            encode(request),
            content_type="application/json",
            type=request.kind.value,
            message_id=request.message_id,
            correlation_id=request.message_id,
            reply_to=reply_queue.name,
            user_id=self.user,
            timestamp=request.sent_at,
            headers={SCHEMA_VERSION_HEADER: SCHEMA_VERSION},
            # A request nobody took before we gave up must not be executed later by a coordinator that
            # starts afterwards: the operator was told it failed.
            expiration=wait,
        )
        future: asyncio.Future[AdminAnswer] = asyncio.get_running_loop().create_future()
        self._pending[request.message_id] = future
        try:
            async with asyncio.timeout(wait):
                await self._publish(exchange, message)
                return await future
        except TimeoutError:
            raise NoAnswer(f"no coordinator answered within {format_seconds(wait)} on {self.where}") from None
        finally:
            self._pending.pop(request.message_id, None)

    async def _publish(self, exchange: AbstractExchange, message: aio_pika.Message) -> None:
        admin = self.topology.admin_exchange
        try:
            await exchange.publish(message, routing_key=self.topology.admin_routing_key, mandatory=True)
        except aiormq.exceptions.PublishError:
            raise NoCoordinator(
                f"no coordinator is listening on {self.where}: the request was unroutable "
                f"(no queue is bound to exchange {admin!r}); start the coordinator"
            ) from None
        except aiormq.exceptions.ChannelNotFoundEntity:
            raise NoCoordinator(
                f"no coordinator has ever run on {self.where}: exchange {admin!r} does not exist; "
                "start the coordinator (or check --namespace)"
            ) from None
        except aiormq.exceptions.DeliveryError as error:
            raise BrokerUnreachable(
                f"the broker at {mask_url(self.amqp_url)} did not accept the request: "
                f"{_scrub(str(error), self.amqp_url)}"
            ) from None
        except aiormq.exceptions.ChannelPreconditionFailed as error:
            raise BrokerUnreachable(
                f"the broker at {mask_url(self.amqp_url)} refused the request "
                f"(is user_id {self.user!r} the connection's user?): {_scrub(str(error), self.amqp_url)}"
            ) from None
        except (
            aiormq.exceptions.AMQPError,
            ConnectionError,
            aiormq.exceptions.ChannelInvalidStateError,
        ) as error:
            raise self._lost(error) from None

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._pending.get(message.correlation_id or "")
        if future is None or future.done():
            return  # a late answer to a request we gave up on, or not ours
        try:
            answer = decode(message.body, AdminAnswer)
        except MessageError as error:
            problem = str(error)
        else:
            if answer.in_reply_to == message.correlation_id:
                future.set_result(answer)
                return
            problem = (
                f"in_reply_to {answer.in_reply_to!r} does not match correlation_id {message.correlation_id!r}"
            )
        future.set_exception(InvalidAnswer(f"invalid answer from the coordinator on {self.where}: {problem}"))

    # -------------------------------------------------------------- announcements

    async def subscribe_announcements(
        self, on_announcement: Callable[[Announcement], object], routing_key: str = "release.#"
    ) -> None:
        """Call ``on_announcement`` for every valid announcement on the events exchange from now on.

        Uses its own channel and an exclusive, server-named queue that goes away with the connection.
        Raises :class:`NoCoordinator` if the events exchange does not exist.
        """
        connection = self._require_connection()

        async def deliver(message: AbstractIncomingMessage) -> None:
            try:
                announcement = decode(message.body, Announcement)
            except MessageError:
                return  # not ours to judge; the coordinator is the only publisher
            on_announcement(announcement)

        try:
            channel = await connection.channel()
            queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
            await queue.bind(self.topology.events_exchange, routing_key=routing_key)
            await queue.consume(deliver, no_ack=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            raise NoCoordinator(
                f"no coordinator has ever run on {self.where}: exchange "
                f"{self.topology.events_exchange!r} does not exist"
            ) from None
        except Exception as error:
            raise self._lost(error) from None
        self._events_channel = channel
