"""Coordinator settings, read from the environment (each documented in ``rc-coordinator --help``)."""

from __future__ import annotations

import asyncio
import math
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from coordinator.machine import Timeouts
from coordinator.store import check_store_url, default_data_dir, default_store_url
from schemas.broker_url import check_ca_file, split_urls, with_ca_file

#: name -> (default, help). The single source of the documentation printed by ``--help``.
SETTINGS: dict[str, tuple[str, str]] = {
    "RC_AMQP_URL": (
        "amqp://guest:guest@127.0.0.1:5672/",
        "RabbitMQ URL (amqp:// or amqps://); a cluster's nodes as several URLs separated by commas.",
    ),
    "RC_AMQP_CA_FILE": ("", "CA bundle to verify the broker's certificate with amqps://."),
    "RC_STORE_URL": (
        "",
        "Where releases are kept: sqlite:///PATH (one machine) or mongodb://... (several machines). "
        "Unset: RC_MONGODB_URL if set, else the SQLite file <RC_DATA_DIR>/<RC_NAMESPACE>.db.",
    ),
    "RC_DATA_DIR": (str(default_data_dir()), "Folder of the default SQLite store."),
    "RC_MONGODB_URL": ("", "MongoDB URL: the same as RC_STORE_URL=mongodb://... (both may not differ)."),
    "RC_MONGODB_DATABASE": ("", "MongoDB database name (default: the namespace)."),
    "RC_NAMESPACE": ("rc", "Prefix of every exchange and queue name; isolates installations on one broker."),
    "RC_INITIALIZE_TIMEOUT": ("60", "Seconds every service has to accept or reject a new release."),
    "RC_PROCESS_TIMEOUT": ("600", "Seconds a processing service may stay silent (progress keeps it alive)."),
    "RC_PUBLISH_TIMEOUT": ("300", "Seconds every service has to report its data public."),
    "RC_CANCEL_TIMEOUT": (
        "120",
        "Seconds services have to confirm a cancel before the release is canceled anyway.",
    ),
    "RC_HEARTBEAT_TIMEOUT": ("30", "A service whose last heartbeat is older than this is unhealthy."),
    "RC_RETRY_BACKOFF": (
        "5",
        "Seconds before start is sent again when the instance processing it stopped; doubled at each "
        "further attempt (0: at once).",
    ),
    "RC_TRUSTED_USERS": (
        "",
        "Comma-separated broker users allowed to answer for any service (development only).",
    ),
    "RC_PREFETCH": (
        "512",
        "Unacknowledged deliveries the coordinator takes at once (the replies waiting for one release "
        "are stored with one write).",
    ),
    "RC_REPLY_WRITE_DELAY": (
        "0.05",
        "Seconds a reply that leaves its release in its step may wait to be stored together with the "
        "replies after it (one durable write for a step); it is acknowledged only once stored (0: each "
        "reply is stored at once).",
    ),
    "RC_BROKER_PUBLISH_TIMEOUT": ("10", "Seconds to wait for the broker to confirm a publication."),
    "RC_METRICS_PORT": ("9464", "Port of the Prometheus /metrics endpoint (0 disables it)."),
    "RC_METRICS_ADDRESS": (
        "127.0.0.1",
        "Address the /metrics endpoint listens on (0.0.0.0: every interface, e.g. inside a container).",
    ),
    "RC_LOG_LEVEL": ("info", "debug, info, warning or error."),
    "RC_EVENT_LOOP": ("asyncio", "The coordinator's event loop: asyncio (the standard library's) or uvloop."),
}

#: The values of ``RC_EVENT_LOOP``.
EVENT_LOOPS = ("asyncio", "uvloop")


@dataclass(frozen=True, slots=True)
class Settings:
    amqp_url: str = SETTINGS["RC_AMQP_URL"][0]
    amqp_ca_file: str | None = None
    #: ``sqlite:///PATH`` or ``mongodb://...``; None: the SQLite file of the namespace in ``data_dir``.
    store_url: str | None = None
    data_dir: Path | None = None
    mongodb_database: str | None = None
    namespace: str = "rc"
    timeouts: Timeouts = field(default_factory=Timeouts)
    heartbeat_timeout: timedelta = timedelta(seconds=30)
    trusted_users: frozenset[str] = frozenset()
    prefetch: int = 512
    reply_write_delay: float = 0.05
    broker_publish_timeout: float = 10.0
    metrics_port: int = 9464
    metrics_address: str = "127.0.0.1"
    log_level: str = "info"
    event_loop: str = SETTINGS["RC_EVENT_LOOP"][0]
    instance: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")

    @property
    def store(self) -> str:
        """The store URL this coordinator uses."""
        return self.store_url or default_store_url(self.namespace, self.data_dir)

    @property
    def database(self) -> str:
        return self.mongodb_database or self.namespace.replace("-", "_").replace(".", "_")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        source = os.environ if env is None else env

        def get(name: str) -> str:
            return source.get(name, SETTINGS[name][0]).strip()

        def seconds(name: str, *, zero: bool = False) -> timedelta:
            value = get(name)
            try:
                parsed = float(value)
            except ValueError:
                raise ValueError(f"{name} must be a number of seconds, not {value!r}") from None
            if not math.isfinite(parsed) or parsed < 0 or (parsed == 0 and not zero):
                raise ValueError(f"{name} must be {'0 or more' if zero else 'positive'}, not {value!r}")
            return timedelta(seconds=parsed)

        def integer(name: str) -> int:
            value = get(name)
            if not value.isdigit():
                raise ValueError(f"{name} must be a whole number, not {value!r}")
            return int(value)

        ca_file = get("RC_AMQP_CA_FILE")
        amqp_url = get("RC_AMQP_URL")
        split_urls(amqp_url)  # a clear error now rather than a connection retried forever
        store_url = get("RC_STORE_URL") or None
        mongodb_url = get("RC_MONGODB_URL") or None
        if store_url and mongodb_url and store_url != mongodb_url:
            raise ValueError("RC_STORE_URL and RC_MONGODB_URL name different stores: set only RC_STORE_URL")
        store_url = store_url or mongodb_url
        return cls(
            amqp_url=amqp_url,
            amqp_ca_file=check_ca_file(ca_file) if ca_file else None,
            store_url=check_store_url(store_url) if store_url else None,
            data_dir=Path(get("RC_DATA_DIR")).expanduser(),
            mongodb_database=get("RC_MONGODB_DATABASE") or None,
            namespace=get("RC_NAMESPACE"),
            timeouts=Timeouts(
                initialize=seconds("RC_INITIALIZE_TIMEOUT"),
                process=seconds("RC_PROCESS_TIMEOUT"),
                publish=seconds("RC_PUBLISH_TIMEOUT"),
                cancel=seconds("RC_CANCEL_TIMEOUT"),
                retry=seconds("RC_RETRY_BACKOFF", zero=True),
            ),
            heartbeat_timeout=seconds("RC_HEARTBEAT_TIMEOUT"),
            trusted_users=frozenset(u.strip() for u in get("RC_TRUSTED_USERS").split(",") if u.strip()),
            prefetch=integer("RC_PREFETCH"),
            reply_write_delay=seconds("RC_REPLY_WRITE_DELAY", zero=True).total_seconds(),
            broker_publish_timeout=seconds("RC_BROKER_PUBLISH_TIMEOUT").total_seconds(),
            metrics_port=integer("RC_METRICS_PORT"),
            metrics_address=get("RC_METRICS_ADDRESS") or SETTINGS["RC_METRICS_ADDRESS"][0],
            log_level=get("RC_LOG_LEVEL").lower(),
            event_loop=event_loop(get("RC_EVENT_LOOP")),
        )

    def amqp_url_with_tls(self) -> str:
        """The broker URL (each of them) with the CA file passed to aio-pika (``amqps://...?cafile=``)."""
        return with_ca_file(self.amqp_url, self.amqp_ca_file)


def event_loop(value: str) -> str:
    """``RC_EVENT_LOOP``, checked: one of :data:`EVENT_LOOPS` (any case)."""
    name = value.lower() or SETTINGS["RC_EVENT_LOOP"][0]
    if name not in EVENT_LOOPS:
        raise ValueError(f"RC_EVENT_LOOP must be {' or '.join(EVENT_LOOPS)}, not {value!r}")
    return name


def running_event_loop() -> str:
    """The running event loop, named as ``RC_EVENT_LOOP`` names it (its class's top-level package)."""
    return type(asyncio.get_running_loop()).__module__.split(".")[0]
