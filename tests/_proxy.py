"""A small asyncio TCP proxy for cutting a client off its server in tests.

::

    async with TcpProxy("127.0.0.1", 5672) as proxy:
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
        ...
        proxy.cut()           # close every current connection (both sides)
        proxy.pause()         # refuse new connections (accepted, then closed at once)
        proxy.resume()

With ``ssl`` (a server-side :class:`ssl.SSLContext`) it terminates TLS, as a reverse proxy in front of a
plain-HTTP server does; ``upstream`` may be set after the start (once the server's port is known).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as tls
from types import TracebackType
from typing import Self

CHUNK = 64 * 1024


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream_host:upstream_port``."""

    def __init__(self, upstream_host: str, upstream_port: int, *, ssl: tls.SSLContext | None = None) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.ssl = ssl
        self.port = 0
        #: How many client connections were accepted and forwarded so far.
        self.connections_made = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()
        self._accepting = True

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_client, "127.0.0.1", 0, ssl=self.ssl)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.stop()

    def cut(self) -> int:
        """Close every current connection, both towards the client and the server; return how many."""
        writers, self._writers = self._writers, set()
        for writer in writers:
            with contextlib.suppress(Exception):
                writer.transport.abort()
        return len(writers) // 2

    def pause(self) -> None:
        """Refuse new connections until :meth:`resume` (clients see the connection closed at once)."""
        self._accepting = False

    def resume(self) -> None:
        self._accepting = True

    async def _on_client(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        if not self._accepting:
            client_writer.transport.abort()
            return
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.transport.abort()
            return
        self.connections_made += 1
        self._writers |= {client_writer, server_writer}
        for reader, writer in ((client_reader, server_writer), (server_reader, client_writer)):
            task = asyncio.create_task(self._pipe(reader, writer))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()
