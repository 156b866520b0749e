"""``python -m tests.explore``: explore every run of the release protocol within a bound; print the
figures, and the shortest counter-example if a rule breaks (exit 1)."""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext

from bench.sabotage import VARIANTS
from tests.explore.explorer import Result, explore
from tests.explore.world import Bound

PROG = "python -m tests.explore"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    default = Bound()
    parser.add_argument("--services", type=int, default=default.services, help="required services (1-3)")
    parser.add_argument(
        "--releases", type=int, default=default.releases, help="releases (later ones re-runs)"
    )
    parser.add_argument(
        "--concurrent", action="store_true", help="operators may also create a release while another is open"
    )
    parser.add_argument("--duplicates", type=int, default=default.duplicates, help="duplicates per run")
    parser.add_argument(
        "--unconfirmed", type=int, default=default.unconfirmed, help="outboxes not confirmed at once per run"
    )
    parser.add_argument("--losses", type=int, default=default.losses, help="messages lost per run")
    parser.add_argument("--silent", type=int, default=default.silent, help="services that may go silent")
    parser.add_argument("--no-failures", action="store_true", help="services never reject or fail")
    parser.add_argument("--lose-commands", action="store_true", help="confirmed commands may be lost too")
    parser.add_argument("--max-states", type=int, default=None, help="stop after this many states")
    machine_level = sorted(name for name, v in VARIANTS.items() if v.level == "machine")
    parser.add_argument("--sabotage", choices=machine_level, help="explore with this guarantee removed")
    return parser.parse_args(argv)


def report(result: Result, sabotage: str | None) -> None:
    removed = f" (sabotage: {sabotage})" if sabotage else ""
    print(f"explore: bound: {result.bound.describe()}{removed}")
    print(f"explore: {result.summary()}")
    if result.violation is not None:
        v = result.violation
        print(f"explore: VIOLATION of {v.check}: {v.message}")
        print(f"explore: shortest counter-example ({len(v.trace)} steps):")
        for line in v.trace:
            print(f"  {line}")
    elif not result.complete:
        print("explore: stopped at --max-states: no violation so far, but not every state was reached")
    else:
        print("explore: every reachable state explored; no violation")


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    bound = Bound(
        services=args.services,
        releases=args.releases,
        duplicates=args.duplicates,
        unconfirmed=args.unconfirmed,
        losses=args.losses,
        silent=args.silent,
        failures=not args.no_failures,
        lose_commands=args.lose_commands,
        concurrent=args.concurrent,
    )
    started = time.monotonic()
    shown = [started]

    def progress(expanded: int, states: int, depth: int) -> None:
        """Every 10 s, on stderr."""
        now = time.monotonic()
        if now - shown[0] >= 10:
            shown[0] = now
            line = f"{states:,} states, {expanded:,} expanded, depth {depth}, {now - started:.0f} s"
            print(f"explore: ... {line}", file=sys.stderr, flush=True)

    patch = VARIANTS[args.sabotage].patch() if args.sabotage else nullcontext()
    try:
        with patch:
            result = explore(bound, max_states=args.max_states, progress=progress)
    except ValueError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    report(result, args.sabotage)
    return 1 if result.violation is not None else 0


if __name__ == "__main__":
    sys.exit(main())
