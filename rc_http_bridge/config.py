"""The bridge's own settings (``RC_BRIDGE_*``), beside the SDK's ``RC_*`` settings."""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.broker_url import mask_url
from schemas.topology import check_service_name
from task_sdk._settings import read_environment

DEFAULT_LISTEN = "127.0.0.1:8780"

#: Environment variable -> (field, help text). The single source of ``--help`` and ``from_env``.
ENVIRONMENT: dict[str, tuple[str, str]] = {
    "RC_BRIDGE_SERVICE": ("service", "the task service name on the broker (required)"),
    "RC_BRIDGE_URL": ("url", "base URL of the HTTP task service, e.g. http://portal:8080 (required)"),
    "RC_BRIDGE_PUBLIC_URL": (
        "public_url",
        "base URL at which the HTTP service reaches the bridge's callback endpoints "
        "(default http://<this host>:<listen port>)",
    ),
    "RC_BRIDGE_LISTEN": ("listen", f"HOST:PORT the callback server listens on (default {DEFAULT_LISTEN})"),
    "RC_BRIDGE_POLL_SECONDS": (
        "poll_seconds",
        "seconds without a callback after which the bridge polls get_status (default 10)",
    ),
    "RC_BRIDGE_HTTP_TIMEOUT": ("http_timeout", "seconds any HTTP call to the service may take (default 10)"),
    "RC_BRIDGE_STALL_SECONDS": (
        "stall_seconds",
        "fail processing or publication when the service's state and progress have not changed "
        "for this long; 0 never (default 3600)",
    ),
    "RC_BRIDGE_OUTBOUND_TOKEN": (
        "token",
        "bearer token sent in the Authorization header of every call to the service (default none)",
    ),
    "RC_BRIDGE_TOKEN_FILE": ("token_file", "file holding the outbound token (instead of the variable)"),
    "RC_BRIDGE_CALLBACK_TOKEN": (
        "callback_token",
        "bearer token callbacks must carry, else 401 (default none: callbacks are not checked)",
    ),
    "RC_BRIDGE_CALLBACK_TOKEN_FILE": (
        "callback_token_file",
        "file holding the callback token (instead of the variable)",
    ),
    "RC_BRIDGE_INSECURE_CALLBACKS": (
        "insecure_callbacks",
        "1: accept callbacks without a token on an address other than the loopback (a warning at every "
        "start; development only)",
    ),
    "RC_BRIDGE_IDLE_TIMEOUT": (
        "idle_timeout",
        "seconds a callback connection may take to send a whole request, or stay idle between requests "
        "(default 15)",
    ),
    "RC_BRIDGE_MAX_CONNECTIONS": (
        "max_connections",
        "callback connections open at once; more are answered 503 and closed (default 64)",
    ),
}


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    """What the bridge stands in for and how it talks to it. ``BridgeConfig.from_env()`` reads
    ``RC_BRIDGE_*`` variables; tokens given as files are read by :meth:`from_env`."""

    service: str
    url: str
    public_url: str | None = None
    listen: str = DEFAULT_LISTEN
    poll_seconds: float = 10.0
    http_timeout: float = 10.0
    stall_seconds: float = 3600.0
    token: str | None = dataclasses.field(default=None, repr=False)
    callback_token: str | None = dataclasses.field(default=None, repr=False)
    insecure_callbacks: bool = False
    idle_timeout: float = 15.0
    max_connections: int = 64

    def __post_init__(self) -> None:
        check_service_name(self.service)
        object.__setattr__(self, "url", check_http_url(self.url, "url"))
        if self.public_url is not None:
            object.__setattr__(self, "public_url", check_http_url(self.public_url, "public_url"))
        for name in ("poll_seconds", "http_timeout", "idle_timeout", "max_connections"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        if self.stall_seconds < 0:
            raise ValueError(f"stall_seconds must be 0 (never) or positive, not {self.stall_seconds}")
        for name in ("token", "callback_token"):
            value = getattr(self, name)
            if value is not None and (not value or any(c.isspace() for c in value)):
                raise ValueError(f"{name} must be a non-empty string without whitespace")
        if self.token is not None and url_credentials(self.url) is not None:
            raise ValueError(
                f"url {mask_url(self.url)} carries a user and password, and an outbound token is set: both "
                "would be the Authorization header; give the HTTP service one of them"
            )
        self._check_callbacks_are_safe()

    def _check_callbacks_are_safe(self) -> None:
        """Callbacks move releases: off the loopback they need a token, unless explicitly insecure."""
        host, _ = split_listen(self.listen)
        if self.callback_token is None and not self.insecure_callbacks and not is_loopback(host):
            raise ValueError(
                f"listen {self.listen} is reachable from other machines, so callbacks there need a token: "
                "set RC_BRIDGE_CALLBACK_TOKEN (or --callback-token-file), listen on 127.0.0.1, or accept "
                "unauthenticated callbacks with --insecure-callbacks (development only)"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> BridgeConfig:
        """Settings from ``environ`` (default ``os.environ``); ``overrides`` that are not None win.

        ``token_file``/``callback_token_file`` (variable or override) are read and stripped; a
        token given directly wins over a file given at the same level (override over variable).
        """
        from_environment = read_environment(ENVIRONMENT, _CONVERTERS, environ)
        given = {key: value for key, value in overrides.items() if value is not None}
        values = _resolve_tokens(from_environment) | _resolve_tokens(given)
        for required in ("service", "url"):
            if required not in values:
                variable = next(v for v, (f, _) in ENVIRONMENT.items() if f == required)
                raise ValueError(f"--{required} (or {variable}) is required")
        return cls(**values)

    def replace(self, **changes: Any) -> BridgeConfig:
        return dataclasses.replace(self, **changes)

    @property
    def listen_address(self) -> tuple[str, int]:
        return split_listen(self.listen)

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self.loggable().items())
        return f"BridgeConfig({shown})"

    def loggable(self) -> dict[str, object]:
        """The settings fit for a log line: tokens replaced by whether they are set, URLs masked."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        values["token"] = "***" if self.token else None
        values["callback_token"] = "***" if self.callback_token else None
        values["url"] = mask_url(self.url)
        values["public_url"] = mask_url(self.public_url) if self.public_url else None
        return values


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "poll_seconds": float,
    "http_timeout": float,
    "stall_seconds": float,
    "idle_timeout": float,
    "max_connections": int,
    "insecure_callbacks": _flag,
}


def _resolve_tokens(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with each ``*_file`` replaced by the token it holds (a token given directly wins)."""
    resolved = dict(values)
    for token, file in (("token", "token_file"), ("callback_token", "callback_token_file")):
        path = resolved.pop(file, None)
        if path is not None and resolved.get(token) is None:
            resolved[token] = read_token(Path(path))
    return resolved


def read_token(path: Path) -> str:
    """The token in ``path`` (surrounding whitespace removed); ``ValueError`` if unreadable or empty."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ValueError(f"cannot read the token file {path}: {error.strerror or error}") from None
    if not token:
        raise ValueError(f"the token file {path} is empty")
    return token


def check_http_url(url: str, name: str) -> str:
    """``url`` without a trailing slash if it is an http(s) URL with a host; ``ValueError`` (the URL's
    password masked) otherwise."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
        _ = parts.port  # a port that is not a number raises ValueError
    except ValueError:
        raise ValueError(f"{name} is not a valid URL: {mask_url(url)!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name} must be an http:// or https:// URL with a host, not {mask_url(url)!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"{name} must not have a query or fragment: {mask_url(url)!r}")
    return url.strip().rstrip("/")


def url_credentials(url: str) -> tuple[str, str] | None:
    """The (user, password) an http(s) URL carries, decoded; None if it carries none."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return None
    return urllib.parse.unquote(parts.username or ""), urllib.parse.unquote(parts.password or "")


def without_credentials(url: str) -> str:
    """``url`` without its ``user:password@``: what may appear in requests' descriptions and reasons."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=host))


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable only from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to any interface


def split_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as a (host, port) pair; port 0 picks a free one."""
    host, sep, port = listen.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"listen must be HOST:PORT, not {listen!r}")
    return host, int(port)


def default_public_url(host: str, port: int) -> str:
    """Where services reach a server listening on ``host:port`` (this host's name for a wildcard)."""
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"
