"""Putting definitions into a running RabbitMQ: its management API, ``rabbitmqctl``, or the quick path
of tests and the chaos run (:func:`grant`)."""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping

from deploy.definitions import Definitions, Installation, Permission


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
