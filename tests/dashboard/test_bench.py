"""A smoke run of ``bench/dashboard.py`` at a tiny size: it runs end to end, every page got every update,
and it ends with the ``NAME: value unit (ratio X)`` line. No timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import dashboard
from tests.bench.test_bench_smoke import LAST_LINE

pytestmark = pytest.mark.timeout(240)


def test_dashboard_bench(amqp_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny = [
        "--releases",
        "20",
        "--small",
        "5",
        "--calls",
        "2",
        "--pages",
        "4",
        "--services",
        "2",
        "--steps",
        "2",
    ]
    assert dashboard.main([*tiny, "--interval", "0.1", "--results-dir", str(tmp_path)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert LAST_LINE.match(last), last
    assert last.startswith("dashboard_release_page_p95: ")
    data = json.loads((tmp_path / "dashboard.json").read_text())
    for size in ("small", "large"):
        assert data["pages"][size]["release_page"]["count"] == 2
        assert data["pages"][size]["releases_page"]["count"] == 2
    assert data["pages"]["large"]["stored"] == 20
    complete = data["live"]["complete"]
    for kind in ("release_pages", "list_pages"):
        assert complete[kind]["pages"] == 2
        assert complete[kind]["updates"] > 0
        assert complete[kind]["pages_missing_some"] == 0
    assert data["live"]["progress_delay_ms"]["page"]["count"] > 0
