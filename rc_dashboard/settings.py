"""The dashboard's settings: environment variables, each overridden by the command-line option named alike.

=============================  ===================  =========================================================
variable                       option               meaning
=============================  ===================  =========================================================
``RC_AMQP_URL``                ``--amqp-url``       broker URL (an operator user, e.g. ``rc-operator``)
``RC_NAMESPACE``               ``--namespace``      installation namespace
``RC_TIMEOUT``                 ``--timeout``        seconds to wait for the coordinator's answer
``RC_DASHBOARD_LISTEN``        ``--listen``         ``HOST:PORT`` to serve on (default ``127.0.0.1:8780``)
``RC_DASHBOARD_TOKEN``         (none)               the operator token; unset: read-only
``RC_DASHBOARD_OPERATOR``      ``--operator``       the operator name actions are recorded under
``RC_DASHBOARD_POLL_SECONDS``  ``--poll-seconds``   how often open releases are re-read
``RC_DASHBOARD_PUBLIC_URL``    ``--public-url``     the URL browsers open (behind a TLS proxy): forms must
                                                    come from its origin; ``https``: Secure session cookie
``RC_HEARTBEAT_TIMEOUT``       ``--heartbeat-       seconds without a heartbeat after which the services page
                               timeout``            calls a service silent (the coordinator's setting)
``RC_RECONNECT_SECONDS``       (none)               seconds between attempts to reach the broker again
``RC_TRUSTED_USERS``           (none)               broker users whose progress reports for any service are
                                                    shown as they arrive (the coordinator's setting)
=============================  ===================  =========================================================

The token is deliberately not an option: a command line is visible to every local user.
"""

from __future__ import annotations

import math
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from rc_cli.client import DEFAULT_AMQP_URL, DEFAULT_NAMESPACE, DEFAULT_TIMEOUT
from schemas.broker_url import split_urls
from schemas.listen import split_listen

DEFAULT_LISTEN = "127.0.0.1:8780"
DEFAULT_OPERATOR = "dashboard"
DEFAULT_POLL_SECONDS = 1.0
DEFAULT_RECONNECT_SECONDS = 2.0
#: The coordinator's default ``RC_HEARTBEAT_TIMEOUT``.
DEFAULT_HEARTBEAT_TIMEOUT = 30.0
#: The shortest token accepted: a token is a password and must not be guessable.
MIN_TOKEN_LENGTH = 16

ENVIRONMENT: dict[str, str] = {
    "RC_AMQP_URL": "broker URL (an operator user, e.g. rc-operator), or a cluster's nodes comma-separated",
    "RC_NAMESPACE": f"installation namespace (default {DEFAULT_NAMESPACE})",
    "RC_TIMEOUT": f"seconds to wait for the coordinator's answer (default {DEFAULT_TIMEOUT:g})",
    "RC_DASHBOARD_LISTEN": f"HOST:PORT to serve on (default {DEFAULT_LISTEN})",
    "RC_DASHBOARD_TOKEN": f"operator token (at least {MIN_TOKEN_LENGTH} characters); unset: read-only",
    "RC_DASHBOARD_OPERATOR": f"operator name recorded for actions (default {DEFAULT_OPERATOR})",
    "RC_DASHBOARD_POLL_SECONDS": f"seconds between re-reads of open releases ({DEFAULT_POLL_SECONDS:g})",
    "RC_DASHBOARD_PUBLIC_URL": "the URL browsers open it at, behind a TLS proxy (e.g. https://dash.example.org)",
    "RC_HEARTBEAT_TIMEOUT": "seconds without a heartbeat before a service shows as silent "
    f"({DEFAULT_HEARTBEAT_TIMEOUT:g}; set it as for the coordinator)",
    "RC_RECONNECT_SECONDS": f"seconds between attempts to reach the broker ({DEFAULT_RECONNECT_SECONDS:g})",
    "RC_TRUSTED_USERS": "broker users that may report progress for any service (as the coordinator's)",
}


def origin_of(url: str) -> str:
    """The origin (``scheme://host[:port]``, as a browser sends it in ``Origin``) of a public URL.

    The URL must be ``http`` or ``https``, name a host, and have no user, path (beyond ``/``), query or
    fragment: it says where the dashboard is, nothing more.
    """
    example = "(e.g. https://dash.example.org)"
    try:
        parts = urllib.parse.urlsplit(url.strip())
        port = parts.port
    except ValueError as error:
        raise ValueError(f"the public URL {url!r} cannot be read: {error}") from None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in ("http", "https"):
        raise ValueError(f"the public URL must start with https:// or http:// {example}, not {url!r}")
    if not host:
        raise ValueError(f"the public URL must name a host {example}, not {url!r}")
    if not host.isascii():
        raise ValueError(f"the public URL's host must be written in ASCII (xn-- form), not {host!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the public URL must not carry a user or password")
    if parts.path not in ("", "/") or parts.query or parts.fragment or url.strip().endswith(("?", "#")):
        raise ValueError(f"the public URL must have no path, query or fragment {example}, not {url!r}")
    if port == 0:
        raise ValueError(f"the public URL's port must be 1 to 65535, not {url!r}")
    default_port = 443 if scheme == "https" else 80
    shown_host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown_host}" + (f":{port}" if port not in (None, default_port) else "")


def _positive(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, not {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, not {raw!r}")
    return value


@dataclass(frozen=True)
class DashboardSettings:
    amqp_url: str = DEFAULT_AMQP_URL
    namespace: str = DEFAULT_NAMESPACE
    timeout: float = DEFAULT_TIMEOUT
    listen: str = DEFAULT_LISTEN
    #: The operator token; ``None`` makes the dashboard read-only.
    token: str | None = None
    operator: str = DEFAULT_OPERATOR
    poll_seconds: float = DEFAULT_POLL_SECONDS
    reconnect_seconds: float = DEFAULT_RECONNECT_SECONDS
    #: A service whose last heartbeat is older shows as silent (the coordinator's ``RC_HEARTBEAT_TIMEOUT``).
    heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT
    #: Releases per page of the releases list, events per page of the audit trail.
    page_size: int = 25
    #: Broker users whose progress reports for any service are shown before the coordinator stored them.
    trusted_users: frozenset[str] = frozenset()
    #: Where browsers open the dashboard (behind a TLS-terminating proxy); ``None``: where it listens.
    public_url: str | None = None

    def __post_init__(self) -> None:
        split_urls(self.amqp_url)  # one URL, or a cluster's nodes comma-separated: a clear error now
        split_listen(self.listen, DEFAULT_LISTEN)
        if self.public_url is not None:
            origin_of(self.public_url)
        if not self.namespace.strip():
            raise ValueError("the namespace must not be empty")
        if self.token is not None and len(self.token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"RC_DASHBOARD_TOKEN must have at least {MIN_TOKEN_LENGTH} characters")
        if not 1 <= len(self.operator.strip()) <= 200:
            raise ValueError("the operator name must have 1 to 200 characters")
        for name in ("timeout", "poll_seconds", "reconnect_seconds", "heartbeat_timeout"):
            _positive(name, str(getattr(self, name)))

    @property
    def listen_address(self) -> tuple[str, int]:
        return split_listen(self.listen, DEFAULT_LISTEN)

    @property
    def read_only(self) -> bool:
        return self.token is None

    @property
    def public_origin(self) -> str | None:
        """The only origin forms may come from, if the public URL is set (else the request's own)."""
        return origin_of(self.public_url) if self.public_url is not None else None

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **options: str | float | None
    ) -> DashboardSettings:
        """Settings from ``environ`` (default ``os.environ``), each overridden by a non-``None`` option."""
        env = os.environ if environ is None else environ

        def pick(option: str, variable: str) -> str | None:
            given = options.get(option)
            if given is not None:
                return str(given)
            value = env.get(variable, "").strip()
            return value or None

        values: dict[str, object] = {}
        for field, variable in (
            ("amqp_url", "RC_AMQP_URL"),
            ("namespace", "RC_NAMESPACE"),
            ("listen", "RC_DASHBOARD_LISTEN"),
            ("operator", "RC_DASHBOARD_OPERATOR"),
            ("public_url", "RC_DASHBOARD_PUBLIC_URL"),
        ):
            if (text := pick(field, variable)) is not None:
                values[field] = text
        for field, variable in (
            ("timeout", "RC_TIMEOUT"),
            ("poll_seconds", "RC_DASHBOARD_POLL_SECONDS"),
            ("reconnect_seconds", "RC_RECONNECT_SECONDS"),
            ("heartbeat_timeout", "RC_HEARTBEAT_TIMEOUT"),
        ):
            if (text := pick(field, variable)) is not None:
                values[field] = _positive(variable, text)
        token = env.get("RC_DASHBOARD_TOKEN", "")
        values["token"] = token if token else None
        trusted = env.get("RC_TRUSTED_USERS", "")
        values["trusted_users"] = frozenset(user.strip() for user in trusted.split(",") if user.strip())
        return cls(**values)  # type: ignore[arg-type]
