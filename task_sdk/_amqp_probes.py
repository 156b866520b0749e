"""What aio-pika knows but does not say in its public API: read softly (a missing attribute means "cannot
tell", never an error), for the work consumer (:mod:`task_sdk._amqp`) and the control queue
(:mod:`task_sdk._amqp_control`) alike."""

from __future__ import annotations

from typing import Any


def consumer_registered(channel: object, tag: str | None) -> bool:
    """Whether the open ``channel`` still has the consumer ``tag`` (True when aio-pika cannot tell)."""
    underlay: Any = getattr(channel, "_channel", None)
    consumers = getattr(getattr(underlay, "channel", None), "consumers", None)
    return consumers is None or tag in consumers


def connection_lost(connection: object) -> bool:
    """Whether a robust ``connection`` has no transport: it is down, reconnecting."""
    return getattr(connection, "transport", None) is None
