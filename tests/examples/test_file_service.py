"""The example file service, exercised with the SDK's in-memory harness."""

from __future__ import annotations

import pytest

from examples.file_service import FileService, FileStore, data_files
from task_sdk.testing import Harness


async def test_it_checksums_every_file_and_flips_visibility_at_publish(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FILE_SERVICE_SECONDS", "0.2")
    store = FileStore()
    result = await Harness(FileService(store)).run_release(studies=["SD_1"])

    assert result.outcomes == ["accepted", "staged", "published"]
    assert len(result.progress) >= len(data_files("SD_1")) >= 3
    assert result.progress[-1].note == f"staged SD_1: {len(data_files('SD_1'))} files"
    assert list(store.visible) == ["SD_1"]
    assert store.visible["SD_1"].startswith("sd_1@1.0.0 sha256:")


async def test_nothing_is_visible_before_publication(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FILE_SERVICE_SECONDS", "0")
    store = FileStore()
    harness = Harness(FileService(store))
    result = await harness.run_release(studies=["SD_1"], within=5)
    assert result.outcomes[-1] == "published"
    assert await harness.start_processing(result.release) is not None  # a replay answers, changes nothing
    assert list(store.visible) == ["SD_1"]
