"""The memory part of the scale benchmark: a fresh coordinator with 3 no-op services, its resident memory
(``VmRSS``) after ``--memory-first`` full releases (create -> staged -> publish -> published) and after
``--memory-releases``."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from bench.lib import (
    Announcements,
    Children,
    StoreHandle,
    admin_client,
    connect_store,
    declare_topology,
    drive_release,
    end_run,
    new_namespace,
    register_services,
    rss_kib,
    say,
    start_coordinator,
    start_hosts,
    start_store,
)
from bench.scale_store import SERVICES

Drive = Callable[[str, float], Awaitable[dict[str, float]]]


async def memory(args: argparse.Namespace, url: str) -> dict[str, Any]:
    namespace = new_namespace("mem")
    services = list(SERVICES)
    result: dict[str, Any] = {"namespace": namespace, "services": len(services)}
    async with Children() as children:
        store_db = None
        client = None
        try:
            store = await start_store(children, namespace)
            await declare_topology(url, namespace)
            await start_hosts(children, url, namespace, services, 1)
            store_db = await connect_store(store.url, namespace)
            await register_services(store_db, services)
            coordinator = await start_coordinator(children, url, store.url, namespace)
            announcements = Announcements()
            client = await admin_client(url, namespace, 120, announcements)
            drive = partial(drive_release, client, announcements, store_db)
            result.update(await growth(args, drive, coordinator.pid, store))
            await client.close()
            client = None
            await children.stop(coordinator.child)
        finally:
            await end_run(url, namespace, services, client, store_db)
    return result


async def growth(args: argparse.Namespace, drive: Drive, pid: int, store: StoreHandle) -> dict[str, Any]:
    """The coordinator's RSS at the start, after ``--memory-first`` releases (one at a time) and after
    ``--memory-releases`` (``--concurrency`` at once)."""
    rss: dict[str, int] = {"started": rss_kib(pid)}
    done = 0
    started = time.perf_counter()

    async def worker(count: int) -> None:
        nonlocal done
        for _ in range(count):
            await drive(f"mem {done}", 120)
            done += 1
            if done % 100 == 0:
                say(f"{done} releases published")

    await worker(args.memory_first)
    await asyncio.sleep(1)
    rss["first"] = rss_kib(pid)
    say(f"after {done} releases: {rss['first']} KiB")
    left = args.memory_releases - done
    workers = max(1, min(args.concurrency, left))
    await asyncio.gather(
        *(worker(left // workers + (1 if i < left % workers else 0)) for i in range(workers))
    )
    await asyncio.sleep(1)
    rss["last"] = rss_kib(pid)
    say(f"after {done} releases: {rss['last']} KiB")
    return {
        "releases": done,
        "first": args.memory_first,
        "rss_kib": rss,
        "store_rss_kib": rss_kib(store.pid) if store.pid else None,
        "growth": round(rss["last"] / rss["first"] - 1, 4),
        "releases_per_s": round(done / (time.perf_counter() - started), 2),
        "concurrency": workers,
    }
