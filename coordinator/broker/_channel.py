"""Publishing and consuming straight on the AMQP channel under an aio-pika channel (aiormq's).

aio-pika's ``Exchange.publish`` holds the channel until each frame is written to the socket, and its
consumer wraps every delivery in a message object and a second task; the coordinator's hot path does
neither (see the README's Performance section). Connections, channels and declares stay aio-pika's.
"""

from __future__ import annotations

import aiormq
from aio_pika.abc import AbstractChannel
from aiormq.exceptions import ChannelInvalidStateError, DeliveryError, PublishError
from pamqp.commands import Basic

from coordinator.broker._interface import Unroutable


class Nacked(Exception):
    """The broker refused a publication (``basic.nack``: a queue full and rejecting, say); it was not
    delivered and may be sent again."""


async def send_confirmed(
    channel: AbstractChannel,
    exchange: str,
    routing_key: str,
    body: bytes,
    properties: Basic.Properties,
    *,
    mandatory: bool,
    within: float,
) -> None:
    """Publish on a channel opened with publisher confirms and wait for the broker's confirm: straight on
    the AMQP channel, without waiting for the frame to be written before the next publication may queue
    behind it (aio-pika's ``Exchange.publish`` waits), so that the publications of a transition go out back
    to back, their confirms in flight together. A message the broker returns (mandatory, and no queue took
    it) raises :class:`Unroutable`, whether or not the channel was opened with ``on_return_raises``; a
    nack raises :class:`Nacked`; so does a channel or connection lost before the confirm came (its own
    error), or no confirm ``within`` seconds (TimeoutError)."""
    underlay = await underlay_of(channel)
    try:
        confirmation = await underlay.basic_publish(
            body,
            exchange=exchange,
            routing_key=routing_key,
            properties=properties,
            mandatory=mandatory,
            timeout=within,
            wait=False,
        )
    except PublishError as error:  # returned, on a channel opened with on_return_raises
        raise Unroutable(f"{routing_key}: {error}") from None
    except DeliveryError:  # aiormq's error for a basic.nack
        raise Nacked(f"{exchange} {routing_key}: refused by the broker (basic.nack)") from None
    if confirmation is not None and not isinstance(confirmation, Basic.Ack):  # returned
        raise Unroutable(f"{routing_key}: returned by the broker (no queue took it)")


async def underlay_of(channel: AbstractChannel) -> aiormq.Channel:
    """The AMQP channel under an aio-pika channel (aiormq's), to publish and consume on it directly."""
    if channel.is_closed:
        raise ChannelInvalidStateError(f"{channel!r} closed")
    underlay = await channel.get_underlay_channel()
    if not isinstance(underlay, aiormq.Channel):  # what aio-pika's channels are made of
        raise TypeError(f"not an aiormq channel: {underlay!r}")
    return underlay
