"""Generate (and optionally apply) the RabbitMQ definitions of one Release Coordinator installation.

One virtual host, the whole broker topology (from :class:`schemas.topology.Topology`),
and one user per process with least-privilege permissions:

- one user per task service, named after the service (``search-index``),
- ``rc-coordinator`` for the coordinator,
- ``rc-operator`` for the ``rc`` command line,
- optionally one user per announcement listener (``--listener``).

Passwords never appear in the output in clear: each user gets a ``password_hash``
(``rabbit_password_hashing_sha256``). A password comes from, in this order: ``--password-file USER=PATH``,
the environment variable ``RC_PASSWORD_<USER>`` (upper case, ``-`` -> ``_``: ``RC_PASSWORD_SEARCH_INDEX``),
the file ``<secrets-dir>/<USER>``, or, with ``--generate``, a new random password written to
``<secrets-dir>/<USER>`` with mode 0600. Passwords are never printed.

Examples::

    rc-admin-setup portal search-index file-service --vhost rc --namespace rc \\
        --secrets-dir deploy/secrets --generate --output deploy/rabbitmq/definitions.json
    rc-admin-setup --services-file services.txt --apply --management-url http://127.0.0.1:15672
    rc-admin-setup portal --apply          # through ``rabbitmqctl import_definitions`` (stdin) on this host
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.placeholders import refuse_placeholder, refuse_placeholders_in
from schemas.topology import Topology, check_service_name

Definitions = dict[str, Any]

COORDINATOR_USER = "rc-coordinator"
OPERATOR_USER = "rc-operator"
PASSWORD_ENV_PREFIX = "RC_PASSWORD_"
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


def password_env(user: str) -> str:
    """The environment variable a user's password is read from: ``RC_PASSWORD_SEARCH_INDEX``."""
    return PASSWORD_ENV_PREFIX + user.upper().replace("-", "_").replace(".", "_")


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

        Control queues ``<ns>.control.<service>.<instance>`` (exclusive, no dead-lettering): configure
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


# ---------------------------------------------------------------------------------------------- passwords


def _read_secret(path: Path) -> str:
    text = path.read_text(encoding="utf-8").strip("\r\n")
    if not text:
        raise ValueError(f"empty password file {path}")
    return text


def _write_secret(path: Path, password: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(password + "\n")


def resolve_passwords(
    users: Iterable[str],
    *,
    password_files: Mapping[str, Path] | None = None,
    environ: Mapping[str, str] | None = None,
    secrets_dir: Path | None = None,
    generate: bool = False,
) -> dict[str, str]:
    """Find every user's password (see the module docstring for the order); raise ``ValueError`` if one lacks.

    With ``generate``, a user without a password gets a random one, stored in ``secrets_dir/<user>`` (0600).
    """
    password_files = password_files or {}
    environ = os.environ if environ is None else environ
    users = list(users)
    unknown = sorted(set(password_files) - set(users))
    if unknown:
        raise ValueError(f"--password-file for unknown users: {', '.join(unknown)}")
    if generate and secrets_dir is None:
        raise ValueError("generating passwords needs a secrets directory to write them to")
    found: dict[str, str] = {}
    missing: list[str] = []
    for user in users:
        if user in password_files:
            found[user] = _read_secret(password_files[user])
        elif environ.get(password_env(user)):
            found[user] = environ[password_env(user)]
        elif secrets_dir is not None and (secrets_dir / user).is_file():
            found[user] = _read_secret(secrets_dir / user)
        elif generate and secrets_dir is not None:
            found[user] = secrets.token_urlsafe(24)
            _write_secret(secrets_dir / user, found[user])
        else:
            missing.append(user)
    if missing:
        hints = ", ".join(f"{user} ({password_env(user)})" for user in missing)
        raise ValueError(f"no password for {hints}; use --password-file, the environment, or --generate")
    for user, password in found.items():
        refuse_placeholder(f"the password of {user} ({password_env(user)} or its file)", password)
    return found


def write_env_file(path: Path, passwords: Mapping[str, str]) -> None:
    """Set ``RC_PASSWORD_<USER>=...`` lines in ``path`` (mode 0600), e.g. the ``.env`` docker compose reads.

    Every other line of an existing file is kept as it is, and a password line already there is replaced
    where it stands; the file is replaced at once (written beside it, then renamed), so a crash leaves the
    old one whole."""
    wanted = {password_env(user): password for user, password in passwords.items()}
    kept: list[str] = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            name = line.split("=", 1)[0].strip()
            kept.append(f"{name}={wanted.pop(name)}" if name in wanted else line)
    lines = kept + [f"{name}={password}" for name, password in wanted.items()]
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write("".join(f"{line}\n" for line in lines))
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)


# ---------------------------------------------------------------------------------------------- applying


class ApplyError(RuntimeError):
    """The broker refused the definitions, or could not be reached."""


def apply_http(definitions: Definitions, management_url: str, user: str, password: str) -> None:
    """``POST /api/definitions`` on the management HTTP API (needs an ``administrator`` user)."""
    url = management_url.rstrip("/") + "/api/definitions"
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(
        url,
        data=json.dumps(definitions).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")[:500]
        raise ApplyError(f"{url} answered {error.code}: {detail}") from None
    except OSError as error:
        raise ApplyError(f"cannot reach {url}: {error}") from None


def apply_rabbitmqctl(definitions: Definitions, rabbitmqctl: str = "rabbitmqctl") -> None:
    """``rabbitmqctl import_definitions`` with the definitions on stdin (never in a file)."""
    try:
        done = subprocess.run(
            [rabbitmqctl, "import_definitions", "--format", "json"],
            input=json.dumps(definitions),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ApplyError(f"cannot run {rabbitmqctl}: {error}") from None
    if done.returncode != 0:
        raise ApplyError(
            f"{rabbitmqctl} import_definitions failed: {(done.stderr or done.stdout).strip()[:500]}"
        )


def grant(
    installation: Installation,
    passwords: Mapping[str, str],
    *,
    management_url: str | None = None,
    user: str = "guest",
    password: str = "guest",
    extra: Mapping[str, Permission] | None = None,
    topology: bool = True,
) -> None:
    """Create the users and permissions on a running broker, one small call each, then (``topology``) the
    exchanges and queues with their bindings, the services' queues included (a service may not create its
    own).

    Unlike a whole definitions import this creates no vhost, so it is quick even on a busy broker; the
    vhost must exist. ``extra`` adds users (present in ``passwords``) with those permissions.
    """
    _grant_permissions(installation, passwords, management_url, user, password, extra)
    if topology:
        definitions = topology_definitions(installation)
        if management_url is None:
            apply_rabbitmqctl(definitions)
        else:
            apply_http(definitions, management_url, user, password)


def topology_definitions(installation: Installation) -> Definitions:
    """The exchanges, queues and bindings of an installation alone, as a definitions document."""
    return {
        "exchanges": installation.exchanges(),
        "queues": installation.queues(),
        "bindings": installation.bindings(),
    }


def _grant_permissions(
    installation: Installation,
    passwords: Mapping[str, str],
    management_url: str | None,
    user: str,
    password: str,
    extra: Mapping[str, Permission] | None,
) -> None:
    permissions = {**installation.permissions(), **(extra or {})}
    vhost = installation.vhost
    for name, granted in permissions.items():
        _put_or_run(
            management_url,
            user,
            password,
            f"users/{_q(name)}",
            {"password": passwords[name], "tags": ""},
            ["add_user", name, passwords[name]],
        )
        _put_or_run(
            management_url,
            user,
            password,
            f"permissions/{_q(vhost)}/{_q(name)}",
            {"configure": granted.configure, "write": granted.write, "read": granted.read},
            ["set_permissions", "-p", vhost, name, granted.configure, granted.write, granted.read],
        )
    for name, topics in installation.topic_permissions().items():
        for topic in topics:
            _put_or_run(
                management_url,
                user,
                password,
                f"topic-permissions/{_q(vhost)}/{_q(name)}",
                {"exchange": topic.exchange, "write": topic.write, "read": topic.read},
                ["set_topic_permissions", "-p", vhost, name, topic.exchange, topic.write, topic.read],
            )


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _put_or_run(
    management_url: str | None, user: str, password: str, path: str, body: dict[str, str], command: list[str]
) -> None:
    if management_url is None:
        done = subprocess.run(
            ["rabbitmqctl", "-q", *command], capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            raise ApplyError(f"rabbitmqctl {command[0]} failed: {(done.stderr or done.stdout).strip()[:300]}")
        return
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(
        f"{management_url.rstrip('/')}/api/{path}",
        data=json.dumps(body).encode(),
        method="PUT",
        headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
    except urllib.error.HTTPError as error:
        raise ApplyError(f"PUT /api/{path.split('/')[0]} answered {error.code}") from None
    except OSError as error:
        raise ApplyError(f"cannot reach {management_url}: {error}") from None


def delete_installation(
    installation: Installation,
    *,
    management_url: str | None = None,
    user: str = "guest",
    password: str = "guest",
    rabbitmqctl: str = "rabbitmqctl",
) -> None:
    """Delete the vhost (with everything in it) and the users: the inverse of applying (tests, teardown)."""
    targets = [("vhosts", installation.vhost), *(("users", name) for name in installation.users())]
    for kind, name in targets:
        if management_url:
            url = f"{management_url.rstrip('/')}/api/{kind}/{urllib.parse.quote(name, safe='')}"
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            request = urllib.request.Request(
                url, method="DELETE", headers={"Authorization": f"Basic {token}"}
            )
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    response.read()
            except urllib.error.HTTPError as error:
                if error.code != 404:
                    raise ApplyError(f"DELETE {url} answered {error.code}") from None
        else:
            command = "delete_vhost" if kind == "vhosts" else "delete_user"
            subprocess.run([rabbitmqctl, command, name], capture_output=True, timeout=120, check=False)


# ---------------------------------------------------------------------------------------------- command line


def _parse_password_file(value: str) -> tuple[str, Path]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {value!r}")
    return name, Path(path)


def _read_services_file(path: Path) -> list[str]:
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line)
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rc-admin-setup",
        description="Generate or apply the RabbitMQ definitions (users, permissions, topology).",
        epilog=(
            "Passwords: --password-file USER=PATH, else $RC_PASSWORD_<USER> (e.g. RC_PASSWORD_SEARCH_INDEX), "
            "else <secrets-dir>/<USER>, else (with --generate) a random one written there (mode 0600). "
            "Passwords are never printed; the definitions carry only salted SHA-256 hashes."
        ),
    )
    parser.add_argument("services", nargs="*", help="task service names (one broker user each)")
    parser.add_argument("--services-file", type=Path, help="a file of service names, one a line (# comments)")
    parser.add_argument("--namespace", default=os.environ.get("RC_NAMESPACE", "rc"), help="default: rc")
    parser.add_argument("--vhost", default="rc", help="default: rc")
    parser.add_argument("--coordinator-user", default=COORDINATOR_USER)
    parser.add_argument("--operator-user", default=OPERATOR_USER)
    parser.add_argument("--listener", action="append", default=[], help="an announcement listener user")
    parser.add_argument("--admin-user", help="also a broker administrator (management UI), e.g. rc-admin")
    parser.add_argument(
        "--password-file", action="append", default=[], type=_parse_password_file, metavar="USER=PATH"
    )
    parser.add_argument(
        "--secrets-dir", type=Path, help="read <dir>/<user> password files; --generate writes them"
    )
    parser.add_argument(
        "--generate", action="store_true", help="generate missing passwords into --secrets-dir"
    )
    parser.add_argument("--env-file", type=Path, help="also write RC_PASSWORD_<USER>=... lines here (0600)")
    parser.add_argument(
        "--no-topology",
        action="store_true",
        help="users and permissions only (the services' queues must then come from a run without it)",
    )
    parser.add_argument(
        "--without-passwords",
        action="store_true",
        help="users without a password (nobody can log in as them): the repository's reference file",
    )
    parser.add_argument("--output", "-o", type=Path, help="write the definitions to this file ('-': stdout)")
    parser.add_argument("--apply", action="store_true", help="import the definitions into a running broker")
    parser.add_argument(
        "--management-url",
        help="apply through this management API (e.g. http://127.0.0.1:15672); default: rabbitmqctl",
    )
    parser.add_argument("--management-user", default=os.environ.get("RC_MANAGEMENT_USER", "guest"))
    parser.add_argument("--rabbitmqctl", default="rabbitmqctl", help="the rabbitmqctl executable")
    return parser


def _passwords(installation: Installation, args: argparse.Namespace) -> dict[str, str]:
    return resolve_passwords(
        installation.users(),
        password_files=dict(args.password_file),
        secrets_dir=args.secrets_dir,
        generate=args.generate,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    services = list(args.services)
    if args.services_file:
        services += _read_services_file(args.services_file)
    if not services:
        parser.error("name at least one task service (arguments or --services-file)")
    if not args.output and not args.apply:
        parser.error("say what to do: --output FILE and/or --apply")
    if args.without_passwords and args.apply:
        parser.error("--without-passwords makes the reference file; applied, it would remove every password")
    try:
        installation = Installation(
            services=tuple(dict.fromkeys(services)),
            namespace=args.namespace,
            vhost=args.vhost,
            coordinator_user=args.coordinator_user,
            operator_user=args.operator_user,
            listeners=tuple(args.listener),
            admin_user=args.admin_user,
        )
        refuse_placeholders_in(os.environ)
        passwords = None if args.without_passwords else _passwords(installation, args)
    except (ValueError, OSError) as error:
        print(f"rc-admin-setup: {error}", file=sys.stderr)
        return 2
    definitions = build_definitions(installation, passwords, topology=not args.no_topology)
    if args.env_file and passwords is not None:
        write_env_file(args.env_file, passwords)
    if args.output:
        text = dumps(definitions)
        if str(args.output) == "-":
            sys.stdout.write(text)
        else:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(text, encoding="utf-8")
            print(f"wrote {args.output} ({len(installation.users())} users, vhost {installation.vhost!r})")
    if args.apply:
        try:
            if args.management_url:
                management_password = os.environ.get("RC_MANAGEMENT_PASSWORD", "guest")
                apply_http(definitions, args.management_url, args.management_user, management_password)
            else:
                apply_rabbitmqctl(definitions, args.rabbitmqctl)
        except ApplyError as error:
            print(f"rc-admin-setup: {error}", file=sys.stderr)
            return 1
        print(
            f"applied to vhost {installation.vhost!r}: users {', '.join(installation.users())}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
