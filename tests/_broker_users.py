"""Broker users for tests that run as the least-privilege users of ``rc-admin-setup``: made through the
management API when it answers, else with the local ``rabbitmqctl``, and deleted afterwards."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

import pytest

from deploy.apply import grant
from deploy.definitions import Installation

MANAGEMENT_PORT = 15672


def with_credentials(url: str, user: str, password: str) -> str:
    """``url`` (scheme, host, port, path, query kept) logging in as ``user`` with ``password``."""
    parts = urllib.parse.urlsplit(url)
    netloc = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))


# ---------------------------------------------------------------------- broker users


@dataclass(frozen=True)
class BrokerAdmin:
    """How users are made and deleted: the management API if it answers, else the local ``rabbitmqctl``."""

    management_url: str | None
    user: str
    password: str

    @classmethod
    def for_url(cls, amqp_url: str) -> BrokerAdmin:
        parts = urllib.parse.urlsplit(amqp_url)
        user = urllib.parse.unquote(parts.username or "guest")
        password = urllib.parse.unquote(parts.password or "guest")
        management = (
            os.environ.get("RC_MANAGEMENT_URL") or f"http://{parts.hostname or '127.0.0.1'}:{MANAGEMENT_PORT}"
        )
        try:
            cls(management, user, password)._call("GET", "/api/overview")
            return cls(management, user, password)
        except (OSError, urllib.error.HTTPError):
            pass
        if parts.hostname in {"127.0.0.1", "localhost", "::1"} and shutil.which("rabbitmqctl"):
            return cls(None, user, password)
        pytest.fail(f"cannot create broker users: no management API at {management} and no rabbitmqctl")

    def _call(self, method: str, path: str) -> None:
        assert self.management_url is not None
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        request = urllib.request.Request(
            self.management_url.rstrip("/") + path, method=method, headers={"Authorization": f"Basic {token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def grant(self, installation: Installation, passwords: dict[str, str]) -> None:
        grant(
            installation,
            passwords,
            management_url=self.management_url,
            user=self.user,
            password=self.password,
        )

    def delete_user(self, name: str) -> None:
        if self.management_url is None:
            subprocess.run(
                ["rabbitmqctl", "-q", "delete_user", name], capture_output=True, timeout=60, check=False
            )
            return
        with contextlib.suppress(urllib.error.HTTPError):  # 404: never made
            self._call("DELETE", f"/api/users/{urllib.parse.quote(name, safe='')}")
