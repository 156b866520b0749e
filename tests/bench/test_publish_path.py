"""Smoke run of ``bench.publish_path`` at a tiny size: it publishes through the coordinator's real broker
session and through aio-pika, writes its JSON and ends with the ``NAME: value unit (ratio X)`` line. No
figure is asserted beyond being measured (CPU per publication on a shared machine means nothing here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import publish_path
from tests.bench.test_bench_smoke import run_main

pytestmark = pytest.mark.timeout(120)


def test_publish_path(amqp_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--rounds", "4", "--blocks", "2", "--services", "3", "--results-dir", str(tmp_path)]
    line = run_main(publish_path.main, argv, capsys)
    assert line.startswith("publish_path: ")
    data = json.loads((tmp_path / "publish_path.json").read_text())
    assert data["method"]["publications_per_burst"] == 4
    assert all(len(samples) == 2 for samples in data["samples_us"].values())
    assert all(value > 0 for value in data["cpu_us_per_publication"].values())
