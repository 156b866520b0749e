"""The example portal service, exercised with the SDK's in-memory harness."""

from __future__ import annotations

import pytest

from examples.portal import Portal, PortalSite, participants
from task_sdk.testing import Harness


async def test_it_builds_pages_per_study_and_swaps_the_alias_at_publish(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PORTAL_SECONDS", "0.2")
    site = PortalSite()
    result = await Harness(Portal(site)).run_release(studies=["SD_1", "SD_2"])

    assert result.outcomes == ["accepted", "staged", "published"]
    notes = [p.note for p in result.progress]
    assert f"loaded metadata of SD_1 ({participants('SD_1')} participants)" in notes
    assert result.progress[-1].percent == 100
    assert site.public_pages == {"SD_1": "pages/1.0.0/sd_1", "SD_2": "pages/1.0.0/sd_2"}
    assert (site.live_version, site.staged[result.release.id]) == ("1.0.0", site.public_pages)
