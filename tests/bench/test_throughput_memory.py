"""Smoke run of ``bench.throughput_memory`` at a tiny size, in a process of its own (it configures the
coordinator's logging): the coordinator drains replies on the in-memory broker, every reply is applied
(each release reaches ``running``), the JSON is written and the script ends with the ``NAME: value unit
(ratio X)`` line. No figure is asserted beyond being measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.bench.test_bench_smoke import LAST_LINE


def test_throughput_memory(tmp_path: Path) -> None:
    argv = ["--releases", "5", "--services", "3", "--results-dir", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "bench.throughput_memory", *argv], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert LAST_LINE.match(last), last
    assert last.startswith("throughput_memory: "), last
    data = json.loads((tmp_path / "throughput_memory.json").read_text())
    assert data["replies"] == 15
    assert data["rate_per_s"] > 0
    assert all(value > 0 for value in data["cpu_ms_per_reply"].values())
