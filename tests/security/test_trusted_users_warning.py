"""Trusted users (``RC_TRUSTED_USERS``) may answer for any service: a development switch. A coordinator
started with it says so, every time, and one started without it says nothing of the kind."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import pytest
from structlog.testing import capture_logs

from coordinator.settings import Settings
from tests.coordinator.fixtures import Running

pytestmark = pytest.mark.parametrize("broker_kind", ["memory"], indirect=True)


def trust_warnings(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if str(entry["event"]).startswith("trusted users set")]


async def test_a_coordinator_with_trusted_users_warns_at_start(
    settings: Settings, start_coordinator: Callable[[Settings], Awaitable[Running]]
) -> None:
    with capture_logs() as logs:
        await start_coordinator(dataclasses.replace(settings, trusted_users=frozenset({"guest", "dev"})))
    [warning] = trust_warnings(logs)
    assert warning["log_level"] == "warning"
    assert warning["trusted_users"] == ["dev", "guest"]
    assert "RC_TRUSTED_USERS" in str(warning["event"])


async def test_a_coordinator_without_trusted_users_does_not(
    settings: Settings, start_coordinator: Callable[[Settings], Awaitable[Running]]
) -> None:
    with capture_logs() as logs:
        await start_coordinator(dataclasses.replace(settings, trusted_users=frozenset()))
    assert trust_warnings(logs) == []
