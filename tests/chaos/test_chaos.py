"""The short fault-injection run: a few releases, every kind of fault, a fixed seed (a fixed plan of which
fault hits which release at which step), the faults injected as planned, every release ended as planned (or
as a disruptive fault begun before it ended explains), no violation. It runs once more under
``skip-discard`` (the sabotage matrix, ``tests/sabotage/plugin.py``): the release the plan cancels at review
keeps its staged data, and the run's discard check, from the services' journals, must say so. And one
sabotaged coordinator that believes any sender, to show the run notices."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

from bench.chaos import FAULTS, Chaos, parse
from bench.chaos_plan import FAULT_ENDINGS
from tests.sabotage.plugin import caught_by

#: Seed 355 plans every kind once; the release it cancels at review (0) gets only forged or copied messages,
#: and the kill of a service and the redeclared queue hit the last release once published (so they rarely
#: meet another release mid-processing): the releases can end as planned, one canceled with data staged.
SHORT = ["--releases", "4", "--services", "3", "--seed", "355"]
SHORT += ["--fault-gap", "0.7", "1.5", "--work-seconds", "2"]
KEPT = "services that kept staged data of a release that ended canceled or failed"


def run_chaos(tmp_path: Path, *extra: str) -> tuple[int, str, dict[str, object]]:
    out = tmp_path / "chaos.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.chaos", *SHORT, "--json", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=500,
        check=False,
    )
    assert out.exists(), (done.stdout + done.stderr)[-4000:]
    figures = json.loads(out.read_text())
    assert isinstance(figures, dict)
    return done.returncode, done.stdout + done.stderr, figures


def assert_staged_data_was_discarded(figures: dict[str, object], output: str) -> None:
    """The plan cancels a release at review (staged everywhere): the check had data to look at, and every
    service discarded it, by its journal."""
    assert figures["releases planned to be canceled"] == 1
    to_discard = figures["staged data of canceled or failed releases, to discard"]
    assert isinstance(to_discard, int)
    assert to_discard >= 1, output[-4000:]  # else the discard check could not bite
    violations = figures["violations"]
    assert isinstance(violations, dict)
    assert violations[KEPT] == 0, output[-4000:]


def assert_faults_as_planned(figures: dict[str, object], output: str) -> None:
    """The faults the run tried are the plan's (fault, release, step), and every kind acted at least once."""
    plan = Chaos(parse(SHORT)).plan
    for line in plan.describe():  # the plan printed is the seed's own (the same for every run with this seed)
        assert line in output, output[:3000]
    assert figures["plan"] == [{"kind": f.kind, "release": f.release, "step": f.step} for f in plan.faults]
    injected = figures["injected"]
    assert isinstance(injected, list)
    assert sorted((r["kind"], r["release"], r["step"]) for r in injected) == plan.keys(), injected
    assert figures["off plan"] == []
    faults = figures["faults"]
    assert isinstance(faults, dict)
    assert {kind for kind in FAULTS if faults.get(kind, 0) < 1} == set(), injected
    assert sum(faults.values()) == sum(1 for r in injected if r["applied"])


def assert_faults_landed_where_planned(figures: dict[str, object]) -> None:
    """Each fault hit the release its plan names, never before its step; the disruptive ones took turns;
    a kill or a broken queue says which service it acted on (what an ending it causes names)."""
    releases = cast(list[dict[str, Any]], figures["releases"])
    assert sorted(release["number"] for release in releases) == list(range(4)), releases
    assert figures["misplaced"] == [], figures["injected"]
    for record in cast(list[dict[str, Any]], figures["injected"]):
        assert record["started"] <= record["ended"], record
        if record["applied"] and record["kind"] in ("kill_service", "redeclare_queue"):
            assert record.get("service"), record


@caught_by("skip-discard")
def test_short_run_injects_the_planned_faults_ends_releases_as_planned_and_finds_no_violation(
    amqp_url: str, tmp_path: Path, sabotage: str | None
) -> None:
    extra = ["--coordinator", f"bench.sabotage {sabotage}"] if sabotage else []
    code, output, figures = run_chaos(tmp_path, *extra)
    assert_staged_data_was_discarded(figures, output)
    assert code == 0, output[-4000:]
    violations = figures["violations"]
    assert isinstance(violations, dict)
    assert sum(violations.values()) == 0, violations
    # The run's summary line: a service's last words on its stderr (its broker user deleted at the end of
    # the run while it was still connected) may come after it in the shared output.
    last = [line for line in output.strip().splitlines() if line.startswith("chaos: ")][-1]
    assert re.match(r"chaos: 4 releases, \d+ faults injected, 0 violations$", last), last
    assert_faults_as_planned(figures, output)
    # Every release the operator drove ended as planned: published, or canceled on purpose. A coordinator
    # that fails every release, or never publishes, fails here.
    assert figures["releases driven"] == 4
    unplanned = figures["unplanned"]
    assert isinstance(unplanned, list)
    assert figures["releases ended as planned"] == 4 - len(unplanned)
    # At least the one canceled on purpose and one published.
    assert figures["releases ended as planned"] >= 2, output[-4000:]
    for line in unplanned:
        assert any(ending in line for ending in FAULT_ENDINGS), output[-4000:]
    # And a fault that can end a release so had begun before it ended, on a service its reason names (or
    # on every connection): the fault that explains it, planned for it or not (a kill hits every release
    # in flight).
    assert figures["unexplained"] == [], (figures["releases"], figures["injected"])
    assert_faults_landed_where_planned(figures)
    published = figures["releases published"]
    assert isinstance(published, int)
    assert published >= 1


def test_a_coordinator_that_believes_any_sender_is_caught(amqp_url: str, tmp_path: Path) -> None:
    # Services that work longer: the forged failure lands while its service still processes.
    sabotaged = ["--coordinator", "bench.sabotage accept-spoofed", "--work-seconds", "5"]
    code, output, figures = run_chaos(tmp_path, *sabotaged)
    violations = figures["violations"]
    assert isinstance(violations, dict)
    assert violations["spoofed or malformed messages accepted"] >= 1, output[-4000:]
    assert code == 1
