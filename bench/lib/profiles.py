"""Where the coordinator's time goes: summaries of py-spy speedscope profiles."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.lib.basics import REPO

# ---------------------------------------------------------------------- profiles (py-spy speedscope)

#: Where the time of a sample goes, by the file of its innermost Python frame (native code such as
#: pydantic-core or the bson C extension is charged to the Python frame that called it).
_BUCKETS = (
    ("pydantic", "pydantic (validation, dump, copy)"),
    ("bson", "bson (encode/decode)"),
    ("pymongo", "pymongo driver"),
    ("aiormq", "AMQP client (aio-pika/aiormq/pamqp)"),
    ("aio_pika", "AMQP client (aio-pika/aiormq/pamqp)"),
    ("pamqp", "AMQP client (aio-pika/aiormq/pamqp)"),
    ("structlog", "logging (structlog)"),
    ("/logging/", "logging (structlog)"),
    ("prometheus_client", "metrics (prometheus)"),
    ("mongoeco", "mongoeco (the embedded store)"),
    ("/coordinator/", "coordinator code"),
    ("/schemas/", "schemas code"),
    ("semver", "semver"),
    ("asyncio", "asyncio event loop"),
    ("selectors", "asyncio event loop"),
    ("json", "json"),
)


def _short(file: str) -> str:
    for marker in ("site-packages/", "/lib/python3", str(REPO) + "/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return file.split("/", 1)[1] if file.startswith("3.") else file


def _bucket(file: str) -> str:
    for marker, name in _BUCKETS:
        if marker in file:
            return name
    return "other (stdlib, threads)"


def profile_summary(path: Path, top: int = 25) -> dict[str, Any]:
    """Where the event-loop thread of a py-spy speedscope profile spent its time.

    Samples whose innermost frame is the selector's ``select`` are *idle* (waiting for the broker, the store
    or a timer); samples inside an import are *start-up* (the modules loading, before the process serves
    anything: most of a short run's samples); the others are *busy*. Returns the idle and start-up shares,
    busy time by package bucket, the busy functions with the most self time, and the inclusive share of
    the busiest project functions.
    """
    data = json.loads(path.read_text())
    frames: list[dict[str, Any]] = data["shared"]["frames"]
    profile = _event_loop_profile(frames, data["profiles"])
    samples: list[list[int]] = profile["samples"]
    weights: list[float] = profile.get("weights") or [1.0] * len(samples)
    tally = _Tally(frames)
    for stack, weight in zip(samples, weights, strict=True):
        tally.add(stack, weight)
    total = sum(weights)
    busy = total - tally.idle - tally.startup
    return {
        "file": path.name,
        "samples": len(samples),
        "sampled_seconds": round(total, 2),
        "idle_share": round(tally.idle / total, 4) if total else None,
        "startup_share": round(tally.startup / total, 4) if total else None,
        "busy_share": round(busy / total, 4) if total else None,
        "busy_by_bucket": _shares(tally.buckets, busy, 50),
        "busy_self_top": _shares(tally.self_time, busy, top),
        "busy_inclusive_project_top": _shares(tally.inclusive, busy, top),
    }


def _event_loop_profile(
    frames: Sequence[Mapping[str, Any]], profiles: Sequence[Mapping[str, Any]]
) -> Mapping[str, Any]:
    """The profile of the thread that runs the event loop: the one with the most samples inside
    ``_run_once`` (py-spy names it ``_run_once`` or ``BaseEventLoop._run_once``)."""
    run_once = {i for i, f in enumerate(frames) if f["name"].rsplit(".", 1)[-1] == "_run_once"}

    def loop_samples(profile: Mapping[str, Any]) -> int:
        return sum(1 for stack in profile["samples"] if run_once & set(stack))

    return max(profiles, key=loop_samples)


def _is_idle(leaf: Mapping[str, Any]) -> bool:
    """Whether a sample whose innermost frame is ``leaf`` waits in the selector."""
    return leaf["name"].rsplit(".", 1)[-1] in ("select", "poll") and "selectors" in (leaf.get("file") or "")


@dataclass
class _Tally:
    """The weights of one thread's samples: idle, start-up, and busy by bucket, by innermost function
    (self time) and by project function anywhere on the stack (inclusive time)."""

    frames: Sequence[Mapping[str, Any]]
    idle: float = 0.0
    startup: float = 0.0
    buckets: dict[str, float] = field(default_factory=dict)
    self_time: dict[str, float] = field(default_factory=dict)
    inclusive: dict[str, float] = field(default_factory=dict)
    #: The frames of the import machinery: a sample with one of them is start-up.
    importing: set[int] = field(init=False)

    def __post_init__(self) -> None:
        self.importing = {
            i for i, f in enumerate(self.frames) if "importlib._bootstrap" in (f.get("file") or "")
        }

    def add(self, stack: Sequence[int], weight: float) -> None:
        if not stack:
            return
        leaf = self.frames[stack[-1]]
        if _is_idle(leaf):
            self.idle += weight
        elif self.importing.intersection(stack):
            self.startup += weight
        else:
            _add(self.buckets, _bucket(leaf.get("file") or ""), weight)
            _add(self.self_time, f"{leaf['name']} ({_short(leaf.get('file') or '?')})", weight)
            for function in self._project_functions(stack):
                _add(self.inclusive, function, weight)

    def _project_functions(self, stack: Sequence[int]) -> list[str]:
        """The coordinator's and the schemas' functions on ``stack``, each once, outermost first."""
        functions: dict[str, None] = {}
        for index in stack:
            frame = self.frames[index]
            file = frame.get("file") or ""
            if "/coordinator/" in file or "/schemas/" in file:
                functions[f"{frame['name']} ({_short(file)})"] = None
        return list(functions)


def _add(totals: dict[str, float], key: str, weight: float) -> None:
    totals[key] = totals.get(key, 0.0) + weight


def _shares(values: Mapping[str, float], busy: float, limit: int) -> dict[str, float]:
    """The ``limit`` largest ``values`` as shares of the ``busy`` time, largest first."""
    ordered = sorted(values.items(), key=lambda item: -item[1])[:limit]
    return {k: round(v / busy, 4) for k, v in ordered} if busy else {}


def summarize_profiles(directory: Path, prefix: str) -> dict[str, Any]:
    """:func:`profile_summary` of every ``<prefix>*.speedscope.json`` in ``directory``."""
    out: dict[str, Any] = {}
    for path in sorted(directory.glob(f"{prefix}*.speedscope.json")):
        try:
            out[path.name] = profile_summary(path)
        except (OSError, ValueError, KeyError) as error:
            out[path.name] = {"error": repr(error)}
    return out
