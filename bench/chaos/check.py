"""The end of a chaos run: let every release settle, then check every guarantee from the store and from
what every service journaled it did (``bench/chaos_service.py``)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bench.chaos.common import TERMINAL, log
from bench.chaos_cluster import coordinator_switches, recovery_figures, switch_figures
from bench.chaos_plan import (
    Effects,
    failed_by_instance_kills,
    faults_off_plan,
    kept_data,
    misplaced_faults,
    outcome_figures,
    to_discard,
    unexplained_endings,
    unplanned_ends,
)
from bench.chaos_service import read_journal
from coordinator.store import store_for
from schemas.enums import EventKind, ReleaseState, TaskState
from schemas.messages import CancelRelease

if TYPE_CHECKING:
    from bench.chaos.run import Chaos

Documents = list[dict[str, Any]]


async def stored(store_url: str, database: str) -> tuple[Documents, Documents]:
    """Every release and every audit event, as documents keyed by ``_id``, read through the store."""
    store = store_for(store_url, database)
    await store.open()
    try:
        releases = [r async for batch in store.export_releases(500) for r in batch]
        events = [e async for batch in store.export_events(500) for e in batch]
    finally:
        await store.close()
    as_docs = [{**r.model_dump(mode="python"), "_id": r.id} for r in releases]
    return as_docs, [{**e.model_dump(mode="python"), "_id": e.id} for e in events]


async def settle(chaos: Chaos) -> None:
    """Faults are over: let every release reach a final state (or the resting staged state)."""
    for proc in chaos.procs.values():
        proc.check()
    log("settling: waiting for every release to finish")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        releases, _ = await chaos.stored()
        open_ = [r for r in releases if ReleaseState(r["state"]) not in TERMINAL]
        staged = [r for r in open_ if r["state"] == ReleaseState.STAGED.value]
        for release in staged:  # created by a retried request the operator never saw: clean up
            await chaos.operator.admin(CancelRelease(release_id=release["_id"], reason="chaos cleanup"))
        if not open_:
            log("settled")
            return
        await asyncio.sleep(1)


def journaled_effects(chaos: Chaos) -> dict[tuple[str, str], dict[str, float]]:
    """(release, service) -> effect -> when the service (any of its instances) first did it."""
    effects: dict[tuple[str, str], dict[str, float]] = {}
    for service in chaos.services:
        for instance in chaos.instances(service):
            for entry in read_journal(chaos.journal(instance)):
                done = effects.setdefault((str(entry["release"]), service), {})
                effect, at = str(entry["effect"]), float(str(entry["at"]))
                done[effect] = min(at, done.get(effect, at))
    return effects


async def check(chaos: Chaos) -> None:
    stored_releases, events = await chaos.stored()
    releases = {r["_id"]: r for r in stored_releases}
    effects = journaled_effects(chaos)
    report = chaos.report
    states = Counter(r["state"] for r in releases.values())
    report.figures["releases driven"] = len(chaos.operator.release_ids)
    report.figures["releases stored"] = len(releases)
    for state in ("published", "canceled", "failed"):
        report.figures[f"releases {state}"] = states.get(state, 0)
    planned = {r: s.value for r, s in chaos.operator.planned.items()}
    report.figures.update(outcome_figures(planned, releases))
    report.unplanned = unplanned_ends(planned, releases)
    report.releases = driven_releases(chaos, releases)
    report.misplaced = misplaced_faults(report.injected, chaos.operator.numbers)
    report.unexplained = unexplained_endings(report.releases, report.injected)
    report.off_plan = faults_off_plan(chaos.plan, report.injected)
    report.figures["planned faults tried"] = len(report.injected)
    report.figures["planned faults that found nothing to act on"] = sum(
        1 for r in report.injected if not r["applied"]
    )
    check_releases(chaos.operator.release_ids, releases, effects, report.violations)
    check_discards(releases, effects, chaos)
    check_versions(releases, report.violations)
    check_messages(chaos.injector.invalid, events, chaos)
    if chaos.nodes is not None:
        report.figures.update(recovery_figures(chaos.nodes.stops, events, chaos.operator.release_ids))
        report.figures.update(switch_figures(coordinator_switches(chaos.workdir() / "coordinator.log")))
    v = report.violations
    if chaos.config.instances > 1:
        v["releases failed only because a task-service instance was killed"] = len(
            failed_by_instance_kills(report.releases, report.injected)
        )
    v["coordinator crashes not injected"] = len(chaos.procs["coordinator"].uncaused_exits)
    v["service crashes not injected"] = sum(
        len(chaos.procs[i].uncaused_exits) for s in chaos.services for i in chaos.instances(s)
    )


def driven_releases(chaos: Chaos, releases: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each driven release, in creation order: its number in the plan, planned and actual end, the
    coordinator's reason, and when it entered its final state (None if it did not end)."""
    driven = []
    operator = chaos.operator
    for release_id in operator.release_ids:
        release = releases.get(release_id, {})
        state = release.get("state")
        ended = (release.get("entered") or {}).get(state) if state in TERMINAL else None
        driven.append(
            {
                "number": operator.numbers[release_id],
                "id": release_id,
                "planned": operator.planned[release_id].value,
                "state": state,
                "reason": release.get("state_reason"),
                "ended": round(ended.timestamp(), 3) if ended else None,
            }
        )
    return driven


def check_releases(
    driven: list[str], releases: dict[str, dict[str, Any]], effects: Effects, v: dict[str, int]
) -> None:
    """Lost, stuck, published while a service never staged, published by a service though it ended
    canceled or failed."""
    v["releases lost"] = sum(1 for rid in driven if rid not in releases)
    v["releases stuck in a non-final state"] = sum(
        1 for r in releases.values() if ReleaseState(r["state"]) not in TERMINAL
    )
    v["releases published while a service never staged"] = sum(
        1
        for rid, r in releases.items()
        if r["state"] == "published"
        and any(
            not _staged_before_published(effects.get((rid, s), {})) or t["state"] != TaskState.PUBLISHED.value
            for s, t in r["tasks"].items()
        )
    )
    v["services that published a release that ended canceled or failed"] = sum(
        1
        for (rid, _service), done in effects.items()
        if "published" in done and releases.get(rid, {}).get("state") in ("canceled", "failed")
    )


def check_discards(releases: dict[str, dict[str, Any]], effects: Effects, chaos: Chaos) -> None:
    """Every release that ended canceled, or failed before publication, is discarded everywhere it was
    staged (by the services' journals)."""
    chaos.report.figures["staged data of canceled or failed releases, to discard"] = len(
        to_discard(releases, effects)
    )
    kept = kept_data(releases, effects)
    for release_id, service in kept:
        log(f"{service} kept staged data of {release_id}, which ended {releases[release_id]['state']}")
    chaos.report.violations["services that kept staged data of a release that ended canceled or failed"] = (
        len(kept)
    )


def check_versions(releases: dict[str, dict[str, Any]], v: dict[str, int]) -> None:
    finals = [r["final_version"] for r in releases.values() if r.get("final_version")]
    v["duplicate final versions"] = len(finals) - len(set(finals))
    by_publication = sorted(
        (r for r in releases.values() if r.get("final_version")),
        key=lambda r: r["entered"]["publishing"],
    )
    keys = [tuple(int(x) for x in r["final_version"].split(".")) for r in by_publication]
    v["final versions not increasing in publication order"] = sum(
        1 for a, b in itertools.pairwise(keys) if b <= a
    )


def check_messages(invalid: set[str], events: Documents, chaos: Chaos) -> None:
    """Spoofed, malformed and oversize messages: none accepted, each dead-lettered."""
    accepted = {
        e.get("message_id")
        for e in events
        if e["kind"] in (EventKind.ACCEPTED.value, EventKind.TRANSITION.value)
    }
    v, figures = chaos.report.violations, chaos.report.figures
    v["spoofed or malformed messages accepted"] = len(invalid & accepted)
    dead = {e.get("message_id") for e in events if e["kind"] == EventKind.DEAD_LETTERED.value}
    figures["invalid messages injected"] = len(invalid)
    figures["invalid messages dead-lettered"] = len(invalid & dead)
    v["invalid messages neither dead-lettered nor refused"] = len(invalid - dead)


def _staged_before_published(done: Mapping[str, float]) -> bool:
    """The service staged its data before it made it public (as its journal says)."""
    return "staged" in done and "published" in done and done["staged"] <= done["published"]
