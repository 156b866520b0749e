"""Where the coordinator's time goes: summaries of py-spy speedscope profiles."""

from __future__ import annotations

import json
from collections.abc import Mapping
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
    frames = data["shared"]["frames"]

    def loop_samples(profile: Mapping[str, Any]) -> int:
        names = {i for i, f in enumerate(frames) if f["name"].rsplit(".", 1)[-1] == "_run_once"}
        return sum(1 for stack in profile["samples"] if names & set(stack))

    profile = max(data["profiles"], key=loop_samples)
    samples: list[list[int]] = profile["samples"]
    weights: list[float] = profile.get("weights") or [1.0] * len(samples)
    total = sum(weights)
    importing = {i for i, f in enumerate(frames) if "importlib._bootstrap" in (f.get("file") or "")}
    idle = startup = 0.0
    buckets: dict[str, float] = {}
    self_time: dict[str, float] = {}
    inclusive: dict[str, float] = {}
    for stack, weight in zip(samples, weights, strict=True):
        if not stack:
            continue
        leaf = frames[stack[-1]]
        if leaf["name"].rsplit(".", 1)[-1] in ("select", "poll") and "selectors" in (leaf.get("file") or ""):
            idle += weight
            continue
        if importing.intersection(stack):
            startup += weight
            continue
        bucket = _bucket(leaf.get("file") or "")
        buckets[bucket] = buckets.get(bucket, 0.0) + weight
        name = f"{leaf['name']} ({_short(leaf.get('file') or '?')})"
        self_time[name] = self_time.get(name, 0.0) + weight
        seen: set[str] = set()
        for index in stack:
            frame = frames[index]
            file = frame.get("file") or ""
            if "/coordinator/" in file or "/schemas/" in file:
                key = f"{frame['name']} ({_short(file)})"
                if key not in seen:
                    seen.add(key)
                    inclusive[key] = inclusive.get(key, 0.0) + weight
    busy = total - idle - startup

    def shares(values: Mapping[str, float], limit: int) -> dict[str, float]:
        ordered = sorted(values.items(), key=lambda item: -item[1])[:limit]
        return {k: round(v / busy, 4) for k, v in ordered} if busy else {}

    return {
        "file": path.name,
        "samples": len(samples),
        "sampled_seconds": round(total, 2),
        "idle_share": round(idle / total, 4) if total else None,
        "startup_share": round(startup / total, 4) if total else None,
        "busy_share": round(busy / total, 4) if total else None,
        "busy_by_bucket": shares(buckets, 50),
        "busy_self_top": shares(self_time, top),
        "busy_inclusive_project_top": shares(inclusive, top),
    }


def summarize_profiles(directory: Path, prefix: str) -> dict[str, Any]:
    """:func:`profile_summary` of every ``<prefix>*.speedscope.json`` in ``directory``."""
    out: dict[str, Any] = {}
    for path in sorted(directory.glob(f"{prefix}*.speedscope.json")):
        try:
            out[path.name] = profile_summary(path)
        except (OSError, ValueError, KeyError) as error:
            out[path.name] = {"error": repr(error)}
    return out
