"""Print the score of the last ``mutmut run`` (``make mutation``) and list the surviving mutants.

Reads mutmut's result files (``mutants/**/*.meta``, one per mutated module). Killed: a test failed (or the
run timed out, or the type check refused the mutant). Survived: every selected test passed. The score is
killed / (killed + survived); mutants not checked yet (an interrupted run) are counted apart.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

KILLED = {"killed", "timeout", "caught by type check", "segfault"}


def statuses(root: Path) -> dict[str, str]:
    """Mutant name -> its status, from every result file under ``root``."""
    found: dict[str, str] = {}
    for meta in sorted(root.rglob("*.meta")):
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        found.update({name: status_by_exit_code[code] for name, code in codes.items()})
    return found


def report(found: dict[str, str]) -> str:
    counts = Counter("killed" if s in KILLED else s for s in found.values())
    killed, survived = counts["killed"], counts["survived"]
    checked = killed + survived
    score = f"{100 * killed / checked:.1f}%" if checked else "n/a"
    others = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if s not in ("killed", "survived"))
    summary = f"{len(found)} mutants; {killed} killed, {survived} survived ({score})"
    lines = [f"mutation: {summary}; {others or 'no others'}"]
    lines += [f"  survived: {name}" for name, status in sorted(found.items()) if status == "survived"]
    return "\n".join(lines)


def main() -> int:
    root = Path("mutants")
    if not root.is_dir():
        print("mutation: no results (run `make mutation`, which runs `mutmut run` first)", file=sys.stderr)
        return 2
    print(report(statuses(root)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
