"""Release version rules (docs/design.md, section 1).

* The first release is ``0.0.1``.
* A tentative version is the last *created* release's version (its final version if it has one,
  else its tentative one) with the patch number incremented, whatever that release's state.
* A final version is the highest final version assigned so far with its major (major release)
  or minor (minor release) number incremented. Final versions therefore always end in ``.0``
  and tentative ones never do, so the two never collide; and because the base is the highest
  final version ever assigned, final versions are unique and strictly increasing even when
  several releases are staged at once.
"""

from __future__ import annotations

from collections.abc import Iterable

import semver

FIRST_VERSION = "0.0.1"
_ORIGIN = semver.Version(0, 0, 0)


def next_tentative(last_created_version: str | None) -> str:
    if last_created_version is None:
        return FIRST_VERSION
    return str(semver.Version.parse(last_created_version).bump_patch())


def next_final(highest_final_version: str | None, *, is_major: bool) -> str:
    base = semver.Version.parse(highest_final_version) if highest_final_version else _ORIGIN
    return str(base.bump_major() if is_major else base.bump_minor())


def highest(versions: Iterable[str]) -> str | None:
    parsed = [semver.Version.parse(v) for v in versions]
    return str(max(parsed)) if parsed else None


def sort_key(version: str) -> str:
    """A string that sorts like the version does (for a store index): ``000001.000002.000003``."""
    v = semver.Version.parse(version)
    return f"{v.major:06d}.{v.minor:06d}.{v.patch:06d}"
