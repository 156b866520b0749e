"""Breadth-first exploration of every reachable state of the world, with the rules checked on the way.

States are hashed (a :class:`~tests.explore.world.World` is a tuple of small values), so each is
expanded once. Breadth-first order makes the first violation found one at the smallest depth: its
trace is a shortest counter-example. Once the graph is complete, ``every_run_can_end`` walks it
backwards from the states where every release has ended.

Counted as transitions: every step taken from an explored state (to a new state, a known one, or the
same one). Operator commands that the state machine refuses are asked (from the memo) but not counted:
they change nothing.
"""

from __future__ import annotations

import itertools
import time
from array import array
from collections.abc import Callable, Collection
from dataclasses import dataclass

from tests.explore.invariants import STATE_CHECKS, TRANSITION_CHECKS, TransitionCheck, every_run_can_end, name
from tests.explore.model import Model
from tests.explore.trace import describe
from tests.explore.world import Bound, Move, World

Progress = Callable[[int, int, int], None]


@dataclass(frozen=True)
class Violation:
    check: str
    message: str
    #: The steps from the first state to the one that breaks the rule, described.
    trace: tuple[str, ...]


@dataclass
class Result:
    bound: Bound
    states: int = 0
    transitions: int = 0
    depth: int = 0
    seconds: float = 0.0
    #: Calls of the real decide() (the others were answered from the memo).
    decisions: int = 0
    violation: Violation | None = None
    complete: bool = True

    def summary(self) -> str:
        return (
            f"{self.states:,} states, {self.transitions:,} transitions, depth {self.depth}, "
            f"{self.seconds:.1f} s ({self.decisions:,} decide() calls)"
        )


class Explorer:
    """``skip``: names of checks not to run (to show that another check catches the same fault)."""

    def __init__(
        self,
        bound: Bound,
        *,
        cross_check: bool = False,
        progress: Progress | None = None,
        skip: Collection[str] = (),
    ) -> None:
        self.model = Model(bound, cross_check=cross_check)
        self.progress = progress
        self.state_checks = tuple(c for c in STATE_CHECKS if c.__name__ not in skip)
        self.checks_by_move: dict[str, list[TransitionCheck]] = {}
        for check, kinds in TRANSITION_CHECKS:
            if check.__name__ not in skip:
                for kind in kinds:
                    self.checks_by_move.setdefault(kind, []).append(check)
        self.graph_check = every_run_can_end.__name__ not in skip
        self.worlds: list[World] = []
        self.parents = array("i")

    def run(self, max_states: int | None = None) -> Result:
        started = time.perf_counter()
        result = Result(self.model.bound)
        self._explore(result, max_states)
        result.states = len(self.worlds)
        result.decisions = self.model.machine.decisions
        result.seconds = time.perf_counter() - started
        return result

    def _explore(self, result: Result, max_states: int | None) -> None:
        model = self.model
        first = model.initial()
        index = {first: 0}
        self.worlds.append(first)
        self.parents.append(-1)
        depths = array("i", [0])
        sources, targets = array("i"), array("i")
        checks = self.checks_by_move
        i = 0
        while i < len(self.worlds):
            if max_states is not None and len(self.worlds) >= max_states:
                result.complete = False
                return
            w = self.worlds[i]
            if self.progress is not None and i % 20_000 == 0:
                self.progress(i, len(self.worlds), depths[i])
            for move, after in model.moves(w):
                result.transitions += 1
                for transition_check in checks.get(move.kind, ()):
                    why = transition_check(model, w, move, after)
                    if why is not None:
                        result.violation = self._violation(transition_check.__name__, why, i, move)
                        return
                if after is w:
                    continue
                j = index.get(after)
                if j is None:
                    j = len(self.worlds)
                    index[after] = j
                    self.worlds.append(after)
                    self.parents.append(i)
                    depths.append(depths[i] + 1)
                    result.depth = depths[i] + 1
                    for state_check in self.state_checks:
                        why = state_check(model, after)
                        if why is not None:
                            result.violation = self._violation(state_check.__name__, why, j)
                            return
                if j != i:
                    sources.append(i)
                    targets.append(j)
            i += 1
        stuck = every_run_can_end(model, self.worlds, sources, targets) if self.graph_check else None
        if stuck is not None:
            open_releases = [
                name(r)
                for r, rid in enumerate(self.worlds[stuck].releases)
                if not model.machine.facts[rid].state.is_terminal
            ]
            why = f"from here no run ends {', '.join(open_releases)}"
            result.violation = self._violation(every_run_can_end.__name__, why, stuck)

    def _violation(self, check: str, message: str, last: int, extra: Move | None = None) -> Violation:
        """The steps from the first state to state ``last`` (then ``extra``), described."""
        path: list[int] = []
        j = last
        while j >= 0:
            path.append(j)
            j = self.parents[j]
        path.reverse()
        steps: list[tuple[World, Move, World]] = []
        for a, b in itertools.pairwise(path):
            before, after = self.worlds[a], self.worlds[b]
            move = next(m for m, w in self.model.moves(before) if w == after)  # the first, as explored
            steps.append((before, move, after))
        if extra is not None:
            before = self.worlds[last]
            after = next(w for m, w in self.model.moves(before) if m == extra)
            steps.append((before, extra, after))
        trace = tuple(f"{n:2d}. {describe(self.model, *step)}" for n, step in enumerate(steps, 1))
        return Violation(check, message, trace)


def explore(
    bound: Bound,
    *,
    max_states: int | None = None,
    cross_check: bool = False,
    progress: Progress | None = None,
    skip: Collection[str] = (),
) -> Result:
    return Explorer(bound, cross_check=cross_check, progress=progress, skip=skip).run(max_states)
