"""Smoke runs of the benchmarks: tiny sizes, proving each script runs end to end, writes its JSON and ends
with the ``NAME: value unit (ratio X)`` line. No timing is asserted (figures on a shared machine mean nothing
at this size). Needs the real broker (like the other integration tests); the scripts start their own store
and coordinator processes."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from pymongo import MongoClient

from bench import overhead, scale, throughput

LAST_LINE = re.compile(r"^[a-z0-9_]+: [-+0-9.e]+ \S+ \(ratio [-+0-9.einf]+\)$")

pytestmark = pytest.mark.timeout(240)

TINY_OVERHEAD = ["--n", "3", "--releases", "1", "--floor-rounds", "1", "--warmup", "0"]


def run_main(
    main: Callable[[Sequence[str] | None], int], argv: list[str], capsys: pytest.CaptureFixture[str]
) -> str:
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines, "the script printed nothing"
    assert LAST_LINE.match(lines[-1]), lines[-1]
    return lines[-1]


def load(directory: Path, name: str) -> dict[str, object]:
    data = json.loads((directory / f"{name}.json").read_text())
    assert isinstance(data, dict)
    assert data["benchmark"] == name
    return data


def test_overhead(amqp_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = run_main(overhead.main, [*TINY_OVERHEAD, "--spans", "--results-dir", str(tmp_path)], capsys)
    assert line.startswith("overhead_n3: ")
    data = load(tmp_path, "overhead")
    results = data["results"]
    assert isinstance(results, list)
    [result] = results
    assert result["n"] == 3
    assert result["replies"] == 9
    assert result["floor_ms_per_step"]["count"] == 3
    assert result["coordinator_ms_per_step"]["count"] == 1
    assert result["ratio"] > 0
    assert result["same_hops_ms_per_step"]["count"] == 1
    assert result["same_hops_ms_per_step"]["median"] > 0
    for step in ("initialize", "process", "publish"):
        assert result["same_hops_steps_ms"][step]["median"] > 0
    assert result["ratio_same_hops"] > 0
    assert result["cpu_ms_per_step"]["same_hops_bench"] > 0
    # --spans: the coordinator's own part of the release's critical path, cut from what it recorded
    critical = result["critical_path"]
    assert critical["releases"] == 1
    assert [(s["step"], s["side"]) for s in critical["segments"]] == [
        ("initialize", "before"),
        ("initialize", "after"),
        ("process", "after"),
        ("publish", "before"),
        ("publish", "after"),
    ]
    for segment in critical["segments"]:
        assert segment["total"] > 0
        assert 0 <= segment["store"] <= segment["total"]
    assert critical["segments"][0]["store"] > 0  # the insert of the release
    assert critical["segments"][0]["health"] > 0


def test_throughput(amqp_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = run_main(
        throughput.main, ["--services", "10", "--releases", "50", "--results-dir", str(tmp_path)], capsys
    )
    assert line.startswith("throughput: ")
    data = load(tmp_path, "throughput")
    coordinator = data["coordinator"]
    assert isinstance(coordinator, dict)
    assert coordinator["replies"] == 500
    assert coordinator["applied"] == 500
    assert coordinator["store"]["writes_per_reply"] > 0
    bare = data["bare"]
    assert isinstance(bare, dict)
    assert bare["messages"] == 500
    same = data["same_work"]
    assert isinstance(same, dict)
    assert same["messages"] == 500
    assert same["publications"] == 50 * 11
    assert same["rate_per_s"] > 0
    # 500 replies may drain between two polls of the CPU (every 20 ms): no CPU figure then, never a zero
    assert all(ms > 0 for ms in same["cpu_ms_per_reply"].values())
    ratio_same_work = data["ratio_same_work"]
    assert isinstance(ratio_same_work, float)
    assert ratio_same_work > 0


def test_scale(amqp_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = run_main(
        scale.main,
        [
            "--releases",
            "100",
            "--small",
            "10",
            "--calls",
            "5",
            "--memory-first",
            "2",
            "--memory-releases",
            "4",
            "--results-dir",
            str(tmp_path),
        ],
        capsys,
    )
    assert line.startswith("scale_list_p95: ")
    data = load(tmp_path, "scale")
    latency = data["latency"]
    assert isinstance(latency, dict)
    assert latency["large"]["stored"] == 100
    assert latency["baseline"]["stored"] == 10
    for op in ("list", "show", "study", "study_rare", "events"):
        assert latency["large"][f"{op}_ms"]["count"] == 5
        assert latency["baseline"][f"{op}_ms"]["count"] == 5
        assert latency["store_direct"]["large"][f"{op}_ms"]["count"] == 5
    assert latency["load"]["large"]["releases"] == 100
    assert latency["load"]["large"]["events"] > 100
    memory = data["memory"]
    assert isinstance(memory, dict)
    assert memory["releases"] == 4


def test_the_benchmarks_measure_a_store_named_by_url(
    amqp_url: str,
    mongo_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``RC_BENCH_MONGODB_URL`` (how a real MongoDB is measured; here whichever server the suite runs on):
    every script runs on it, reports no CPU figure for a store process it did not start, and drops the
    databases it made there."""
    monkeypatch.setenv("RC_BENCH_MONGODB_URL", mongo_url)
    server: MongoClient[dict[str, object]] = MongoClient(mongo_url)
    try:
        before = set(server.list_database_names())

        results = str(tmp_path)
        run_main(overhead.main, [*TINY_OVERHEAD, "--results-dir", results], capsys)
        runs = load(tmp_path, "overhead")["results"]
        assert isinstance(runs, list)
        [result] = runs
        assert result["replies"] == 9
        assert result["cpu_ms_per_step"]["store"] is None
        assert result["cpu_ms_per_step"]["coordinator"] > 0

        run_main(throughput.main, ["--services", "10", "--releases", "50", "--results-dir", results], capsys)
        coordinator = load(tmp_path, "throughput")["coordinator"]
        assert isinstance(coordinator, dict)
        assert coordinator["applied"] == 500
        assert "store" not in coordinator["cpu_ms_per_reply"]

        tiny_scale = ["--releases", "30", "--small", "5", "--calls", "2", "--memory-first", "1"]
        run_main(scale.main, [*tiny_scale, "--memory-releases", "2", "--results-dir", results], capsys)
        latency = load(tmp_path, "scale")["latency"]
        assert isinstance(latency, dict)
        assert latency["large"]["stored"] == 30
        assert "(mongodb)" in latency["load"]["large"]["how"]

        made = {name for name in set(server.list_database_names()) - before if name.startswith("bench_")}
        assert not made, f"left behind on the store: {sorted(made)}"
    finally:
        server.close()
