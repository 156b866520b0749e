"""What ``rc`` checks before it sends anything: ids, names, times and note texts; bad input exits 2."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError

from rc_cli.options import Settings
from rc_cli.output import EXIT_BAD_INPUT, fail
from schemas._base import RELEASE_ID_PATTERN
from schemas.documents import MAX_NOTE_BYTES, NOTE_ID_PATTERN
from schemas.topology import check_service_name

T = TypeVar("T")

_RELEASE_ID = re.compile(RELEASE_ID_PATTERN)
_NOTE_ID = re.compile(NOTE_ID_PATTERN)
_AGE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
#: A model field -> the option or argument an operator gives it with.
_OPTION_NAMES = {
    "name": "--name",
    "studies": "--study",
    "description": "--description",
    "tags": "--tag",
    "reason": "--reason",
    "limit": "--limit",
    "cursor": "--cursor",
    "state": "--state",
    "study": "--study",
    "since": "--since",
    "kind": "--kind",
    "text": "--text",
    "note_id": "NOTE_ID",
    "is_major": "--major/--minor",
}


def check_release_id(settings: Settings, release_id: str) -> str:
    if not _RELEASE_ID.match(release_id):
        fail(
            settings,
            f"invalid release id {release_id!r}: expected RE_ followed by 8 uppercase letters or digits "
            "(e.g. RE_0A1B2C3D)",
            EXIT_BAD_INPUT,
        )
    return release_id


def check_service(settings: Settings, name: str) -> str:
    try:
        return check_service_name(name)
    except ValueError as error:
        fail(settings, str(error), EXIT_BAD_INPUT)


def check_note_id(settings: Settings, note_id: str) -> str:
    if not _NOTE_ID.match(note_id):
        fail(
            settings,
            f"invalid note id {note_id!r}: expected N followed by a number (e.g. N1)",
            EXIT_BAD_INPUT,
        )
    return note_id


def describe_invalid(error: ValidationError) -> str:
    problems = []
    for item in error.errors(include_url=False)[:3]:
        location = [str(part) for part in item["loc"]]
        if location and location[0] in _OPTION_NAMES:
            location[0] = _OPTION_NAMES[location[0]]
            where = location[0] + (
                f" #{int(location[1]) + 1}" if len(location) > 1 and location[1].isdigit() else ""
            )
        else:
            where = ".".join(location) or "input"
        problems.append(f"{where}: {item['msg']}")
    return "invalid input: " + "; ".join(problems)


def build(settings: Settings, factory: Callable[[], T]) -> T:
    """Build an operation from the command line, turning a validation error into exit 2."""
    try:
        return factory()
    except ValidationError as error:
        fail(settings, describe_invalid(error), EXIT_BAD_INPUT)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``7d`` (an age: seconds, minutes, hours, days or weeks ago), or an ISO date or date and time."""
    match = _AGE.match(text)
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        return (now or datetime.now(UTC)) - timedelta(**{_AGE_UNITS[unit]: amount})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"invalid --since {text!r}: give an ISO date or time (2026-01-31, 2026-01-31T12:00:00Z) "
            "or an age (90s, 30m, 12h, 7d, 2w)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def since_option(settings: Settings, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_since(text)
    except (ValueError, OverflowError) as error:
        fail(settings, str(error), EXIT_BAD_INPUT)


def note_text(settings: Settings, file: Path | None, text: str | None) -> str:
    """The note given with exactly one of ``--file`` (``-``: standard input) or ``--text``, at most 64 KiB."""
    if (file is None) == (text is None):
        fail(settings, "give the note with exactly one of --file or --text", EXIT_BAD_INPUT)
    if file is not None:
        try:
            text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            fail(settings, f"cannot read --file {str(file)!r}: {error}", EXIT_BAD_INPUT)
    assert text is not None
    if not text.strip():
        fail(settings, "the note is empty", EXIT_BAD_INPUT)
    size = len(text.encode())
    if size > MAX_NOTE_BYTES:
        fail(
            settings,
            f"the note is {size} bytes; a note may have at most {MAX_NOTE_BYTES} bytes (64 KiB)",
            EXIT_BAD_INPUT,
        )
    return text
