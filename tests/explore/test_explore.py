"""The exhaustive explorer: the real state machine keeps every rule in every reachable state of a bound,
and the explorer finds a counter-example when a guarantee is removed (bench/sabotage.py)."""

from __future__ import annotations

import pytest

from bench import sabotage
from bench.sabotage import VARIANTS
from coordinator.machine import step as machine_step
from schemas.enums import ReleaseState
from tests.explore.__main__ import main
from tests.explore.explorer import Explorer, Result, explore
from tests.explore.world import Bound, World
from tests.sabotage.plugin import caught_by

#: The bound run by the suite: at least 100,000 states, well under a minute on a loaded 2-core machine.
#: Two releases (a re-run: versions across releases), outboxes the broker does not confirm (and the
#: coordinator crashing before it publishes them), a silent service, services that reject and fail.
SUITE_BOUND = Bound(services=2, releases=2, duplicates=0, unconfirmed=1, losses=0, silent=1)
#: Two releases open at once, each run and published in any order against the other, on one service (two
#: services multiply each release's own states: 3.5 million states with no fault at all, see README).
CONCURRENT_BOUND = Bound(
    services=1, releases=2, duplicates=0, unconfirmed=1, losses=0, silent=0, concurrent=True
)
#: Three services, one release, no fault but the interleavings.
THREE_SERVICES_BOUND = Bound(
    services=3, releases=1, duplicates=0, unconfirmed=0, losses=0, silent=0, failures=False
)
#: Duplicated and lost messages, on one release (with the abstraction cross-checked).
FAULTS_BOUND = Bound(services=2, releases=1, duplicates=1, unconfirmed=0, losses=1, silent=0)
#: A small bound in which every state-machine sabotage is caught, but those of ``AT_ONCE``.
SMALL_BOUND = Bound(services=2, releases=2, duplicates=0, unconfirmed=0, losses=0, silent=0, failures=False)
#: A small bound with two releases open at once.
SMALL_CONCURRENT_BOUND = Bound(
    services=1, releases=2, duplicates=0, unconfirmed=0, losses=0, silent=0, failures=False, concurrent=True
)
#: A small bound with every fault: with ``SMALL_CONCURRENT_BOUND``, every kind of move is taken.
SMALL_FAULTS_BOUND = Bound(services=1, releases=1, duplicates=1, unconfirmed=1, losses=1, silent=1)

#: The rule each sabotage breaks first.
CAUGHT_BY = {
    "advance-early": "published_only_when_staged_everywhere",
    "ignore-hold": "publish_respects_hold",
    "ignore-deadlines": "deadline_ends_the_step",
    "accept-duplicates": "duplicates_change_nothing",
    "reuse-version": "final_versions_increase",
    "skip-discard": "discarded_everywhere",
    "final-from-tentative": "final_versions_increase",
}
#: The sabotages that only releases open at once reveal (caught in ``SMALL_CONCURRENT_BOUND``).
AT_ONCE = frozenset({"final-from-tentative"})
#: Every kind of move of the model (``tests/explore/model.py``).
MOVES = frozenset(
    {"begin", "deadline", "unhealthy", "receive", "outbox", "operator", "create", "rerun"}
    | {"lose", "command", "finish", "silent"}
)


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
        result = explore(SMALL_CONCURRENT_BOUND if name in AT_ONCE else SMALL_BOUND)
    assert result.violation is not None, f"{name}: {result.summary()}"
    assert result.violation.check == CAUGHT_BY[name], trace_of(result)


def open_at_once(explorer: Explorer, w: World, state: ReleaseState | None = None) -> bool:
    """Two releases of ``w`` are open (in ``state``, if given)."""
    facts = [explorer.model.machine.facts[rid] for rid in w.releases]
    both = [f for f in facts if not f.state.is_terminal and (state is None or f.state is state)]
    return len(both) >= 2


@caught_by("final-from-tentative")
def test_two_releases_open_at_once_keep_every_rule_and_publish_in_either_order() -> None:
    explorer = Explorer(CONCURRENT_BOUND)
    result = explorer.run()
    assert result.violation is None, trace_of(result)
    assert result.complete
    open_twice = [w for w in explorer.worlds if open_at_once(explorer, w)]
    assert len(open_twice) > result.states // 10, result.summary()  # 8,345 of 79,656
    publishing = [w for w in open_twice if open_at_once(explorer, w, ReleaseState.PUBLISHING)]
    assert publishing, "no state has both releases publishing"
    finals = {
        tuple(explorer.model.machine.facts[rid].final_version for rid in w.releases) for w in publishing
    }
    assert {("0.1.0", "0.2.0"), ("0.2.0", "0.1.0")} <= finals  # published in either order


def test_a_final_version_taken_from_the_release_itself_is_caught_only_with_releases_open_at_once() -> None:
    """One after the other, a release's tentative version comes after every final version assigned,
    so taking the final version above it looks right; two open at once are both given 0.1.0."""
    with VARIANTS["final-from-tentative"].patch():
        one_after_the_other = explore(SMALL_BOUND)
        at_once = explore(SMALL_CONCURRENT_BOUND)
    assert one_after_the_other.violation is None, trace_of(one_after_the_other)
    assert at_once.violation is not None
    assert at_once.violation.message == "R2 was given 0.1.0, not above 0.1.0 (R1)", trace_of(at_once)
    assert any(
        "operator: create R2 (tentative version 0.0.2) while R1 is open" in step
        for step in at_once.violation.trace
    )


def test_every_kind_of_move_is_taken_and_changes_the_state() -> None:
    """No move is a step that changes nothing (a coordinator crash is not one: the model holds nothing of
    the coordinator but the store, see ``tests/explore/model.py``)."""
    taken: set[str] = set()
    changing: set[str] = set()
    for bound in (SMALL_FAULTS_BOUND, SMALL_CONCURRENT_BOUND):
        explorer = Explorer(bound)
        assert explorer.run().violation is None
        for w in explorer.worlds:
            for move, after in explorer.model.moves(w):
                taken.add(move.kind)
                if after != w:
                    changing.add(move.kind)
    assert taken == MOVES
    assert changing == taken


def test_three_services_keep_every_rule() -> None:
    result = explore(THREE_SERVICES_BOUND)
    assert result.violation is None, trace_of(result)
    assert result.complete
    assert result.states > 30_000, result.summary()


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
