"""The pure mapping of the HTTP protocol: task ids, states, progress, bodies."""

from __future__ import annotations

import re

import pytest

from rc_http_bridge import (
    HttpState,
    ProtocolError,
    TaskStatus,
    UnknownState,
    parse_progress,
    parse_state,
    parse_task_body,
    task_id_for,
)
from rc_http_bridge.bridge import reached
from rc_http_bridge.protocol import check_status_body, clip


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("pending", HttpState.INITIALIZED),
        ("initialized", HttpState.INITIALIZED),
        ("running", HttpState.RUNNING),
        ("staged", HttpState.STAGED),
        ("publishing", HttpState.PUBLISHING),
        ("published", HttpState.PUBLISHED),
        ("failed", HttpState.FAILED),
        ("canceled", HttpState.CANCELED),
        ("cancelled", HttpState.CANCELED),
        ("cancelling", HttpState.CANCELED),
        ("canceling", HttpState.CANCELED),
        (" Staged ", HttpState.STAGED),
        ("PUBLISHED", HttpState.PUBLISHED),
    ],
)
def test_every_spelling_of_a_state_is_understood(text: str, state: HttpState) -> None:
    assert parse_state(text) is state


@pytest.mark.parametrize("value", ["exploded", "", "done", None, 3, ["staged"]])
def test_an_unknown_state_is_an_error_quoting_it(value: object) -> None:
    with pytest.raises(UnknownState) as raised:
        parse_state(value)
    if isinstance(value, str) and value:
        assert str(raised.value) == f"unknown task state {value!r}"


@pytest.mark.parametrize(
    ("value", "percent"),
    [
        (50, 50.0),
        (12.5, 12.5),
        ("50%", 50.0),
        (" 42 % ", 42.0),
        ("7", 7.0),
        ("99.5%", 99.5),
        (150, 100.0),
        (-3, 0.0),
        ("250%", 100.0),
        (None, None),
        (True, None),
        ("half", None),
        ("", None),
        ("nan", None),
        (float("inf"), None),
        ({"pct": 5}, None),
    ],
)
def test_progress_is_a_clamped_percentage_or_none(value: object, percent: float | None) -> None:
    assert parse_progress(value) == percent


def test_a_task_answer_becomes_a_status() -> None:
    body = (
        '{"name": "portal", "kf_id": "TA_ABCDEFGH", "release_id": "RE_00000000", "state": "running",'
        ' "progress": "40%", "date_submitted": "2024-01-01T00:00:00Z"}'
    )
    assert parse_task_body(body, "TA_ABCDEFGH") == TaskStatus(HttpState.RUNNING, 40.0)
    assert parse_task_body('{"state": "staged"}') == TaskStatus(HttpState.STAGED, None)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("<html>oops</html>", "the answer is not JSON: '<html>oops</html>'"),
        ("", "the answer is not JSON: ''"),
        ("[1, 2]", "the answer is not a JSON object: '[1, 2]'"),
        ('{"progress": 5}', "the answer has no state"),
        ('{"state": "exploded"}', "unknown task state 'exploded'"),
        (
            '{"state": "running", "kf_id": "TA_OTHER000"}',
            "the answer is about task 'TA_OTHER000', not 'TA_ABCDEFGH'",
        ),
    ],
)
def test_an_unreadable_task_answer_is_an_error_saying_why(body: str, error: str) -> None:
    with pytest.raises(ProtocolError) as raised:
        parse_task_body(body, "TA_ABCDEFGH")
    assert str(raised.value).startswith(error)


def test_a_long_garbage_answer_is_quoted_cut() -> None:
    with pytest.raises(ProtocolError) as raised:
        parse_task_body("x" * 10_000)
    assert len(str(raised.value)) < 400


def test_the_task_id_is_stable_per_release_and_service() -> None:
    first = task_id_for("RE_ABCDEFGH", "portal")
    assert re.fullmatch(r"TA_[A-Z2-7]{8}", first)
    assert task_id_for("RE_ABCDEFGH", "portal") == first
    assert task_id_for("RE_ABCDEFGH", "search-index") != first
    assert task_id_for("RE_ABCDEFGI", "portal") != first


def test_reached_counts_later_states_but_never_failures() -> None:
    assert reached(HttpState.STAGED, HttpState.STAGED)
    assert reached(HttpState.PUBLISHED, HttpState.STAGED)
    assert not reached(HttpState.RUNNING, HttpState.STAGED)
    assert not reached(HttpState.STAGED, HttpState.PUBLISHED)
    assert not reached(HttpState.FAILED, HttpState.STAGED)
    assert not reached(HttpState.CANCELED, HttpState.INITIALIZED)


def test_the_status_body_needs_a_name() -> None:
    assert check_status_body('{"name": "portal", "version": "2"}') == "portal"
    for body in ("{}", '{"name": ""}', "ok", '{"name": 3}'):
        with pytest.raises(ProtocolError):
            check_status_body(body)


def test_clip() -> None:
    assert clip("  short ") == "short"
    assert clip("abcdef", 4) == "abc…"


def test_status_describe() -> None:
    assert TaskStatus(HttpState.RUNNING, 40.0).describe() == "running at 40%"
    assert TaskStatus(HttpState.RUNNING).describe() == "running"
