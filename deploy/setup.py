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
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from deploy.apply import ApplyError, apply_http, apply_rabbitmqctl
from deploy.definitions import COORDINATOR_USER, OPERATOR_USER, Installation, build_definitions, dumps
from deploy.passwords import resolve_passwords, write_env_file
from deploy.placeholders import refuse_placeholders_in


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
