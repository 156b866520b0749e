"""How the scale benchmarks time an operator request: through the coordinator (an operator client), as the
store queries alone, as the coordinator's own handling in this process, and as the real ``rc`` command."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bench.lib import ms, now, summary
from bench.scale_store import COMMON_STUDY, Site, rare_study
from rc_cli.client import expect_ok
from schemas.messages import (
    AdminAnswer,
    AdminRequest,
    ListEvents,
    ListReleases,
    ShowRelease,
    ShowStudy,
    encode,
)

#: The timed operator requests, in the order they are timed.
OPERATIONS = ("list", "show", "study", "study_rare", "events")


def random_ids(stored: int, count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"RE_{rng.randint(1, stored):08d}" for _ in range(count)]


def admin_operation(name: str, release_id: str, stored: int) -> Any:
    """The operator request ``name`` (the defaults of the ``rc`` command)."""
    match name:
        case "list":
            return ListReleases()
        case "show":
            return ShowRelease(release_id=release_id)
        case "study":
            return ShowStudy(study=COMMON_STUDY)
        case "study_rare":
            return ShowStudy(study=rare_study(min(stored, 42)))
        case _:
            return ListEvents(release_id=release_id)


async def store_queries(site: Site, name: str, release_id: str) -> dict[str, float]:
    """The store calls the coordinator makes for request ``name``, one after the other (the coordinator
    makes those of ``study show`` at once); ms per call."""
    store = site.direct
    assert store is not None
    timed: dict[str, float] = {}

    async def timing(label: str, awaitable: Awaitable[Any]) -> None:
        started = time.perf_counter()
        await awaitable
        timed[label] = ms(time.perf_counter() - started)

    match name:
        case "list":
            await timing("list_releases", store.list_releases(50))
        case "show":
            await timing("get", store.get(release_id))
            await timing("event_page", store.event_page(release_id, 20))
        case "study" | "study_rare":
            study = COMMON_STUDY if name == "study" else rare_study(min(site.stored, 42))
            await timing("study_summary", store.study_summary(study))
            await timing("study_releases", store.study_releases(study, 20))
        case _:
            await timing("state_of", store.state_of(release_id))
            await timing("event_page", store.event_page(release_id, 50))
    return timed


async def time_sites(
    sites: Sequence[Site], calls: int, measure: Callable[[Site, str, str], Awaitable[dict[str, float]]]
) -> dict[str, dict[str, Any]]:
    """``calls`` rounds; in each, every operation on every site in turn. Per site: ms summaries of every
    operation (``<op>_ms``) and of every labelled part of it (``<op>.<part>_ms``)."""
    ids = {site.label: random_ids(site.stored, calls, 7) for site in sites}
    samples: dict[str, dict[str, list[float]]] = {site.label: {} for site in sites}
    for round_ in range(calls):
        for name in OPERATIONS:
            for site in sites:
                parts = await measure(site, name, ids[site.label][round_])
                into = samples[site.label]
                into.setdefault(f"{name}_ms", []).append(round(sum(parts.values()), 3))
                if len(parts) > 1:
                    for part, value in parts.items():
                        into.setdefault(f"{name}.{part}_ms", []).append(value)
    return {
        site.label: {"stored": site.stored, **{k: summary(v) for k, v in samples[site.label].items()}}
        for site in sites
    }


async def through_coordinator(site: Site, name: str, release_id: str) -> dict[str, float]:
    assert site.client is not None
    started = time.perf_counter()
    expect_ok(await site.client.request(admin_operation(name, release_id, site.stored)))
    return {"request": ms(time.perf_counter() - started)}


async def coordinator_in_process(site: Site, name: str, release_id: str) -> dict[str, float]:
    """The coordinator's own handling of the request (``Coordinator.execute`` + encoding the answer), in
    this process, on the same store: the store queries and the coordinator's work, without the broker."""
    assert site.in_process is not None
    request = AdminRequest(
        message_id=uuid.uuid4().hex,
        sent_at=now(),
        operator="bench",
        operation=admin_operation(name, release_id, site.stored),
    )
    started = time.perf_counter()
    result = await site.in_process.execute(request, "bench")
    answer = AdminAnswer(
        message_id=uuid.uuid4().hex, sent_at=now(), in_reply_to=request.message_id, ok=True, result=result
    )
    encode(answer)
    return {"execute": ms(time.perf_counter() - started)}


def time_rc(url: str, namespace: str, *args: str) -> float:
    """One run of the real ``rc`` command (a new interpreter), in ms."""
    env = {**os.environ, "RC_AMQP_URL": url, "RC_NAMESPACE": namespace, "RC_TIMEOUT": "60"}
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "rc_cli", *args], env=env, capture_output=True, timeout=120, check=False
    )
    elapsed = ms(time.perf_counter() - started)
    if completed.returncode != 0:
        raise RuntimeError(
            f"rc {' '.join(args)} failed ({completed.returncode}): {completed.stderr.decode()[-500:]}"
        )
    return elapsed


async def rc_commands(url: str, namespace: str, releases: int) -> dict[str, float]:
    """One run of each real ``rc`` command on the large site, in ms."""
    middle = f"RE_{max(1, releases // 2):08d}"
    runs = {
        "release list": ("release", "list"),
        "release show": ("release", "show", middle),
        "study show": ("study", "show", COMMON_STUDY),
        "release events": ("release", "events", middle),
        "--help only": ("--help",),
    }
    return {name: await asyncio.to_thread(time_rc, url, namespace, *argv) for name, argv in runs.items()}
