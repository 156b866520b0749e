"""The sabotage matrix is complete: every variant of ``bench/sabotage.py`` is caught by at least one
guarantee's own test (the runs themselves are those tests' ``[sabotage:NAME]`` cases, see
``tests/sabotage/plugin.py``)."""

from __future__ import annotations

import pytest

from bench.sabotage import VARIANTS
from tests.chaos import test_chaos
from tests.coordinator import (
    test_discard_journals,
    test_faults,
    test_in_memory,
    test_releases,
    test_unique_versions,
)
from tests.explore import test_explore
from tests.sabotage.plugin import CATCHERS, caught_by
from tests.security import test_forged_commands
from tests.store import test_contract
from tests.unit import test_decode_any, test_machine

#: The modules holding the guarantees' tests; importing them registers their catchers.
CATCHING_MODULES = (
    test_chaos,
    test_discard_journals,
    test_explore,
    test_faults,
    test_forged_commands,
    test_in_memory,
    test_releases,
    test_unique_versions,
    test_contract,
    test_decode_any,
    test_machine,
)


def test_every_variant_is_caught_by_some_guarantees_test() -> None:
    assert CATCHING_MODULES
    assert {name for name in VARIANTS if not CATCHERS.get(name)} == set()


def test_a_catcher_must_name_a_real_variant() -> None:
    with pytest.raises(AssertionError, match=r"not variants of bench/sabotage\.py"):
        caught_by("no-such-sabotage")
