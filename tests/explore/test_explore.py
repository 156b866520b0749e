"""The exhaustive explorer: the real state machine keeps every rule in every reachable state of a bound,
and the explorer finds a counter-example when a guarantee is removed (bench/sabotage.py)."""

from __future__ import annotations

import pytest

from bench import sabotage
from bench.sabotage import VARIANTS
from coordinator.machine import step as machine_step
from tests.explore.__main__ import main
from tests.explore.explorer import Explorer, Result, explore
from tests.explore.world import Bound
from tests.sabotage.plugin import caught_by

#: The bound run by the suite: at least 100,000 states, well under a minute on a loaded 2-core machine.
#: Two releases (a re-run: versions across releases), outboxes the broker does not confirm (and the
#: coordinator crashing before it publishes them), a silent service, services that reject and fail.
SUITE_BOUND = Bound(services=2, releases=2, duplicates=0, unconfirmed=1, losses=0, silent=1)
#: Duplicated and lost messages, on one release (with the abstraction cross-checked).
FAULTS_BOUND = Bound(services=2, releases=1, duplicates=1, unconfirmed=0, losses=1, silent=0)
#: A small bound in which every state-machine sabotage is caught.
SMALL_BOUND = Bound(services=2, releases=2, duplicates=0, unconfirmed=0, losses=0, silent=0, failures=False)

#: The rule each sabotage breaks first.
CAUGHT_BY = {
    "advance-early": "published_only_when_staged_everywhere",
    "ignore-hold": "publish_respects_hold",
    "ignore-deadlines": "deadline_ends_the_step",
    "accept-duplicates": "duplicates_change_nothing",
    "reuse-version": "final_versions_increase",
    "skip-discard": "discarded_everywhere",
}


def trace_of(result: Result) -> str:
    if result.violation is None:
        return "no violation"
    return "\n".join([f"{result.violation.check}: {result.violation.message}", *result.violation.trace])


@caught_by("advance-early", "ignore-deadlines")
def test_every_reachable_state_of_the_suite_bound_keeps_every_rule() -> None:
    result = explore(SUITE_BOUND)
    assert result.violation is None, trace_of(result)
    assert result.complete
    assert result.states >= 100_000, result.summary()
    assert result.transitions > result.states


def test_the_command_line_runs_the_suite_bound_by_default() -> None:
    assert Bound() == SUITE_BOUND


def test_without_sabotage_the_small_bound_has_no_counter_example() -> None:
    result = explore(SMALL_BOUND)
    assert result.violation is None, trace_of(result)
    assert result.complete


@pytest.mark.parametrize("name", sorted(CAUGHT_BY))
def test_each_state_machine_sabotage_is_caught(name: str) -> None:
    with VARIANTS[name].patch():
        result = explore(SMALL_BOUND)
    assert result.violation is not None, f"{name}: {result.summary()}"
    assert result.violation.check == CAUGHT_BY[name], trace_of(result)


def test_the_machine_level_variants_are_exactly_those_the_explorer_catches() -> None:
    assert {name for name, v in VARIANTS.items() if v.level == "machine"} == set(CAUGHT_BY)


def test_advance_early_gives_the_shortest_trace() -> None:
    """Eight steps: begin (initialize sent); two services accept (each: the command taken, the reply
    received; the second reply sends start); one service takes start on, stages, and its reply is
    received. No shorter run stages a release."""
    with VARIANTS["advance-early"].patch():
        result = explore(SMALL_BOUND)
    assert result.violation is not None
    trace = result.violation.trace
    assert len(trace) == 8, trace_of(result)
    assert trace[0].startswith(" 1. coordinator begins R1")
    assert trace[-1].endswith("-> R1 staged (every service staged its data)"), trace_of(result)
    assert "not staged everywhere" in result.violation.message


def test_a_release_that_can_never_end_is_found_by_the_graph_check() -> None:
    """Without the per-step deadline check, ignore-deadlines still breaks progress: a silent service
    leaves its release waiting forever, and every_run_can_end finds the state it cannot leave."""
    bound = Bound(services=2, releases=1, duplicates=0, unconfirmed=0, losses=0, silent=1, failures=False)
    with VARIANTS["ignore-deadlines"].patch():
        result = explore(bound, skip={"deadline_ends_the_step"})
    assert result.violation is not None
    assert result.violation.check == "every_run_can_end", trace_of(result)
    assert "goes silent" in "\n".join(result.violation.trace)


def test_losing_confirmed_commands_breaks_the_discard() -> None:
    """The design relies on the broker not losing a command it confirmed: if it did, a lost cancel would
    leave staged data behind a canceled or failed release, and the explorer says so."""
    bound = Bound(services=2, releases=1, duplicates=0, unconfirmed=0, losses=1, silent=0, lose_commands=True)
    result = explore(bound)
    assert result.violation is not None
    assert result.violation.check == "discarded_everywhere", trace_of(result)


@caught_by("accept-duplicates")
def test_duplicated_and_lost_messages_keep_every_rule_and_canonical_states_are_decided_alike() -> None:
    """Documents that differ only in what decide() does not read (timestamps, revision, reasons) are one
    state: with ``cross_check`` every decision is also taken on the other documents met for that state
    and must come out the same (Machine.step asserts it)."""
    explorer = Explorer(FAULTS_BOUND, cross_check=True)
    result = explorer.run()
    assert result.violation is None, trace_of(result)
    assert result.complete
    assert explorer.model.machine.cross_checked > 100


def test_sabotage_patches_are_restored() -> None:
    originals = (
        machine_step._Step.deadline,
        machine_step._Step.reply,
        machine_step._Step._publish,
        vars(machine_step)["next_final"],
    )
    for variant in VARIANTS.values():
        with variant.patch():
            pass
    assert (
        machine_step._Step.deadline,
        machine_step._Step.reply,
        machine_step._Step._publish,
        vars(machine_step)["next_final"],
    ) == originals
    assert machine_step._Step._advance_if_all_answered is not None
    with pytest.raises(RuntimeError), VARIANTS["ignore-deadlines"].patch():
        raise RuntimeError("an error inside the patch")
    assert machine_step._Step.deadline is originals[0]


def test_the_command_line_prints_figures_and_the_counter_example(capsys: pytest.CaptureFixture[str]) -> None:
    small = ["--services", "2", "--releases", "1", "--duplicates", "0", "--unconfirmed", "0"]
    small += ["--losses", "0", "--silent", "0", "--no-failures"]
    assert main(small) == 0
    out = capsys.readouterr().out
    assert "explore: bound: 2 services, 1 release(s)" in out
    assert "every reachable state explored; no violation" in out
    assert main([*small, "--sabotage", "advance-early"]) == 1
    out = capsys.readouterr().out
    assert "VIOLATION of published_only_when_staged_everywhere" in out
    assert " 1. coordinator begins R1" in out
    assert main(["--services", "7"]) == 2
    assert "services must be 1 to 3, not 7" in capsys.readouterr().err


def test_the_sabotage_command_lists_the_variants(capsys: pytest.CaptureFixture[str]) -> None:
    assert sabotage.main([]) == 2
    err = capsys.readouterr().err
    for name, variant in VARIANTS.items():
        assert name in err
        assert variant.description in err
    assert sabotage.main(["no-such-thing"]) == 2
    assert "unknown variant 'no-such-thing'" in capsys.readouterr().err
