"""A TCP proxy that can hold back what the broker sends while it still forwards what the client sends.

Held, a client's publications reach the broker (and are routed) but their confirms do not come back: the
client cannot know they arrived. Cutting the proxy then makes the client switch to another node with
publications whose confirm was lost, which is the case the cluster tests need.
"""

from __future__ import annotations

import asyncio
import contextlib

from tests._proxy import CHUNK, TcpProxy


class HoldingProxy(TcpProxy):
    def __init__(self, upstream_host: str, upstream_port: int, *, hold_after: bytes | None = None) -> None:
        super().__init__(upstream_host, upstream_port)
        #: Hold as soon as the client has sent these bytes (e.g. a routing key), if given.
        self.hold_after = hold_after
        #: Set once the proxy holds.
        self.holding = asyncio.Event()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._to_clients: set[asyncio.StreamWriter] = set()

    def hold(self) -> None:
        """From now on, keep what the broker sends (nothing reaches the clients until :meth:`cut`)."""
        self._flowing.clear()
        self.holding.set()

    def cut(self) -> int:
        cut = super().cut()
        self._flowing.set()  # what was held goes to closed connections: lost
        return cut

    async def _on_client(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        self._to_clients.add(client_writer)
        await super()._on_client(client_reader, client_writer)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        to_client = writer in self._to_clients
        seen = b""
        try:
            while data := await reader.read(CHUNK):
                if to_client:
                    await self._flowing.wait()
                elif self.hold_after is not None and not self.holding.is_set():
                    seen = (seen + data)[-(len(self.hold_after) + len(data)) :]
                    if self.hold_after in seen:  # held before the broker can answer what is sent now
                        self.hold()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            self._to_clients.discard(writer)
            with contextlib.suppress(Exception):
                writer.transport.abort()
