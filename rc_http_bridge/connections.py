"""Limits on the callback server's connections, so that no client can hold it.

* **A deadline per connection.** A connection must send a whole request within ``idle_timeout`` of
  opening, and the next one within ``idle_timeout`` of the last answer; else it is closed. That covers
  connections that never send anything, that send their headers a byte at a time, and idle keep-alive
  connections. (Reading a request's body has its own deadline, in the handler.)
* **A connection limit.** Beyond ``limit`` open connections, a new one is answered ``503`` and closed.

aiohttp does not offer either on every version the bridge supports, so :class:`Connections` wraps the
protocol aiohttp makes for each connection, and learns from a middleware when a request starts and ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

log = structlog.get_logger("rc_http_bridge")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: What a connection beyond the limit is told before it is closed.
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: application/json\r\n"
    b'Content-Length: 38\r\n\r\n{"error": "too many open connections"}'
)


class Connections:
    """The open connections of one callback server; see the module's docstring."""

    def __init__(self, *, limit: int, idle_timeout: float) -> None:
        self.limit = limit
        self.idle_timeout = idle_timeout
        self._open: dict[asyncio.BaseTransport, _Guarded] = {}
        self._refusing = False

    @property
    def open(self) -> int:
        """How many connections are open (refused ones not counted)."""
        return len(self._open)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Marks the connection busy while a request is handled (its deadline then waits)."""
        guarded = self._open.get(request.transport) if request.transport is not None else None
        if guarded is not None:
            guarded.busy += 1
        try:
            return await handler(request)
        finally:
            if guarded is not None:
                guarded.request_done()

    def site(self, runner: web.BaseRunner, host: str, port: int) -> web.BaseSite:
        """A TCP site of ``runner`` on ``host:port`` whose connections these limits guard."""
        return _GuardedSite(runner, host, port, self)

    def _admit(self, transport: asyncio.BaseTransport, guarded: _Guarded) -> bool:
        if len(self._open) >= self.limit:
            if not self._refusing:  # once per spell of refusals: a flood must not flood the log
                log.warning("callback.refused", reason="too many open connections", limit=self.limit)
            self._refusing = True
            return False
        self._refusing = False
        self._open[transport] = guarded
        return True

    def _forget(self, transport: asyncio.BaseTransport) -> None:
        self._open.pop(transport, None)


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the limit and the deadline."""

    def __init__(self, owner: Connections, inner: asyncio.Protocol) -> None:
        self._owner = owner
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._admitted = False
        self._last = 0.0
        self.busy = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if not self._owner._admit(transport, self):
            transport.write(REFUSAL)
            transport.close()
            return
        self._admitted = True
        self._last = asyncio.get_running_loop().time()
        self._arm(self._last + self._owner.idle_timeout)
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return
        if self._timer is not None:
            self._timer.cancel()
        assert self._transport is not None
        self._owner._forget(self._transport)
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._admitted:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._admitted else None

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def request_done(self) -> None:
        self.busy -= 1
        self._last = asyncio.get_running_loop().time()

    def _arm(self, when: float) -> None:
        self._timer = asyncio.get_running_loop().call_at(when, self._expire)

    def _expire(self) -> None:
        """No whole request within the deadline (and none being handled): close the connection."""
        self._timer = None
        now = asyncio.get_running_loop().time()
        deadline = self._last + self._owner.idle_timeout
        if self.busy:
            self._arm(now + self._owner.idle_timeout)
        elif now < deadline:
            self._arm(deadline)
        elif self._transport is not None and not self._transport.is_closing():
            log.info("callback.connection_closed", reason=f"no request within {self._owner.idle_timeout:g} s")
            self._transport.close()


class _GuardedSite(web.BaseSite):
    """A TCP site whose connections go through :class:`_Guarded`."""

    __slots__ = ("_host", "_owner", "_port")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, owner: Connections) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._owner = owner

    @property
    def name(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        owner = self._owner

        def protocol() -> asyncio.Protocol:
            return _Guarded(owner, server())

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(protocol, self._host, self._port, reuse_address=True)
