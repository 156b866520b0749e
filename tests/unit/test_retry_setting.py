"""``RC_RETRY_BACKOFF``: the wait before ``start`` is sent again after the instance processing it stopped."""

from __future__ import annotations

from datetime import timedelta

import pytest

from coordinator.machine import Timeouts
from coordinator.settings import SETTINGS, Settings


def test_the_default_is_the_documented_one() -> None:
    documented = timedelta(seconds=float(SETTINGS["RC_RETRY_BACKOFF"][0]))
    assert Settings.from_env({}).timeouts.retry == documented == Timeouts().retry


@pytest.mark.parametrize(("value", "wait"), [("0", 0.0), ("2.5", 2.5), ("60", 60.0)])
def test_zero_or_more_seconds_are_read(value: str, wait: float) -> None:
    assert Settings.from_env({"RC_RETRY_BACKOFF": value}).timeouts.retry == timedelta(seconds=wait)


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon"])
def test_anything_else_is_refused_naming_the_setting(value: str) -> None:
    with pytest.raises(ValueError, match=r"^RC_RETRY_BACKOFF must be "):
        Settings.from_env({"RC_RETRY_BACKOFF": value})


def test_the_wait_doubles_with_each_attempt() -> None:
    timeouts = Timeouts(retry=timedelta(seconds=3))
    assert [timeouts.retry_wait(starts) for starts in (1, 2, 3)] == [timedelta(seconds=s) for s in (3, 6, 12)]
