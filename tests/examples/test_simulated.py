"""What the three example services share: rejection, failure injection, cooperative cancel, knobs."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from examples._simulated import Knobs, StagingArea
from examples.file_service import FileService, FileStore
from examples.portal import Portal, PortalSite
from examples.search_index import IndexCatalog, SearchIndex
from task_sdk import TaskHandler
from task_sdk.cli import load_handler
from task_sdk.testing import Harness

Make = Callable[[], tuple[TaskHandler, StagingArea]]


def portal() -> tuple[TaskHandler, StagingArea]:
    site = PortalSite()
    return Portal(site), site


def search_index() -> tuple[TaskHandler, StagingArea]:
    catalog = IndexCatalog()
    return SearchIndex(catalog), catalog


def file_service() -> tuple[TaskHandler, StagingArea]:
    store = FileStore()
    return FileService(store), store


EXAMPLES = [("PORTAL", portal), ("SEARCH_INDEX", search_index), ("FILE_SERVICE", file_service)]
IDS = [prefix.lower() for prefix, _ in EXAMPLES]


@pytest.mark.parametrize(("prefix", "make"), EXAMPLES, ids=IDS)
async def test_it_rejects_when_told_to(prefix: str, make: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"{prefix}_REJECT", "in maintenance")
    handler, _ = make()
    result = await Harness(handler).run_release()
    assert (result.outcomes, result.replies[0].reason) == (["rejected"], "in maintenance")


@pytest.mark.parametrize(("prefix", "make"), EXAMPLES, ids=IDS)
async def test_an_injected_failure_fails_processing_half_way(
    prefix: str, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"{prefix}_SECONDS", "0.2")
    monkeypatch.setenv(f"{prefix}_FAIL", "disk full")
    handler, area = make()
    result = await Harness(handler).run_release(studies=["SD_1", "SD_2"])
    assert (result.outcomes, result.replies[1].reason) == (["accepted", "failed"], "RuntimeError: disk full")
    assert 0 < max(p.percent for p in result.progress) <= 50
    assert area.staged == {}


@pytest.mark.parametrize(("prefix", "make"), EXAMPLES, ids=IDS)
async def test_a_cancel_stops_the_work_and_discards_it(
    prefix: str, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"{prefix}_SECONDS", "5")
    handler, area = make()
    run = await Harness(handler).cancel_during_process(studies=["SD_1", "SD_2"])
    assert (run.cancel_reply.outcome, run.start_replies, area.staged, area.public) == ("canceled", [], {}, {})
    assert max(p.percent for p in run.progress) < 100


@pytest.mark.parametrize("target", ["examples.portal:Portal", "examples.file_service:FileService"])
def test_rc_task_can_load_them(target: str) -> None:
    assert isinstance(load_handler(target), TaskHandler)


def test_knobs_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Knobs.from_env("DEMO_X", 7) == Knobs(seconds=7)
    monkeypatch.setenv("DEMO_X_SECONDS", "1.5")
    monkeypatch.setenv("DEMO_X_FAIL", "boom")
    assert Knobs.from_env("DEMO_X", 7) == Knobs(seconds=1.5, fail="boom")
    monkeypatch.setenv("DEMO_X_SECONDS", "soon")
    with pytest.raises(ValueError, match="DEMO_X_SECONDS must be a number"):
        Knobs.from_env("DEMO_X", 7)
