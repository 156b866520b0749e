"""Issue 21 item 8 and issue 16 item 8: a task service says at start, as a warning, when it trusts other
broker users with commands (``RC_TRUSTED_USERS``, a development switch), and when its own broker user is
not named after it (the coordinator would refuse its replies), unless that user is an explicitly trusted
development one. On its own ``rc-admin-setup`` user, with no trusted users, it says neither."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import pytest
from structlog.testing import capture_logs

from task_sdk import Runner, Settings
from task_sdk._amqp import AmqpTransport
from tests.security.conftest import Installed, recorder

pytestmark = pytest.mark.integration


async def _warnings_at_start(installed: Installed, settings: Settings) -> list[MutableMapping[str, Any]]:
    with capture_logs() as logs:
        runner = Runner(recorder(installed.service), AmqpTransport(settings), settings)
        await runner.start(heartbeats=False)
        await runner.stop()
    return [entry for entry in logs if entry["log_level"] == "warning"]


def _about_trust(warnings: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [entry for entry in warnings if str(entry["event"]).startswith("trusted users set")]


def _about_the_name(warnings: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [entry for entry in warnings if "is not named after service" in str(entry["event"])]


async def test_a_service_with_trusted_users_warns_at_start(installed: Installed) -> None:
    settings = installed.settings(installed.service, trusted_users=frozenset({installed.admin, "guest"}))
    warnings = await _warnings_at_start(installed, settings)
    [warning] = _about_trust(warnings)
    assert warning["trusted_users"] == sorted({installed.admin, "guest"})
    assert "RC_TRUSTED_USERS" in warning["event"]
    assert _about_the_name(warnings) == []


async def test_a_service_on_a_broker_user_not_named_after_it_warns_at_start(installed: Installed) -> None:
    warnings = await _warnings_at_start(installed, installed.settings(installed.admin))
    [warning] = _about_the_name(warnings)
    assert warning["broker_user"] == installed.admin
    assert (
        f"broker user {installed.admin!r} is not named after service {installed.service!r}"
        in warning["event"]
    )
    assert "rc-admin-setup" in warning["event"]
    assert _about_trust(warnings) == []


async def test_a_trusted_development_user_is_not_warned_about_its_name(installed: Installed) -> None:
    settings = installed.settings(installed.admin, trusted_users=frozenset({installed.admin}))
    warnings = await _warnings_at_start(installed, settings)
    assert len(_about_trust(warnings)) == 1
    assert _about_the_name(warnings) == []


async def test_a_service_on_its_own_user_without_trusted_users_warns_of_neither(installed: Installed) -> None:
    warnings = await _warnings_at_start(installed, installed.settings(installed.service))
    assert _about_trust(warnings) == _about_the_name(warnings) == []
