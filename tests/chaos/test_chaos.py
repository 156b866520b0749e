"""The short fault-injection run: a few releases, every kind of fault, a fixed seed (a fixed plan), every
release ended as planned, no violation.
And one sabotaged coordinator, to show the run notices a missing guarantee."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from bench.chaos import FAULTS, Chaos, parse

SHORT = ["--releases", "4", "--services", "3", "--seed", "7"]
SHORT += ["--fault-gap", "0.7", "1.5", "--work-seconds", "2"]


def run_chaos(tmp_path: Path, *extra: str) -> tuple[int, str, dict[str, object]]:
    out = tmp_path / "chaos.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.chaos", *SHORT, "--json", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=500,
        check=False,
    )
    figures = json.loads(out.read_text()) if out.exists() else {}
    return done.returncode, done.stdout + done.stderr, figures


def test_short_run_injects_every_fault_ends_releases_as_planned_and_finds_no_violation(
    amqp_url: str, tmp_path: Path
) -> None:
    code, output, figures = run_chaos(tmp_path)
    assert code == 0, output[-4000:]
    faults = figures["faults"]
    assert isinstance(faults, dict)
    assert {kind for kind in FAULTS if faults.get(kind, 0) < 1} == set()
    violations = figures["violations"]
    assert isinstance(violations, dict)
    assert sum(violations.values()) == 0, violations
    assert violations["services that kept staged data of a release that ended canceled or failed"] == 0
    last = output.strip().splitlines()[-1]
    assert re.match(r"chaos: \d+ releases, \d+ faults injected, 0 violations$", last), last
    assert int(last.split()[1]) >= 4  # more when a fault kind needed one more release to target
    assert last.endswith(", 0 violations")
    # The plan printed is the seed's own (the same for every run with seed 7), and every release the
    # operator drove ended as planned: published, or canceled on purpose. A coordinator that fails every
    # release, or never publishes, fails here.
    plan = Chaos(parse(SHORT)).plan
    for line in plan.describe():
        assert line in output, output[:3000]
    driven = figures["releases driven"]
    assert isinstance(driven, int)
    assert driven >= 4
    assert figures["releases planned to be canceled"] == 1
    unplanned = figures["unplanned"]
    assert isinstance(unplanned, list)
    assert figures["releases ended as planned"] == driven - len(unplanned)
    # At least the one canceled on purpose and one published.
    assert figures["releases ended as planned"] >= 2, output[-4000:]
    for line in unplanned:  # only a service killed just before its release began may cancel it
        assert "canceled: unhealthy at initialization" in line, output[-4000:]
    published = figures["releases published"]
    assert isinstance(published, int)
    assert published >= 1


def test_a_coordinator_that_believes_any_sender_is_caught(amqp_url: str, tmp_path: Path) -> None:
    code, output, figures = run_chaos(tmp_path, "--coordinator", "bench.sabotage accept-spoofed")
    violations = figures["violations"]
    assert isinstance(violations, dict)
    assert violations["spoofed or malformed messages accepted"] >= 1, output[-4000:]
    assert code == 1
