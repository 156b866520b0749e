"""Calls to the HTTP task service: ``POST /tasks`` and ``GET /status``, each with a timeout and the token."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import aiohttp

from rc_http_bridge.config import url_credentials, without_credentials
from rc_http_bridge.protocol import clip

#: Bodies larger than this are cut before they are read further (the protocol's bodies are tiny).
MAX_ANSWER_BYTES = 1024 * 1024
USER_AGENT = "rc-http-bridge"


class ServiceUnreachable(Exception):
    """No HTTP answer: connection refused or reset, DNS failure, TLS error, or the timeout passed."""


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer: status and body text (decoded leniently)."""

    request: str
    status: int
    text: str

    @property
    def ok(self) -> bool:
        return self.status == 200

    def describe(self) -> str:
        """``POST http://svc/tasks (start) answered HTTP 500: <body>``."""
        body = clip(self.text, 500)
        return f"{self.request} answered HTTP {self.status}" + (
            f": {body}" if body else " with an empty body"
        )


def basic_authorization(user: str, password: str) -> str:
    """The ``Authorization`` header of HTTP basic authentication (RFC 7617, UTF-8)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


class HttpTaskService:
    """One HTTP task service, reached through a shared :class:`aiohttp.ClientSession`.

    A ``user:password@`` in ``url`` becomes HTTP basic authentication; :attr:`url`, which every request's
    description (and so every error and reason) quotes, is the URL without it.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        timeout: float,
        token: str | None = None,
        public_url: str | None = None,
    ) -> None:
        credentials = url_credentials(url)
        if credentials is not None and token:
            raise ValueError("give the HTTP service either URL credentials or a token, not both")
        self.url = without_credentials(url)
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._seconds = timeout
        self._headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        elif credentials is not None:
            self._headers["Authorization"] = basic_authorization(*credentials)
        if public_url:
            # Not part of the protocol; tells a service that wants it where the callbacks are.
            self._headers["X-Release-Coordinator-Url"] = public_url

    async def task(self, action: str, task_id: str, release_id: str, studies: tuple[str, ...]) -> Answer:
        """``POST {url}/tasks`` with ``{action, task_id, release_id, studies}``."""
        body = {"action": action, "task_id": task_id, "release_id": release_id, "studies": list(studies)}
        return await self._call("POST", "/tasks", f"POST {self.url}/tasks ({action})", body)

    async def status(self) -> Answer:
        """``GET {url}/status``."""
        return await self._call("GET", "/status", f"GET {self.url}/status", None)

    async def _call(self, method: str, path: str, request: str, body: object | None) -> Answer:
        try:
            async with self._session.request(
                method,
                self.url + path,
                json=body,
                headers=self._headers,
                timeout=self._timeout,
            ) as response:
                raw = await response.content.read(MAX_ANSWER_BYTES)
                charset = response.charset or "utf-8"
                try:
                    text = raw.decode(charset, errors="replace")
                except LookupError:
                    text = raw.decode("utf-8", errors="replace")
                return Answer(request, response.status, text)
        except TimeoutError:
            raise ServiceUnreachable(f"{request} got no answer within {self._seconds:g} s") from None
        except (aiohttp.ClientError, OSError) as error:
            detail = clip(str(error), 300) or type(error).__name__
            raise ServiceUnreachable(f"{request} failed: {type(error).__name__}: {detail}") from None
