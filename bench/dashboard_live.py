"""Part 2 of ``bench/dashboard.py``: many live pages open while a release of many services runs.

See that module's docstring for the method. Each page is read as a browser reads it: ``GET`` the page,
then its ``/live`` stream from the page's ``data-since``; every update is recorded with its arrival time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aio_pika
import aiohttp

from bench.lib import (
    Announcements,
    Child,
    Children,
    admin_client,
    connect_store,
    cpu_seconds,
    create_release,
    declare_topology,
    end_run,
    ms,
    new_namespace,
    register_services,
    rss_kib,
    say,
    service_names,
    start_coordinator,
    start_store,
    summary,
)
from rc_cli.client import AdminClient, expect_ok
from schemas.enums import ReleaseState
from schemas.messages import PublishRelease
from schemas.topology import Topology

SINCE = re.compile(r'data-since="([^"]+)"')
NOTE = re.compile(r"p(\d+)@(\d+)")


async def start_dashboard(children: Children, url: str, namespace: str) -> tuple[Child, str]:
    """``rc-dashboard`` in a child process on a free port; its base URL."""
    child = children.add(
        Child(
            "dashboard",
            [
                sys.executable,
                "-m",
                "bench.dashboard_children",
                "serve",
                "--namespace",
                namespace,
                "--amqp-url",
                url,
            ],
            env={"RC_TIMEOUT": "60", "RC_LOG_LEVEL": "warning", "RC_TRUSTED_USERS": "guest"},
        )
    )
    port = (await child.expect("READY ", 60)).split()[1]
    return child, f"http://127.0.0.1:{port}"


class LivePage:
    """One open page: ``GET`` it, then read its ``/live`` stream; records when each update arrived."""

    def __init__(self, http: aiohttp.ClientSession, base: str, release_id: str | None) -> None:
        self.http = http
        self.base = base
        self.release_id = release_id
        #: Event id -> (arrival, the JSON as received): parsed after the run, so that parsing 200 pages'
        #: updates in this one process does not delay the arrival times taken.
        self.received: dict[str, tuple[float, str]] = {}
        self.connected = asyncio.Event()
        self.published = asyncio.Event()

    @property
    def updates(self) -> dict[str, tuple[float, dict[str, Any]]]:
        return {key: (at, json.loads(data)) for key, (at, data) in self.received.items()}

    async def run(self) -> None:
        path = f"/releases/{self.release_id}" if self.release_id else "/"
        async with self.http.get(self.base + path) as response:
            since = SINCE.search(await response.text())
        assert since is not None, f"no data-since on {path}"
        stream = f"{self.base}/live?since={since.group(1)}"
        if self.release_id:
            stream += f"&release={self.release_id}"
        async with self.http.get(stream, timeout=aiohttp.ClientTimeout(total=None)) as response:
            fields: dict[str, str] = {}
            async for raw in response.content:
                line = raw.decode().rstrip("\n")
                if line:
                    name, _, value = line.partition(": ")
                    fields[name] = value
                    continue
                self.dispatch(fields)
                fields = {}

    def dispatch(self, fields: dict[str, str]) -> None:
        if fields.get("event") == "status":
            self.connected.set()
        elif fields.get("event") == "update":
            self.received.setdefault(fields["id"], (time.time(), fields["data"]))
            if '"state":"published"' in fields["data"]:
                self.published.set()

    def first_seen(self, state: str) -> float | None:
        times = [at for at, update in self.updates.values() if update["state"] == state]
        return min(times) if times else None

    def notes_seen(self) -> dict[tuple[str, int], float]:
        """``(service, step) -> arrival`` of every progress note shown in the updates."""
        seen: dict[tuple[str, int], float] = {}
        for at, update in self.updates.values():
            for key, html in update["parts"].items():
                if key.startswith("task-") and (note := NOTE.search(html)):
                    service = key.split("-", 2)[2]
                    seen.setdefault((service, int(note.group(1))), at)
        return seen


async def bare_progress_consumer(
    url: str, namespace: str, arrivals: dict[tuple[str, int], float]
) -> Callable[[], Awaitable[None]]:
    """The baseline: an AMQP consumer of the same progress reports, recording their arrival."""
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    queue = await channel.declare_queue("", exclusive=True)
    await queue.bind(Topology(namespace).replies_exchange, routing_key="reply.*.progress")

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        data = json.loads(message.body)
        if note := NOTE.fullmatch(data.get("note") or ""):
            arrivals.setdefault((data["service"], int(note.group(1))), time.time())

    await queue.consume(on_message, no_ack=True)
    return connection.close


def delays_ms(
    pages: Sequence[LivePage], arrivals: dict[tuple[str, int], float], sent: dict[tuple[str, int], float]
) -> dict[str, Any]:
    shown = [ms(at - sent[key]) for page in pages for key, at in page.notes_seen().items() if key in sent]
    bare = [ms(arrivals[key] - sent[key]) for key in sent if key in arrivals]
    seen_share = [len(page.notes_seen()) / len(sent) for page in pages] if sent else [0.0]
    return {
        "page": summary(shown),
        "bare_consumer": summary(bare),
        "notes_seen_share_min": round(min(seen_share), 4),
    }


def completeness(pages: Sequence[LivePage]) -> dict[str, Any]:
    """Every page of a kind must have received every update sent to that kind."""
    union: set[str] = set().union(*(page.received for page in pages)) if pages else set()
    missing = [len(union - set(page.received)) for page in pages]
    return {
        "pages": len(pages),
        "updates": len(union),
        "pages_missing_some": sum(1 for m in missing if m),
        "most_missed": max(missing, default=0),
    }


async def start_host(children: Children, url: str, namespace: str, args: argparse.Namespace) -> Child:
    services = ",".join(service_names(args.services))
    argv = [sys.executable, "-m", "bench.dashboard_children", "host", "--amqp-url", url]
    argv += ["--namespace", namespace, "--services", services, "--steps", str(args.steps)]
    host = children.add(Child("host", [*argv, "--interval", str(args.interval)]))
    await host.expect("READY", 120)
    return host


async def watch_the_release(
    args: argparse.Namespace,
    base: str,
    client: AdminClient,
    announcements: Announcements,
    host: Child,
    dashboard: Child,
) -> tuple[list[LivePage], str, dict[str, Any]]:
    """Open the pages, run a release to published, wait until every page shows it; the pages, the
    release and the dashboard's CPU, run time and memory."""
    release_id = await create_release(client, "live pages", 60)
    await announcements.wait(release_id, ReleaseState.INITIALIZING, 60)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        pages = [LivePage(http, base, release_id if i % 2 == 0 else None) for i in range(args.pages)]
        say(f"opening {args.pages} live pages (half the release, half the list)")
        readers = [asyncio.create_task(page.run()) for page in pages]
        await asyncio.wait_for(asyncio.gather(*(p.connected.wait() for p in pages)), 120)
        cpu_before, started = cpu_seconds(dashboard.pid), time.monotonic()
        say(f"the release runs: {args.services} services, {args.steps} progress reports each")
        host.send("go")
        await announcements.wait(release_id, ReleaseState.STAGED, 600)
        expect_ok(await client.request(PublishRelease(release_id=release_id)))
        await announcements.wait(release_id, ReleaseState.PUBLISHED, 120)
        await asyncio.wait_for(asyncio.gather(*(p.published.wait() for p in pages)), 60)
        figures = {
            "dashboard_cpu_s": round(cpu_seconds(dashboard.pid) - cpu_before, 2),
            "run_s": round(time.monotonic() - started, 2),
            "dashboard_rss_kib": rss_kib(dashboard.pid),
        }
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    return pages, release_id, figures


def analyse(
    pages: Sequence[LivePage],
    arrivals: dict[tuple[str, int], float],
    announcements: Announcements,
    release_id: str,
) -> dict[str, Any]:
    release_pages = [p for p in pages if p.release_id]
    sent = {key: int(note) / 1000 for key, note in _notes_sent(pages).items()}
    return {
        "complete": {
            "release_pages": completeness(release_pages),
            "list_pages": completeness([p for p in pages if not p.release_id]),
        },
        "progress_delay_ms": delays_ms(release_pages, arrivals, sent),
        "state_delay_ms": _state_delays(pages, announcements, release_id),
    }


async def live(args: argparse.Namespace, url: str) -> dict[str, Any]:
    namespace = new_namespace("dash-live")
    services = service_names(args.services)
    result: dict[str, Any] = {"services": args.services, "pages": args.pages}
    result |= {"steps": args.steps, "interval_s": args.interval}
    async with Children() as children:
        store_db = client = close_bare = None
        try:
            store = await start_store(children, namespace)
            await declare_topology(url, namespace)
            host = await start_host(children, url, namespace, args)
            store_db = await connect_store(store.url, namespace)
            await register_services(store_db, services)
            await start_coordinator(children, url, store.url, namespace)
            dashboard, base = await start_dashboard(children, url, namespace)
            announcements = Announcements()
            client = await admin_client(url, namespace, 120, announcements)
            arrivals: dict[tuple[str, int], float] = {}
            close_bare = await bare_progress_consumer(url, namespace, arrivals)
            pages, release_id, figures = await watch_the_release(
                args, base, client, announcements, host, dashboard
            )
            result |= figures | analyse(pages, arrivals, announcements, release_id)
        finally:
            if close_bare is not None:
                await close_bare()
            await end_run(url, namespace, services, client, store_db)
    return result


def _notes_sent(pages: Sequence[LivePage]) -> dict[tuple[str, int], str]:
    """``(service, step) -> sent ms`` of every note any page showed (the note says when it was sent)."""
    sent: dict[tuple[str, int], str] = {}
    for page in pages:
        for update in (u for _, u in page.updates.values()):
            for key, html in update["parts"].items():
                if key.startswith("task-") and (note := NOTE.search(html)):
                    sent[(key.split("-", 2)[2], int(note.group(1)))] = note.group(2)
    return sent


def _state_delays(pages: Sequence[LivePage], announcements: Announcements, release_id: str) -> dict[str, Any]:
    """From the announcement reaching a bare AMQP listener (this process) to each page showing the state."""
    delays: list[float] = []
    for state in (ReleaseState.RUNNING, ReleaseState.STAGED, ReleaseState.PUBLISHING, ReleaseState.PUBLISHED):
        heard = announcements.arrived.get((release_id, state))
        if heard is None:
            continue
        heard_wall = time.time() - (time.monotonic() - heard)
        delays += [ms(seen - heard_wall) for page in pages if (seen := page.first_seen(state.value))]
    return summary(delays)
