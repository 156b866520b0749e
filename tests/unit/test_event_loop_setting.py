"""``RC_EVENT_LOOP``: the coordinator's event loop, asyncio's or uvloop's, checked at start-up.

That the running coordinator is on the loop it was told is checked with a real one, whose ``active`` log line
names it: ``tests/coordinator/test_faults.py::test_a_second_coordinator_stands_by_then_takes_over``.
"""

from __future__ import annotations

import asyncio
import sys

import pytest
import uvloop

from coordinator import __main__ as coordinator_main
from coordinator import logs
from coordinator.settings import SETTINGS, Settings, running_event_loop


def test_the_default_is_the_documented_one() -> None:
    assert Settings.from_env({}).event_loop == SETTINGS["RC_EVENT_LOOP"][0] == Settings().event_loop


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("asyncio", "asyncio"),
        ("uvloop", "uvloop"),
        (" UVLoop ", "uvloop"),
        ("", SETTINGS["RC_EVENT_LOOP"][0]),
    ],
)
def test_a_known_loop_is_read_in_any_case(value: str, parsed: str) -> None:
    assert Settings.from_env({"RC_EVENT_LOOP": value}).event_loop == parsed


@pytest.mark.parametrize("value", ["trio", "uv-loop", "asyncio,uvloop"])
def test_an_unknown_loop_is_refused_naming_the_setting_and_the_choices(value: str) -> None:
    with pytest.raises(ValueError, match=r"RC_EVENT_LOOP must be asyncio or uvloop, not ") as refused:
        Settings.from_env({"RC_EVENT_LOOP": value})
    assert repr(value) in str(refused.value)


def test_an_unknown_loop_stops_the_coordinator_in_one_line_with_status_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RC_EVENT_LOOP", "trio")
    assert coordinator_main.main([]) == coordinator_main.EXIT_USAGE
    assert capsys.readouterr().err == "rc-coordinator: RC_EVENT_LOOP must be asyncio or uvloop, not 'trio'\n"


def test_each_name_gives_its_loop() -> None:
    assert coordinator_main.loop_factory("asyncio") is None  # asyncio's default
    factory = coordinator_main.loop_factory("uvloop")
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_uvloop_missing_stops_the_coordinator_in_one_line_naming_the_way_out(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    monkeypatch.setattr(logs, "configure", lambda level="info": None)  # the suite's logging stays as it is
    monkeypatch.setenv("RC_EVENT_LOOP", "uvloop")
    assert coordinator_main.main([]) == coordinator_main.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("rc-coordinator: RC_EVENT_LOOP=uvloop: uvloop cannot be imported")
    assert "or set RC_EVENT_LOOP=asyncio" in err


def test_the_running_loop_is_named_as_the_setting_names_it() -> None:
    """What the ``active`` log line says. Loops run by hand: an ``asyncio.Runner`` without a factory would
    set, then clear, this thread's event loop, which the session's async tests run on."""
    factories = {"asyncio": asyncio.new_event_loop, "uvloop": coordinator_main.loop_factory("uvloop")}
    for name, factory in factories.items():
        assert factory is not None
        loop = factory()
        try:
            assert loop.run_until_complete(_named()) == name
        finally:
            loop.close()


async def _named() -> str:
    return running_event_loop()
