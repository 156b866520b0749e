"""The example search-index service, exercised with the SDK's in-memory harness."""

from __future__ import annotations

import pytest

from examples.search_index import IndexCatalog, SearchIndex
from task_sdk.testing import Harness


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEARCH_INDEX_SECONDS", "0.2")


async def test_it_indexes_every_study_and_publishes_them() -> None:
    catalog = IndexCatalog()
    result = await Harness(SearchIndex(catalog)).run_release(studies=["SD_1", "SD_2"])

    assert result.outcomes == ["accepted", "staged", "published"]
    assert result.progress[-1].percent == 100
    assert catalog.public_alias == {"SD_1": "sd_1-1.0.0", "SD_2": "sd_2-1.0.0"}


async def test_it_rejects_when_told_to(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEARCH_INDEX_REJECT", "index cluster in maintenance")
    result = await Harness(SearchIndex()).run_release()
    assert (result.outcomes, result.replies[0].reason) == (["rejected"], "index cluster in maintenance")


async def test_an_injected_failure_fails_processing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEARCH_INDEX_FAIL", "shard allocation failed")
    result = await Harness(SearchIndex()).run_release()
    assert (result.outcomes, result.replies[1].reason) == (
        ["accepted", "failed"],
        "RuntimeError: shard allocation failed",
    )


async def test_a_cancel_discards_what_was_staged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEARCH_INDEX_SECONDS", "5")
    catalog = IndexCatalog()
    run = await Harness(SearchIndex(catalog)).cancel_during_process(studies=["SD_1", "SD_2"])
    assert (run.cancel_reply.outcome, run.start_replies, catalog.staged) == ("canceled", [], {})
