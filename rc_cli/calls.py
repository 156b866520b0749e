"""``rc``'s requests to the coordinator: connect, ask, and turn what goes wrong into one line and an exit
code."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from rc_cli.client import AdminClient, AdminClientError, Refused, expect_ok
from rc_cli.options import Settings
from rc_cli.output import EXIT_BAD_INPUT, EXIT_REFUSED, EXIT_UNAVAILABLE, fail
from schemas.messages import AdminOperation, AdminResult

T = TypeVar("T")


def open_client(settings: Settings) -> AdminClient:
    try:
        return AdminClient(settings.amqp_url, settings.namespace, timeout=settings.timeout)
    except ValueError as error:  # a malformed broker URL (list)
        fail(settings, str(error), EXIT_BAD_INPUT)


def run(settings: Settings, work: Callable[[AdminClient], Awaitable[T]]) -> T:
    """Run ``work`` with a connected client, mapping failures to exit codes."""

    async def go() -> T:
        async with open_client(settings) as client:
            return await work(client)

    try:
        return asyncio.run(go())
    except Refused as refusal:
        fail(settings, str(refusal), EXIT_REFUSED)
    except AdminClientError as error:
        fail(settings, str(error), EXIT_UNAVAILABLE)


def request(settings: Settings, operation: AdminOperation) -> AdminResult | None:
    """Send one operation and return the coordinator's result (exit 1 if it refuses)."""

    async def work(client: AdminClient) -> AdminResult | None:
        return expect_ok(await client.request(operation))

    return run(settings, work)
