"""The dashboard under load: page latency with many releases stored, and many live pages (issue 17).

1. **Pages.** A store holding ``--releases`` (10,000) releases (loaded as ``bench.scale`` loads them), its
   coordinator, and ``rc-dashboard`` in a child process. ``--calls`` times each, alternating: the releases
   page (``GET /``, first page of 25) and a release page (``GET /releases/ID``, a random release, with the
   first page of its audit trail), and, as the baseline, the admin requests each page makes, sent with
   ``AdminClient`` as ``rc`` sends them (list of 25; show + events at once). p50 and p95; the ratio says
   what the dashboard adds to the coordinator's answers. Goal: p95 < 150 ms for both pages.
2. **Live pages.** A fresh store and coordinator, ``--services`` (30) services reporting progress
   ``--steps`` times each, and ``--pages`` (200) live pages: half open the release's page, half the
   releases list, each as a browser does (``GET`` the page, then its ``/live`` stream from the page's
   ``data-since``). The release then runs to published. Counted: the updates each page received against
   every update sent to its kind of page (each page must receive every one); the delay from a service
   sending a progress report (its note carries the wall-clock time) to each release page showing it, and
   from the coordinator's announcement of a state to each page showing that state; as baseline, the same
   delays for a bare AMQP consumer of the same messages. Goal: within one second. Also the dashboard's CPU.

    python -m bench.dashboard [--releases 10000] [--calls 50] [--pages 200] [--services 30]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from bench.dashboard_live import live, start_dashboard
from bench.lib import (
    RESULTS,
    Children,
    admin_client,
    amqp_url,
    close_store,
    delete_namespace,
    last_line,
    machine_info,
    ms,
    new_namespace,
    rabbitmq_version,
    ratio,
    say,
    start_coordinator,
    summary,
    write_results,
)
from bench.scale_store import Site, start_preloaded_store
from bench.scale_timing import random_ids
from schemas.messages import ListEvents, ListReleases, ShowRelease

NAME = "dashboard"
GOAL_PAGE_P95_MS = 150.0
GOAL_LIVE_MS = 1000.0
PAGE_SIZE = 25


async def timed(work: Awaitable[Any]) -> float:
    started = time.perf_counter()
    await work
    return ms(time.perf_counter() - started)


# ---------------------------------------------------------------------- 1. pages


async def get_page(http: aiohttp.ClientSession, url: str, must_contain: str) -> None:
    async with http.get(url) as response:
        text = await response.text()
        if response.status != 200 or must_contain not in text:
            raise RuntimeError(f"GET {url} answered {response.status}: {text[:300]}")


async def measure_site(children: Children, url: str, site: Site, args: argparse.Namespace) -> dict[str, Any]:
    """``--calls`` rounds of both pages and their admin requests on the store of ``site``."""
    samples: dict[str, list[float]] = {
        k: [] for k in ("releases_page", "list_request", "release_page", "show_requests")
    }
    await start_preloaded_store(children, site)
    assert site.store is not None
    await start_coordinator(children, url, site.store.url, site.namespace)
    client = await admin_client(url, site.namespace, 120, None)
    try:
        _, base = await start_dashboard(children, url, site.namespace)
        ids = random_ids(site.stored, args.calls + 1, 11)

        async def show_requests(release_id: str) -> None:
            await asyncio.gather(
                client.request(ShowRelease(release_id=release_id, events=0)),
                client.request(ListEvents(release_id=release_id, limit=PAGE_SIZE)),
            )

        async with aiohttp.ClientSession() as http:
            await get_page(http, f"{base}/", "Releases")  # warm-up, not counted
            await get_page(http, f"{base}/releases/{ids[-1]}", ids[-1])
            say(f"{site.stored} stored, {args.calls} rounds: releases page, rc list, release page, rc show")
            for release_id in ids[: args.calls]:
                samples["releases_page"].append(await timed(get_page(http, f"{base}/", "row-RE_")))
                samples["list_request"].append(await timed(client.request(ListReleases(limit=PAGE_SIZE))))
                samples["release_page"].append(
                    await timed(get_page(http, f"{base}/releases/{release_id}", release_id))
                )
                samples["show_requests"].append(await timed(show_requests(release_id)))
    finally:
        await client.close()
    figures: dict[str, Any] = {name: summary(values) for name, values in samples.items()}
    figures["stored"] = site.stored
    figures["load"] = site.load
    figures["ratio_releases_page"] = ratio(figures["releases_page"]["p95"], figures["list_request"]["p95"])
    figures["ratio_release_page"] = ratio(figures["release_page"]["p95"], figures["show_requests"]["p95"])
    return figures


async def pages(args: argparse.Namespace, url: str) -> dict[str, Any]:
    """The pages on a store of ``--small`` releases (where the store costs little), then of ``--releases``."""
    figures: dict[str, Any] = {}
    for label, stored in (("small", min(args.small, args.releases)), ("large", args.releases)):
        site = Site(label, stored, new_namespace("dash"))
        async with Children() as children:
            try:
                say(f"loading {stored} releases into a fresh store")
                figures[label] = await measure_site(children, url, site, args)
            finally:
                if site.direct is not None:
                    await close_store(site.direct)
                await delete_namespace(url, site.namespace, [])
    return figures


# ---------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--releases", type=int, default=10_000, help="releases stored for the pages part")
    parser.add_argument("--small", type=int, default=10, help="releases stored for the small store (10)")
    parser.add_argument("--calls", type=int, default=50, help="timed rounds of each page (default 50)")
    parser.add_argument("--pages", type=int, default=200, help="live pages open at once (default 200)")
    parser.add_argument("--services", type=int, default=30, help="services of the live release (default 30)")
    parser.add_argument("--steps", type=int, default=20, help="progress reports per service (default 20)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between them (default 0.5)")
    parser.add_argument("--only", choices=("pages", "live"), help="run one part only")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where the JSON goes")
    return parser.parse_args(argv)


def _p(figures: dict[str, Any]) -> str:
    """``p50 / p95 / max`` of a summary."""
    return f"{figures.get('median')} / {figures.get('p95')} / {figures.get('max')}"


def report(data: dict[str, Any]) -> str:
    """Print the figures; return the last line."""
    line = ""
    if "pages" in data:
        for p in data["pages"].values():
            print(
                f"pages, {p['stored']} releases stored, p50 / p95 / max ms (goal p95 < {GOAL_PAGE_P95_MS:g}):"
            )
            for label, key, base in (
                ("releases page", "releases_page", "list_request"),
                ("release page", "release_page", "show_requests"),
            ):
                print(f"  {label:<14} {_p(p[key])}   its admin requests alone {_p(p[base])}")
                print(f"  {'':<14} ratio of the p95s {ratio(p[key]['p95'], p[base]['p95'])}")
        p = data["pages"]["large"]
        line = last_line(
            "dashboard_release_page_p95", p["release_page"]["p95"], "ms", p["ratio_release_page"]
        )
    if "live" in data:
        v = data["live"]
        print(
            f"live: {v['pages']} pages, {v['services']} services x {v['steps']} progress reports, "
            f"{v['run_s']} s; dashboard CPU {v['dashboard_cpu_s']} s, RSS {v['dashboard_rss_kib']} KiB"
        )
        for kind, figures in v["complete"].items():
            print(
                f"  {kind}: {figures['updates']} updates sent; "
                f"pages missing some: {figures['pages_missing_some']} of {figures['pages']}"
            )
        progress, state = v["progress_delay_ms"], v["state_delay_ms"]
        print(f"  progress report -> release page, p50 / p95 / max ms: {_p(progress['page'])}")
        print(f"  the same -> a bare AMQP consumer:                  {_p(progress['bare_consumer'])}")
        print(
            f"  share of the reports every release page showed:    >= {progress['notes_seen_share_min']:.0%}"
        )
        print(f"  announcement -> page showing the state, ms:        {_p(state)}")
        if not line:
            base = progress["bare_consumer"]["p95"]
            line = last_line(
                "dashboard_progress_p95", progress["page"]["p95"], "ms", ratio(progress["page"]["p95"], base)
            )
    return line


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = amqp_url()
    data: dict[str, Any] = {
        "benchmark": NAME,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(await rabbitmq_version(url)),
    }
    if args.only in (None, "pages"):
        data["pages"] = await pages(args, url)
    if args.only in (None, "live"):
        data["live"] = await live(args, url)
    return data


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    data = asyncio.run(run(args))
    path = write_results(NAME, data, args.results_dir)
    line = report(data)
    print(f"figures written to {path.name} in {args.results_dir.name}/")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
