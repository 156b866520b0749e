"""Settling what the coordinator consumes: the safety net around every handler, and dead letters."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime

import structlog

from coordinator import audit, metrics
from coordinator.broker import Delivery
from coordinator.store import ReleaseWriter
from schemas.enums import EventKind

log = structlog.get_logger("coordinator")


async def settle_safely(delivery: Delivery, handler: Callable[[Delivery], Awaitable[None]]) -> None:
    """Run ``handler``; if it fails, the delivery goes back to the queue to be tried again, a second later."""
    try:
        await handler(delivery)
    except Exception:
        log.exception(
            "failed to handle a message; it will be delivered again", message_id=delivery.message_id
        )
        await asyncio.sleep(1.0)
        with contextlib.suppress(Exception):
            await delivery.requeue()


async def dead_letter(
    delivery: Delivery, reason: str, release_id: str | None, store: ReleaseWriter, at: datetime
) -> None:
    """Refuse a message: counted, logged, recorded in the audit trail, then copied to the dead letters
    with the reason in its headers."""
    metrics.DEAD_LETTERED.labels(reason.split(":", 1)[0].split(" ", 1)[0]).inc()
    log.warning(
        "dead-lettered",
        reason=reason,
        release_id=release_id,
        message_id=delivery.message_id,
        routing_key=delivery.routing_key,
        user_id=delivery.user_id,
    )
    event = audit.audit_event(
        release_id,
        EventKind.DEAD_LETTERED,
        reason,
        at=at,
        actor=delivery.user_id or "unknown",
        message_id=delivery.message_id,
    )
    await store.record([event])
    await delivery.dead_letter(reason)


def release_id_of(delivery: Delivery) -> str | None:
    """The correlation id names the release; keep it on the audit event only if it looks like one."""
    value = delivery.correlation_id
    if value and len(value) == 11 and value.startswith("RE_"):
        return value
    return None
