"""Issue 21, item 4: no known password is shipped.

``deploy/rabbitmq/definitions.json`` held hashes of the ``.env.example`` passwords (the administrator's
``change-me-admin`` too), so ``cp .env.example .env; docker compose up`` gave a broker everyone could log in
to. Now the repository's file holds no password, the compose file has ``rc-admin-setup`` generate the
definitions at deploy time, and ``rc-admin-setup`` refuses every example value with a one-line error.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.parse
import uuid
from pathlib import Path

import aio_pika
import pytest
import yaml

from deploy.apply import apply_http, delete_installation
from deploy.definitions import Installation, build_definitions, check_password

ROOT = Path(__file__).resolve().parents[2]
MANAGEMENT_URL = os.environ.get("RC_MANAGEMENT_URL", "http://127.0.0.1:15672")
#: A value `openssl rand -hex 24` could print.
REAL = "3f1c9a0be4d2775a61c08f93e2b4d1a07c5e9f3b2a6d8c41"


def example_environment() -> dict[str, str]:
    """The variables of .env.example, as `set -a; . ./.env` or docker compose would pass them."""
    found = {}
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        name, sep, value = line.partition("=")
        if sep and not name.startswith("#"):
            found[name.strip()] = value.strip()
    return found


def compose_setup_command() -> list[str]:
    """The command the compose file runs before the broker starts (``broker-definitions``)."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    command = compose["services"]["broker-definitions"]["command"]
    assert command[0] == "rc-admin-setup"
    return [str(part) for part in command[1:]]


async def admin_setup(arguments: list[str], environ: dict[str, str]) -> tuple[int, str]:
    """``rc-admin-setup ARGUMENTS`` in a process of its own: exit status and everything it printed."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("RC_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "deploy.setup",
        *arguments,
        env=clean | environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, (out + err).decode()


def test_the_repository_ships_no_password_hash() -> None:
    definitions = json.loads((ROOT / "deploy/rabbitmq/definitions.json").read_text(encoding="utf-8"))
    assert definitions["users"], "the reference file still lists the users and their permissions"
    examples = [value for value in example_environment().values() if value]
    known = [
        user["name"]
        for user in definitions["users"]
        if user["password_hash"] and any(check_password(value, user["password_hash"]) for value in examples)
    ]
    assert not known, f"users whose password is a public example: {known}"
    assert all(user["password_hash"] == "" for user in definitions["users"])


async def test_rc_admin_setup_refuses_every_example_value(tmp_path: Path) -> None:
    output = tmp_path / "definitions.json"
    arguments = [*compose_setup_command()[:-2], "--output", str(output)]
    examples = example_environment()
    status, printed = await admin_setup(arguments, examples)
    assert status == 2
    (line,) = printed.strip().splitlines()
    assert line.startswith("rc-admin-setup: RC_")
    assert "openssl rand -hex 24" in line
    assert "change-me-" not in line, "the value itself is not printed"
    assert not output.exists()
    # Every secret variable is checked, not only the broker users' passwords.
    real = {name: REAL for name in examples if name.startswith("RC_PASSWORD_")}
    for name in ("RC_MONGODB_PASSWORD", "RC_ERLANG_COOKIE", "RC_MONGODB_KEYFILE"):
        status, printed = await admin_setup(arguments, real | {name: examples[name]})
        assert status == 2, name
        assert name in printed
    password_file = tmp_path / "portal-password"
    password_file.write_text("changeme\n")
    status, printed = await admin_setup(
        ["portal", "--password-file", f"portal={password_file}", "--output", str(output)], real
    )
    assert status == 2
    assert "the password of portal" in printed


async def test_compose_generates_the_definitions_at_deploy_time(tmp_path: Path) -> None:
    """What ``broker-definitions`` does with a real ``.env``: hashes of exactly those passwords."""
    output = tmp_path / "definitions.json"
    arguments = [*compose_setup_command()[:-2], "--output", str(output)]
    passwords = {
        name: f"{REAL}-{name.lower()}" for name in example_environment() if name.startswith("RC_PASSWORD_")
    }
    status, printed = await admin_setup(arguments, passwords | {"RC_MONGODB_PASSWORD": REAL})
    assert status == 0, printed
    for user in json.loads(output.read_text(encoding="utf-8"))["users"]:
        variable = "RC_PASSWORD_" + user["name"].upper().replace("-", "_")
        assert check_password(passwords[variable], user["password_hash"]), user["name"]
    for password in passwords.values():
        assert password not in printed
    # The image runs it from /app, first on its path: every module of deploy/ must be there.
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "COPY deploy/*.py ./deploy/" in dockerfile


async def log_in(url: str) -> None:
    connection = await aio_pika.connect(url, timeout=10)
    await connection.close()


async def test_users_without_a_password_cannot_log_in(amqp_url: str) -> None:
    """On a real RabbitMQ: the users of a reference file (no password) accept neither an empty password nor
    an example one."""
    parts = urllib.parse.urlsplit(amqp_url)
    admin_user = urllib.parse.unquote(parts.username or "guest")
    admin_password = urllib.parse.unquote(parts.password or "guest")
    tag = uuid.uuid4().hex[:8]
    installation = Installation(
        services=(f"portal-{tag}",),
        namespace=f"rctest-{tag}",
        vhost=f"rctest-{tag}",
        coordinator_user=f"rc-coordinator-{tag}",
        operator_user=f"rc-operator-{tag}",
    )
    apply_http(build_definitions(installation, None), MANAGEMENT_URL, admin_user, admin_password)
    try:
        for user in installation.users():
            for password in ("", "change-me-portal", "guest"):
                url = f"amqp://{user}:{password}@{parts.hostname}:{parts.port or 5672}/{installation.vhost}"
                with pytest.raises(aio_pika.exceptions.ProbableAuthenticationError):
                    await log_in(url)
    finally:
        delete_installation(
            installation, management_url=MANAGEMENT_URL, user=admin_user, password=admin_password
        )
