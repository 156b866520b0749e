"""The definitions document of one installation: users, permissions and the whole topology.

Pure: what :mod:`deploy.setup` writes or applies, built from an :class:`Installation`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.topology import Topology, check_service_name

Definitions = dict[str, Any]

COORDINATOR_USER = "rc-coordinator"
OPERATOR_USER = "rc-operator"
HASHING_ALGORITHM = "rabbit_password_hashing_sha256"
#: Queues the broker names itself (``queue.declare`` with an empty name), e.g. aio-pika's exclusive queues.
SERVER_NAMED_QUEUES = r"amq\.gen-.*"
#: The default exchange: answering a request's ``reply_to`` publishes to it.
DEFAULT_EXCHANGE = r"amq\.default"
#: A regex that matches nothing: RabbitMQ reads an empty permission as "no access".
NOTHING = ""
#: A topic-permission regex that matches only the empty routing key, which no one uses.
NO_TOPIC = "^$"

_REGEX_SPECIALS = set("\\.^$|?*+()[]{}")


def regex_escape(text: str) -> str:
    """``text`` as a literal in a PCRE regex (RabbitMQ's regex flavour), leaving ``-`` readable."""
    return "".join(f"\\{char}" if char in _REGEX_SPECIALS else char for char in text)


def hash_password(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256``: base64(salt + sha256(salt + utf-8 password))."""
    salt = os.urandom(4) if salt is None else salt
    if len(salt) != 4:
        raise ValueError("RabbitMQ password salts are 4 bytes")
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def check_password(password: str, password_hash: str) -> bool:
    """Whether ``password_hash`` (as made by :func:`hash_password`) is the hash of ``password``."""
    raw = base64.b64decode(password_hash)
    return secrets.compare_digest(hash_password(password, raw[:4]), password_hash)


@dataclass(frozen=True, slots=True)
class Permission:
    """Basic permissions of one user on the vhost (regexes on resource names)."""

    configure: str
    write: str
    read: str


@dataclass(frozen=True, slots=True)
class TopicPermission:
    """Routing-key regexes of one user on one topic exchange (write: publish; read: bind)."""

    exchange: str
    write: str
    read: str


@dataclass(frozen=True, slots=True)
class Installation:
    """Everything the definitions are made from, except passwords."""

    services: tuple[str, ...]
    namespace: str = "rc"
    vhost: str = "rc"
    coordinator_user: str = COORDINATOR_USER
    operator_user: str = OPERATOR_USER
    listeners: tuple[str, ...] = ()
    #: An optional break-glass ``administrator`` (management UI, imports); full rights on the vhost.
    admin_user: str | None = None
    topology: Topology = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "topology", Topology(self.namespace))
        for name in (*self.services, *self.listeners):
            check_service_name(name)
        users = self.users()
        duplicates = sorted({user for user in users if users.count(user) > 1})
        if duplicates:
            raise ValueError(f"user names used twice: {', '.join(duplicates)}")
        if not self.namespace or not self.vhost:
            raise ValueError("namespace and vhost must not be empty")

    def users(self) -> list[str]:
        admin = [self.admin_user] if self.admin_user else []
        return [*self.services, self.coordinator_user, self.operator_user, *self.listeners, *admin]

    # ------------------------------------------------------------------ permissions

    def _ns(self, name: str) -> str:
        return regex_escape(name)

    def service_permission(self, service: str) -> Permission:
        """A task service: consume its own queue, publish replies; nothing it could break or aim. Each of its
        instances also declares, binds and consumes a control queue of its own (issue 19).

        No configure right on its queue: the service may not delete it or declare it again with other
        arguments (which would stop the coordinator's declare of it), so ``rc-admin-setup`` creates the queue
        and its binding (:meth:`queues`, :meth:`bindings`) and the SDK checks them passively, which needs no
        permission. No write on its queue (no binding to it) and none on the dead-letter exchange: it may
        neither publish dead letters nor bind anything to ``<ns>.dlx``; a command it refuses is rejected,
        and the queue's own dead-lettering (the broker's, not the service's) takes it to ``<ns>.dead``.
        Read on ``<ns>.commands`` only lets it bind from it, and its topic permission limits that to its
        own commands. RabbitMQ 3.10 checks: ``basic.consume`` read on the queue; ``basic.publish`` write
        on the exchange; ``queue.bind`` write on the queue and read on the exchange.

        Control queues ``<ns>.control.<service>.<instance>``, and ``.<n>`` after a reconnection while the
        broker still holds the lost connection's (exclusive, no dead-lettering): configure
        (declare), write (bind, to ``task.<service>.*`` keys only by the topic permission) and read (consume).
        """
        t = self.topology
        queue = self._ns(t.task_queue(service))
        control = f"{self._ns(self.namespace)}\\.control\\.{self._ns(service)}\\..+"
        return Permission(
            configure=f"^{control}$",
            write=f"^({control}|{self._ns(t.replies_exchange)})$",
            read=f"^({queue}|{control}|{self._ns(t.commands_exchange)})$",
        )

    def service_topic_permissions(self, service: str) -> list[TopicPermission]:
        """Publish replies only as ``reply.<service>.*``; bind only to ``task.<service>.*`` commands."""
        name = regex_escape(service)
        return [
            TopicPermission(self.topology.replies_exchange, write=f"^reply\\.{name}\\.", read=NO_TOPIC),
            TopicPermission(self.topology.commands_exchange, write=NO_TOPIC, read=f"^task\\.{name}\\."),
        ]

    def _private_queues(self, prefix: str) -> str:
        return f"{SERVER_NAMED_QUEUES}|{self._ns(self.namespace)}\\.{prefix}\\..*"

    def operator_permission(self) -> Permission:
        """The CLI: publish admin requests, own exclusive reply queues, bind them to the events exchange."""
        t = self.topology
        own = self._private_queues("cli")
        return Permission(
            configure=f"^({own})$",
            write=f"^({self._ns(t.admin_exchange)}|{own})$",
            read=f"^({self._ns(t.events_exchange)}|{own})$",
        )

    def listener_permission(self, listener: str) -> Permission:
        """An announcement listener: own queues (server-named or ``<ns>.listen.<name>.*``) bound to events."""
        own = f"{SERVER_NAMED_QUEUES}|{self._ns(self.namespace)}\\.listen\\.{regex_escape(listener)}(\\..*)?"
        return Permission(
            configure=f"^({own})$",
            write=f"^({own})$",
            read=f"^({self._ns(self.topology.events_exchange)}|{own})$",
        )

    def coordinator_permission(self) -> Permission:
        """Everything of the namespace, and the default exchange to answer operators' ``reply_to``."""
        ns = self._ns(self.namespace)
        return Permission(
            configure=f"^{ns}\\..*", write=f"^({ns}\\..*|{DEFAULT_EXCHANGE})$", read=f"^{ns}\\..*"
        )

    def permissions(self) -> dict[str, Permission]:
        granted = {service: self.service_permission(service) for service in self.services}
        granted[self.coordinator_user] = self.coordinator_permission()
        granted[self.operator_user] = self.operator_permission()
        granted.update({listener: self.listener_permission(listener) for listener in self.listeners})
        if self.admin_user:
            granted[self.admin_user] = Permission(configure=".*", write=".*", read=".*")
        return granted

    def topic_permissions(self) -> dict[str, list[TopicPermission]]:
        return {service: self.service_topic_permissions(service) for service in self.services}

    # ------------------------------------------------------------------ topology

    def exchanges(self) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "vhost": self.vhost,
                "type": kind,
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": {},
            }
            for name, kind in self.topology.exchanges().items()
        ]

    def queues(self) -> list[dict[str, Any]]:
        t = self.topology
        queues = [
            *((name, arguments) for name, (arguments, _, _) in t.coordinator_queues().items()),
            *((t.task_queue(service), t.task_queue_arguments()) for service in self.services),
        ]
        return [
            {"name": name, "vhost": self.vhost, "durable": True, "auto_delete": False, "arguments": arguments}
            for name, arguments in queues
        ]

    def bindings(self) -> list[dict[str, Any]]:
        t = self.topology
        pairs = [
            *((exchange, name, key) for name, (_, exchange, key) in t.coordinator_queues().items()),
            *((t.commands_exchange, t.task_queue(s), t.task_binding(s)) for s in self.services),
        ]
        return [
            {
                "source": source,
                "vhost": self.vhost,
                "destination": destination,
                "destination_type": "queue",
                "routing_key": key,
                "arguments": {},
            }
            for source, destination, key in pairs
        ]


def build_definitions(
    installation: Installation,
    passwords: Mapping[str, str] | None,
    *,
    topology: bool = True,
    salt: bytes | None = None,
) -> Definitions:
    """The definitions document (as ``rabbitmqctl import_definitions`` / ``POST /api/definitions`` take it).

    ``passwords`` maps every user of the installation to its password; only hashes are written. With
    None, users get no password at all (an empty hash: nobody can log in as them until a password is set),
    which is what the repository's reference file holds. ``salt`` fixes the salt of every hash (tests only:
    a random salt per user is the default).
    """
    missing = [user for user in installation.users() if passwords is not None and user not in passwords]
    if missing:
        raise ValueError(f"no password for: {', '.join(missing)}")
    vhost = installation.vhost
    users = [
        {
            "name": user,
            "password_hash": hash_password(passwords[user], salt) if passwords is not None else "",
            "hashing_algorithm": HASHING_ALGORITHM,
            "tags": ["administrator"] if user == installation.admin_user else [],
            "limits": {},
        }
        for user in installation.users()
    ]
    permissions = [
        {"user": user, "vhost": vhost, "configure": p.configure, "write": p.write, "read": p.read}
        for user, p in installation.permissions().items()
    ]
    topic_permissions = [
        {"user": user, "vhost": vhost, "exchange": p.exchange, "write": p.write, "read": p.read}
        for user, granted in installation.topic_permissions().items()
        for p in granted
    ]
    return {
        "users": users,
        "vhosts": [{"name": vhost}],
        "permissions": permissions,
        "topic_permissions": topic_permissions,
        "parameters": [],
        "global_parameters": [],
        # Quorum type, dead-lettering and delivery limits are queue arguments (Topology), so no policy.
        "policies": [],
        "exchanges": installation.exchanges() if topology else [],
        "queues": installation.queues() if topology else [],
        "bindings": installation.bindings() if topology else [],
    }


def dumps(definitions: Definitions) -> str:
    return json.dumps(definitions, indent=2) + "\n"
