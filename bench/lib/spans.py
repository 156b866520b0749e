"""Where a release's time goes inside the coordinator: the coordinator's own part of its critical path.

``python -m bench.overhead --spans`` runs the coordinator with :func:`install`, which wraps a few of its
coroutines (an operator's request handled, a reply handled, a publication handed to the broker, a store
write, the health check) so that each call leaves a span ``(what, start, end, detail)``; the spans are
written as JSON when the process ends. :func:`critical_path` then cuts, release by release, the moments
where the release waits for the coordinator and nothing else:

* *initialize, before the services*: the create request reaches the coordinator's handler -> the first
  ``initialize`` command is handed to the broker;
* *initialize, after the services*: the step's last reply reaches the handler -> ``release.running`` is
  handed to the broker;
* *process, after*: the last reply -> ``release.staged``;
* *publish, before*: the publish request reaches the handler -> the first ``publish`` command;
* *publish, after*: the last reply -> ``release.published``;

and says how much of each was a store write (insert or compare-and-set) and the health check. What is
left of a step is the broker's and the services' (hops that the same-hops floor makes too). A segment
starts when the handler starts: a message that waited before it (in the socket, or for a busy event loop)
waited outside the segments. The wrappers cost a little CPU themselves: compare a ``--spans`` run with
itself, not with a run without them.

This patches the coordinator's private methods on purpose (a benchmark's probe, never the product); a
method renamed away makes :func:`install` fail loudly, and ``tests/bench`` runs it.
"""

from __future__ import annotations

import atexit
import functools
import json
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The environment variable that makes ``bench.lib.entry coordinator`` record spans into that file.
SPANS_ENV = "RC_BENCH_SPANS"

Detail = Callable[..., str]


@dataclass(frozen=True)
class Span:
    what: str
    start: float
    end: float
    detail: str = ""

    def overlap(self, start: float, end: float) -> float:
        return max(0.0, min(self.end, end) - max(self.start, start))


def install(path: Path) -> None:
    """Record spans of the coordinator's coroutines in this process; write them to ``path`` at exit."""
    from coordinator.admin import Admin
    from coordinator.broker.rabbitmq import RabbitSession
    from coordinator.creation import Creation
    from coordinator.replies import Replies
    from coordinator.store.mongo import MongoStore
    from coordinator.store.sqlite import SqliteStore

    spans: list[tuple[str, float, float, str]] = []
    probes: list[tuple[type, str, str, Detail]] = [
        (Admin, "_handle", "admin", lambda _self, delivery: _admin_op(delivery.body)),
        (Replies, "_handle", "reply", lambda _self, delivery: delivery.routing_key),
        (RabbitSession, "publish", "publish", _published_key),
        (Creation, "_check", "health", lambda *_: ""),
        (SqliteStore, "insert", "store", lambda *_: "insert"),
        (SqliteStore, "compare_and_set", "store", lambda *_: "compare_and_set"),
        (MongoStore, "insert", "store", lambda *_: "insert"),
        (MongoStore, "compare_and_set", "store", lambda *_: "compare_and_set"),
    ]
    for owner, name, what, detail in probes:
        _wrap(owner, name, what, detail, spans)

    def write() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(spans))

    atexit.register(write)


def _wrap(
    owner: type, name: str, what: str, detail: Detail, spans: list[tuple[str, float, float, str]]
) -> None:
    original: Callable[..., Awaitable[Any]] = getattr(owner, name)  # AttributeError: the probe is stale

    @functools.wraps(original)
    async def recorded(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await original(*args, **kwargs)
        finally:
            spans.append((what, start, time.perf_counter(), detail(*args, **kwargs)))

    setattr(owner, name, recorded)


def _admin_op(body: bytes) -> str:
    try:
        return str(json.loads(body)["operation"]["op"])
    except (ValueError, KeyError, TypeError):
        return "?"


def _published_key(_self: Any, entry: Any, _release_id: str, *, routing_key: str | None = None) -> str:
    return str(routing_key or entry.routing_key)


def read_spans(path: Path) -> list[Span]:
    return sorted((Span(*row) for row in json.loads(path.read_text())), key=lambda s: s.start)


#: (step, segment, where it starts, where it ends); see the module's docstring.
SEGMENTS = (
    ("initialize", "before", "create received", "first initialize command sent"),
    ("initialize", "after", "last reply received", "release.running sent"),
    ("process", "after", "last reply received", "release.staged sent"),
    ("publish", "before", "publish request received", "first publish command sent"),
    ("publish", "after", "last reply received", "release.published sent"),
)


_PARTS = ("total", "store", "health")


def critical_path(spans: Sequence[Span], *, skip: int = 0) -> dict[str, Any]:
    """Per segment of :data:`SEGMENTS`: median ms over the releases (the first ``skip`` left out: the
    warm-up), of which store writes and health check; and the coordinator's own ms per step (the five
    segments' sum over three steps)."""
    per_release = [r for window in _releases(spans)[skip:] if (r := _segments(window)) is not None]
    if not per_release:
        return {"releases": 0}
    figures: dict[str, Any] = {"releases": len(per_release), "segments": []}
    for index, (step, side, begins, ends) in enumerate(SEGMENTS):
        figures["segments"].append(
            {
                "step": step,
                "side": side,
                "from": begins,
                "to": ends,
                **{key: _median_ms(r[index][key] for r in per_release) for key in _PARTS},
            }
        )
    for key in _PARTS:
        figures[f"{key}_per_step_ms"] = _median_ms(sum(s[key] for s in r) / 3 for r in per_release)
    return figures


def _median_ms(values: Iterable[float]) -> float:
    return round(float(statistics.median(values)) * 1000, 3)


def _releases(spans: Sequence[Span]) -> list[list[Span]]:
    """The spans cut at each create request (the benchmark drives one release at a time)."""
    windows: list[list[Span]] = []
    for span in spans:
        if span.what == "admin" and span.detail == "create":
            windows.append([])
        if windows:
            windows[-1].append(span)
    return windows


def _segments(window: Sequence[Span]) -> list[dict[str, float]] | None:
    """The five segments of one release, each ``{"total", "store", "health"}`` in seconds (None if the
    window is not a whole release)."""
    create = window[0]
    marks = {
        "publish request": _first(window, "admin", lambda d: d == "publish"),
        "first initialize": _first(window, "publish", lambda d: d.endswith(".initialize")),
        "running": _first(window, "publish", lambda d: d == "release.running"),
        "staged": _first(window, "publish", lambda d: d == "release.staged"),
        "first publish": _first(window, "publish", lambda d: d.endswith(".publish")),
        "published": _first(window, "publish", lambda d: d == "release.published"),
    }
    at = {name: span.start for name, span in marks.items() if span is not None}
    if len(at) < len(marks):
        return None
    cuts = [
        (create.start, at["first initialize"]),
        (_last_reply(window, at["first initialize"], at["running"]), at["running"]),
        (_last_reply(window, at["running"], at["staged"]), at["staged"]),
        (at["publish request"], at["first publish"]),
        (_last_reply(window, at["first publish"], at["published"]), at["published"]),
    ]
    return [_segment(window, start, end) for start, end in cuts]


def _first(window: Sequence[Span], what: str, detail: Callable[[str], bool]) -> Span | None:
    return next((span for span in window if span.what == what and detail(span.detail)), None)


def _last_reply(window: Sequence[Span], after: float, before: float) -> float:
    """When the handler received the last reply of a step (the one whose effect is the announcement)."""
    starts = [s.start for s in window if s.what == "reply" and after <= s.start < before]
    return max(starts, default=before)


def _segment(window: Sequence[Span], start: float, end: float) -> dict[str, float]:
    def spent(what: str) -> float:
        return sum(s.overlap(start, end) for s in window if s.what == what)

    return {"total": max(0.0, end - start), "store": spent("store"), "health": spent("health")}


def print_critical_path(n: int, figures: dict[str, Any]) -> None:
    """The table of :func:`critical_path` for one N."""
    if not figures.get("releases"):
        print(f"N={n}: no whole release in the spans")
        return
    print(
        f"\nN={n}: the coordinator's own time on a release's critical path (median of {figures['releases']} "
        "releases, ms; the rest of a step is the broker's and the services')"
    )
    print(f"{'step':<11} {'from':<26} {'to':<30} {'total':>8} {'store':>8} {'health':>8}")
    for seg in figures["segments"]:
        print(
            f"{seg['step']:<11} {seg['from']:<26} {seg['to']:<30} "
            f"{seg['total']:>8.2f} {seg['store']:>8.2f} {seg['health']:>8.2f}"
        )
    print(
        f"{'per step (the five / 3)':<69} {figures['total_per_step_ms']:>8.2f} "
        f"{figures['store_per_step_ms']:>8.2f} {figures['health_per_step_ms']:>8.2f}"
    )
