"""Constants, small helpers, statistics and JSON output of the benchmarks."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import secrets
import socket
import statistics
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika

from coordinator.settings import Settings as CoordinatorSettings
from schemas.enums import SUCCESS_BY_ACTION, ReleaseState
from schemas.messages import Command, TaskReply

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
STEPS = ("initialize", "process", "publish")
#: Announced states that end a benchmark release early (something went wrong).
BAD_STATES = frozenset({ReleaseState.CANCELING, ReleaseState.CANCELED, ReleaseState.FAILED})

_T0 = time.monotonic()


# ---------------------------------------------------------------------- small things


def amqp_url() -> str:
    return os.environ.get("RC_AMQP_URL") or DEFAULT_AMQP_URL


def new_namespace(tag: str = "") -> str:
    """``bench-<hex>[-tag]``: a namespace (and database) nobody else uses."""
    return f"bench-{secrets.token_hex(4)}" + (f"-{tag}" if tag else "")


def database_of(namespace: str) -> str:
    return CoordinatorSettings(namespace=namespace).database


def service_names(count: int) -> list[str]:
    return [f"svc-{i:03d}" for i in range(count)]


def split(items: Sequence[str], parts: int) -> list[list[str]]:
    """``items`` dealt round-robin into at most ``parts`` non-empty lists."""
    parts = max(1, min(parts, len(items)))
    return [list(items[i::parts]) for i in range(parts)]


def say(message: str) -> None:
    """A progress line (stdout, flushed, with the seconds since the start)."""
    print(f"[{time.monotonic() - _T0:7.1f}s] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def now() -> datetime:
    return datetime.now(UTC)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


# ---------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(values: Sequence[float]) -> dict[str, float | int]:
    """count, median, p95, mean, min, max of ``values`` (NaN-free: an empty list gives only the count)."""
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "median": round(statistics.median(values), 3),
        "p95": round(percentile(values, 95), 3),
        "mean": round(statistics.fmean(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def ratio(value: float, base: float) -> float:
    return round(value / base, 3) if base else math.inf


def last_line(name: str, value: float, unit: str, ratio_value: float) -> str:
    """``NAME: value unit (ratio X)``: the one line every script ends with."""
    return f"{name}: {value:.4g} {unit} (ratio {ratio_value:.3g})"


# ---------------------------------------------------------------------- output


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return relative(value)
    return value


def relative(path: Path) -> str:
    """``path`` relative to the repository when inside it (results never name machine paths)."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return path.name


def write_results(name: str, data: Mapping[str, Any], directory: Path | None = None) -> Path:
    """Write ``<directory or bench/results>/<name>.json`` and return its path."""
    target = directory or RESULTS
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"{name}.json"
    path.write_text(json.dumps(_jsonable(data), indent=2) + "\n")
    return path


def machine_info(rabbitmq_version: str | None) -> dict[str, Any]:
    """The machine the figures come from (no paths, no host names)."""
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "os": f"{platform.system()} {platform.release()}",
        "rabbitmq": rabbitmq_version,
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["ram_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    return info


async def rabbitmq_version(url: str) -> str | None:
    connection = await aio_pika.connect(url, timeout=30)
    try:
        properties: Any = connection.transport.connection.server_properties  # type: ignore[union-attr]
        version = properties.get("version")
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:
        return None
    finally:
        await connection.close()


def success_reply(command: Command) -> TaskReply:
    """A no-op service's successful answer to ``command`` (what the benchmarks' fake services send)."""
    return TaskReply(
        message_id=uuid.uuid4().hex,
        sent_at=now(),
        release_id=command.release_id,
        service=command.service,
        in_reply_to=command.message_id,
        action=command.action,
        outcome=SUCCESS_BY_ACTION[command.action],
        instance_id=f"bench-{command.service}",
        sdk_version="bench",
    )
