"""The original HTTP task-service protocol, as pure functions: task ids, states, progress, bodies.

Nothing here does I/O, so every oddity an HTTP service can answer is decided (and unit-tested) here:

* :func:`task_id_for` — the stable task id of a (release, service): retries reuse it.
* :func:`parse_state` — a state string to :class:`HttpState` (``pending`` is ``initialized``,
  ``cancelled``/``cancelling`` are ``canceled``); anything else is an :class:`UnknownState`.
* :func:`parse_progress` — ``42``, ``42.5``, ``"42"`` or ``"42%"`` to a percentage in 0..100;
  a missing or unreadable progress is ``None`` (progress is informative: it never fails a step).
* :func:`parse_task_body` — a 200 answer (or a callback body) to a :class:`TaskStatus`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from dataclasses import dataclass
from enum import StrEnum

#: Answers and bodies are cut to this many characters when they become a reason or an error.
MAX_TEXT_CHARS = 1000


class ProtocolError(Exception):
    """The HTTP service answered something the protocol does not allow (the text says what)."""


class UnknownState(ProtocolError):
    """The ``state`` is not one the protocol knows (or not a string)."""


class HttpState(StrEnum):
    """A task's state as the HTTP service reports it (normalized)."""

    INITIALIZED = "initialized"
    RUNNING = "running"
    STAGED = "staged"
    PUBLISHING = "publishing"
    PUBLISHED = "published"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_final(self) -> bool:
        """Failed and canceled end a task: nothing it says afterwards can undo them."""
        return self in (HttpState.FAILED, HttpState.CANCELED)

    @property
    def rank(self) -> int:
        """Position on the happy path; a later observation with a lower rank is stale."""
        return _RANK[self]


_RANK = {
    HttpState.INITIALIZED: 0,
    HttpState.RUNNING: 1,
    HttpState.STAGED: 2,
    HttpState.PUBLISHING: 3,
    HttpState.PUBLISHED: 4,
    HttpState.FAILED: 5,
    HttpState.CANCELED: 5,
}

#: Every spelling services are known to use, lowercased.
_SPELLINGS: dict[str, HttpState] = {
    "pending": HttpState.INITIALIZED,
    "initialized": HttpState.INITIALIZED,
    "initialised": HttpState.INITIALIZED,
    "running": HttpState.RUNNING,
    "staged": HttpState.STAGED,
    "publishing": HttpState.PUBLISHING,
    "published": HttpState.PUBLISHED,
    "failed": HttpState.FAILED,
    "canceled": HttpState.CANCELED,
    "cancelled": HttpState.CANCELED,
    "canceling": HttpState.CANCELED,
    "cancelling": HttpState.CANCELED,
}


def clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """``text`` stripped and cut to ``limit`` characters (marked with an ellipsis when cut)."""
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def task_id_for(release_id: str, service: str) -> str:
    """``TA_`` + 8 characters derived from the release id and the service name.

    The same (release, service) always gives the same id, so a retried or replayed command
    talks about the same task; different services in one release get different ids.
    """
    digest = hashlib.sha256(f"{release_id}\x00{service}".encode()).digest()
    return "TA_" + base64.b32encode(digest).decode("ascii")[:8]


def parse_state(value: object) -> HttpState:
    """The :class:`HttpState` a service's ``state`` value names; :class:`ProtocolError` otherwise."""
    if not isinstance(value, str):
        raise UnknownState(f"the state must be a string, not {clip(json.dumps(value), 200)}")
    state = _SPELLINGS.get(value.strip().lower())
    if state is None:
        raise UnknownState(f"unknown task state {clip(value, 200)!r}")
    return state


def parse_progress(value: object) -> float | None:
    """A percentage in 0..100 from ``42``, ``42.5``, ``"42"`` or ``" 42 %"``; None if absent or unreadable."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip().removesuffix("%").strip()
        try:
            number = float(text)
        except ValueError:
            return None
    else:
        return None
    if not math.isfinite(number):
        return None
    return min(100.0, max(0.0, number))


@dataclass(frozen=True, slots=True)
class TaskStatus:
    """What a service said about a task: its state and (if it said) its progress."""

    state: HttpState
    progress: float | None = None

    def describe(self) -> str:
        """``running at 40%`` or ``running``."""
        return f"{self.state.value} at {self.progress:g}%" if self.progress is not None else self.state.value


def parse_json_object(text: str) -> dict[str, object]:
    """``text`` as a JSON object; :class:`ProtocolError` quoting it otherwise."""
    try:
        body = json.loads(text)
    except ValueError:
        raise ProtocolError(f"the answer is not JSON: {clip(text, 300)!r}") from None
    except RecursionError:
        raise ProtocolError("the answer is JSON nested too deep to read") from None
    if not isinstance(body, dict):
        raise ProtocolError(f"the answer is not a JSON object: {clip(text, 300)!r}")
    return body


def parse_task_body(text: str, task_id: str | None = None) -> TaskStatus:
    """A task answer ``{name, kf_id, release_id, state, progress, date_submitted}`` (or a callback
    ``{state, progress}``) as a :class:`TaskStatus`.

    Only ``state`` is required. A ``kf_id`` naming another task than ``task_id`` is an error.
    """
    body = parse_json_object(text)
    if "state" not in body:
        raise ProtocolError(f"the answer has no state: {clip(text, 300)!r}")
    state = parse_state(body["state"])
    kf_id = body.get("kf_id")
    if task_id is not None and kf_id is not None and kf_id != task_id:
        raise ProtocolError(f"the answer is about task {clip(str(kf_id), 100)!r}, not {task_id!r}")
    return TaskStatus(state, parse_progress(body.get("progress")))


def check_status_body(text: str) -> str:
    """The ``name`` in a ``GET /status`` answer; :class:`ProtocolError` if the body has none."""
    body = parse_json_object(text)
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ProtocolError(f"the status answer has no name: {clip(text, 300)!r}")
    return name
