"""A robust connection to a cluster: aio-pika's, made to move to the next broker node.

aio-pika's :class:`~aio_pika.RobustConnection` reconnects to the one URL it was given, and restores
its channels, declarations and consumers. :class:`FailoverConnection` keeps all that and changes
only *where* it reconnects: whenever its connection is lost, or an attempt to open it fails, the
next attempt goes to the next URL of its :class:`~schemas.broker_url.Rotation`. (aio-pika calls
``_on_connection_close`` in both cases, before it makes the next attempt.)

With a single URL, :func:`connect_robust` is aio-pika's own ``connect_robust``, unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractRobustConnection
from yarl import URL

from schemas.broker_url import Rotation, mask_url

log = structlog.get_logger("task_sdk")


class FailoverConnection(aio_pika.RobustConnection):
    """A robust connection whose every new attempt goes to the rotation's next URL."""

    def __init__(self, rotation: Rotation, **kwargs: Any) -> None:
        super().__init__(URL(rotation.current), **kwargs)
        self.rotation = rotation
        #: The URL of the current attempt or connection, as the rotation spells it.
        self.node_url = rotation.current

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        self.rotation.lost(self.node_url)
        self.node_url = self.rotation.current
        self.url = URL(self.node_url)
        await super()._on_connection_close(closing)

    async def _on_connected(self) -> None:
        await super()._on_connected()
        if self.rotation.connected(self.node_url):
            log.info("broker.node", url=mask_url(self.node_url))


async def connect_robust(urls: Sequence[str], **kwargs: Any) -> AbstractRobustConnection:
    """A robust connection to the first of ``urls`` that answers, which moves to the next on loss.

    Raises the last URL's error when none answers (as ``aio_pika.connect_robust`` raises its one URL's).
    """
    timeout = kwargs.pop("timeout", None)
    if len(urls) == 1:
        single: AbstractRobustConnection = await aio_pika.connect_robust(urls[0], timeout=timeout, **kwargs)
        return single
    rotation = Rotation(urls)
    failure: Exception | None = None
    for _ in urls:
        connection = FailoverConnection(rotation, **kwargs)
        try:
            await connection.connect(timeout=timeout)
        except Exception as error:  # this attempt moved the rotation on: try the next URL
            failure = error
            await connection.close()
            continue
        return connection
    assert failure is not None
    raise failure
