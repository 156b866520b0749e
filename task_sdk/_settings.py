"""Settings of a task service, read from the environment and overridable by arguments."""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.broker_url import broker_user, check_ca_file, mask_url, split_urls, with_ca_file
from schemas.topology import Topology

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
#: The coordinator's broker user, as ``rc-admin-setup`` names it: the only sender of commands.
DEFAULT_COORDINATOR_USER = "rc-coordinator"

#: Environment variable -> (field, help text). The single source of the CLI help and of ``from_env``.
ENVIRONMENT: dict[str, tuple[str, str]] = {
    "RC_AMQP_URL": (
        "amqp_url",
        f"AMQP URL of the broker, or of each node of a cluster, comma-separated (default {DEFAULT_AMQP_URL})",
    ),
    "RC_NAMESPACE": ("namespace", "prefix of every exchange and queue name (default rc)"),
    "RC_TASK_CONCURRENCY": (
        "concurrency",
        "process() calls run at once; the consumer prefetch is the slots still free (default 4)",
    ),
    "RC_HEARTBEAT_SECONDS": (
        "heartbeat_seconds",
        "seconds between heartbeats and progress keepalives (default 5)",
    ),
    "RC_TASK_STATE_DIR": (
        "state_dir",
        "directory of a sqlite file remembering outcomes across restarts (default: in memory only)",
    ),
    "RC_TASK_HEALTH_FILE": (
        "health_file",
        "file rewritten at every heartbeat with this instance's health, for a container health check "
        "(python -m deploy.healthcheck task --health-file; default: none)",
    ),
    "RC_SHUTDOWN_TIMEOUT": (
        "shutdown_timeout",
        "seconds running steps may take to finish after SIGTERM/SIGINT (default 30)",
    ),
    "RC_BROKER_PUBLISH_TIMEOUT": (
        "publish_timeout",
        "seconds to wait for the broker to confirm a message (default 10)",
    ),
    "RC_AMQP_CA_FILE": (
        "amqp_ca_file",
        "CA bundle (PEM) to verify the broker's certificate with, for amqps:// URLs (default: system CAs)",
    ),
    "RC_RECONNECT_SECONDS": ("reconnect_seconds", "seconds between reconnection attempts (default 2)"),
    "RC_COORDINATOR_USER": (
        "coordinator_user",
        f"the coordinator's broker user; others' commands are refused (default {DEFAULT_COORDINATOR_USER})",
    ),
    "RC_TRUSTED_USERS": (
        "trusted_users",
        "comma-separated broker users whose commands are accepted too (development only, e.g. guest)",
    ),
}


@dataclass(frozen=True, slots=True, repr=False)
class Settings:
    """How a task service connects and behaves. ``Settings.from_env()`` reads ``RC_*`` variables.

    ``state_dir`` may be given as a ``str`` (it is stored as a :class:`~pathlib.Path`); the
    ``repr`` masks the URL's password, so logging a ``Settings`` never leaks it.
    """

    amqp_url: str = DEFAULT_AMQP_URL
    namespace: str = "rc"
    concurrency: int = 4
    heartbeat_seconds: float = 5.0
    state_dir: Path | None = None
    #: Rewritten at every heartbeat with this instance's own health (``task_sdk._health.write_health_file``).
    health_file: Path | None = None
    shutdown_timeout: float = 30.0
    publish_timeout: float = 10.0
    reconnect_seconds: float = 2.0
    amqp_ca_file: str | None = None
    coordinator_user: str = DEFAULT_COORDINATOR_USER
    #: Development only: broker users whose commands are accepted as the coordinator's.
    trusted_users: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name in ("state_dir", "health_file"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        split_urls(self.amqp_url)  # a clear error now rather than a connection retried forever
        if self.amqp_ca_file is not None:
            check_ca_file(self.amqp_ca_file)
        if not isinstance(self.trusted_users, frozenset):
            object.__setattr__(self, "trusted_users", frozenset(self.trusted_users))
        if not self.coordinator_user:
            raise ValueError("coordinator_user must not be empty")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {self.concurrency}")
        for name in ("heartbeat_seconds", "shutdown_timeout", "publish_timeout", "reconnect_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``environ`` (default ``os.environ``); ``overrides`` that are not None win."""
        values = read_environment(ENVIRONMENT, _CONVERTERS, environ)
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def connection_url(self) -> str:
        """The broker URL with ``amqp_ca_file`` passed to aio-pika (``amqps://...?cafile=``)."""
        return with_ca_file(self.amqp_url, self.amqp_ca_file)

    @property
    def topology(self) -> Topology:
        return Topology(self.namespace)

    @property
    def broker_user(self) -> str:
        """The user the connection logs in as: the ``user_id`` every message must carry."""
        return broker_user(self.amqp_url)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self.loggable().items())
        return f"{type(self).__name__}({fields})"

    def loggable(self) -> dict[str, object]:
        """The settings fit for a log line: the URL's password masked."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        values["amqp_url"] = mask_url(self.amqp_url)
        values["state_dir"] = str(self.state_dir) if self.state_dir else None
        values["health_file"] = str(self.health_file) if self.health_file else None
        values["trusted_users"] = sorted(self.trusted_users)
        return values

    def accepts_commands_from(self, user_id: str | None) -> bool:
        """Whether a command signed by broker user ``user_id`` may be acted on."""
        return user_id is not None and (user_id == self.coordinator_user or user_id in self.trusted_users)


_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "concurrency": int,
    "heartbeat_seconds": float,
    "shutdown_timeout": float,
    "publish_timeout": float,
    "reconnect_seconds": float,
    "state_dir": Path,
    "health_file": Path,
    "trusted_users": lambda raw: frozenset(user.strip() for user in raw.split(",") if user.strip()),
}


def read_environment(
    variables: Mapping[str, tuple[str, str]],
    converters: Mapping[str, Callable[[str], Any]],
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The fields set in ``environ`` (default ``os.environ``): for each of ``variables`` (variable ->
    (field, help text)) that is set and not blank, its field and its value converted by the field's
    converter (``str`` if it has none). A value that does not convert is a ``ValueError`` naming the
    variable. The task SDK's settings and the bridge's read their variables this way."""
    source = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for variable, (field, _) in variables.items():
        raw = source.get(variable, "").strip()
        if not raw:
            continue
        try:
            values[field] = converters.get(field, str)(raw)
        except ValueError:
            raise ValueError(f"{variable}={raw!r} is not a valid value for {field}") from None
    return values


def hostname() -> str:
    return socket.gethostname()
