"""Smoke run of ``bench.consume_path`` at a tiny size: it consumes through the coordinator's real broker
session and through aio-pika, writes its JSON and ends with the ``NAME: value unit (ratio X)`` line. No
figure is asserted beyond being measured (CPU per delivery on a shared machine means nothing here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import consume_path
from tests.bench.test_bench_smoke import run_main

pytestmark = pytest.mark.timeout(120)


def test_consume_path(amqp_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--messages", "20", "--blocks", "2", "--results-dir", str(tmp_path)]
    line = run_main(consume_path.main, argv, capsys)
    assert line.startswith("consume_path: ")
    data = json.loads((tmp_path / "consume_path.json").read_text())
    assert data["method"]["messages_per_block"] == 20
    assert all(len(samples) == 2 for samples in data["samples_us"].values())
    assert all(value > 0 for value in data["cpu_us_per_delivery"].values())
