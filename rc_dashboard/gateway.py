"""The dashboard's way to the coordinator: admin requests over the broker, exactly as ``rc`` makes them.

One :class:`~rc_cli.client.AdminClient` is shared by every page and action. When the broker connection is
lost, the next request opens a new one; a read is tried once more on the new connection, an action never
(it may have reached the coordinator before the connection died, and the operator must see that it is
unknown rather than have it run twice).
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

import structlog

from rc_cli.client import AdminClient, AdminClientError, BrokerUnreachable, Refused, expect_ok
from schemas.messages import (
    AdminOperation,
    AdminResult,
    EventPage,
    ListEvents,
    ListReleases,
    ListServices,
    ListStudies,
    ReleasePage,
    ReleaseResult,
    ServiceList,
    ShowRelease,
    StudyPage,
)

log = structlog.get_logger("rc_dashboard")

R = TypeVar("R")


class Unavailable(Exception):
    """No answer could be had from the coordinator; the text is one line fit for an operator."""


class Gateway:
    """Admin requests to one installation's coordinator, on a connection that is re-opened when lost."""

    def __init__(self, amqp_url: str, namespace: str, *, timeout: float, operator: str) -> None:
        self.amqp_url = amqp_url
        self.namespace = namespace
        self.timeout = timeout
        self.operator = operator
        self._client: AdminClient | None = None
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def _connected(self) -> AdminClient:
        async with self._lock:
            if self._client is None:
                client = AdminClient(
                    self.amqp_url, self.namespace, timeout=self.timeout, operator=self.operator
                )
                try:
                    await client.connect()
                except AdminClientError as error:
                    await client.close()
                    raise Unavailable(str(error)) from None
                self._client = client
            return self._client

    async def _forget(self, client: AdminClient) -> None:
        async with self._lock:
            if self._client is client:
                self._client = None
        await client.close()

    async def ask(self, operation: AdminOperation, *, retry: bool = True) -> AdminResult | None:
        """The result; :class:`Refused` if the coordinator refused, :class:`Unavailable` if no answer came."""
        attempts = 2 if retry else 1
        for attempt in range(attempts):
            client = await self._connected()
            try:
                answer = await client.request(operation)
            except BrokerUnreachable as error:
                await self._forget(client)
                if attempt + 1 == attempts:
                    raise Unavailable(str(error)) from None
                log.info("dashboard.reconnecting", reason=str(error))
                continue
            except AdminClientError as error:
                raise Unavailable(str(error)) from None
            return expect_ok(answer)
        raise AssertionError("unreachable")  # pragma: no cover

    async def act(self, operation: AdminOperation) -> None:
        """An operator action, sent once; :class:`Refused` carries the coordinator's one-line reason."""
        await self.ask(operation, retry=False)

    # ------------------------------------------------------------------ typed reads

    async def _typed(self, operation: AdminOperation, expected: type[R]) -> R:
        result = await self.ask(operation)
        if not isinstance(result, expected):
            raise Unavailable(f"the coordinator answered {operation.op} without a {expected.__name__}")
        return result

    async def releases(self, operation: ListReleases) -> ReleasePage:
        return await self._typed(operation, ReleasePage)

    async def release(self, release_id: str, events: int = 0) -> ReleaseResult:
        return await self._typed(ShowRelease(release_id=release_id, events=events), ReleaseResult)

    async def events(self, operation: ListEvents) -> EventPage:
        return await self._typed(operation, EventPage)

    async def services(self) -> ServiceList:
        return await self._typed(ListServices(), ServiceList)

    async def studies(self, operation: ListStudies) -> StudyPage:
        return await self._typed(operation, StudyPage)


__all__ = ["Gateway", "Refused", "Unavailable"]
