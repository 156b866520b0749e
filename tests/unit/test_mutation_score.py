"""``make mutation`` prints the score from mutmut's result files (scripts/mutation_score.py)."""

from __future__ import annotations

import json
from pathlib import Path

from scripts.mutation_score import report, statuses


def test_the_score_counts_killed_and_survived_and_lists_the_survivors(tmp_path: Path) -> None:
    meta = tmp_path / "coordinator" / "versioning.py.meta"
    meta.parent.mkdir()
    codes = {
        "v.x_next__mutmut_1": 1,
        "v.x_next__mutmut_2": 0,
        "v.x_next__mutmut_3": -24,
        "v.x_next__mutmut_4": None,
    }
    meta.write_text(json.dumps({"exit_code_by_key": codes}))
    found = statuses(tmp_path)
    assert found["v.x_next__mutmut_3"] == "timeout"
    assert report(found).splitlines() == [
        "mutation: 4 mutants; 2 killed, 1 survived (66.7%); 1 not checked",
        "  survived: v.x_next__mutmut_2",
    ]
