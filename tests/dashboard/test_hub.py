"""The live hub without a broker: which page gets which update, catching up, and reading until confirmed."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from rc_dashboard import live
from rc_dashboard.feed import BrokerFeed
from rc_dashboard.gateway import Gateway
from rc_dashboard.live import Hub, Subscription
from schemas.documents import ReleaseView, Task
from schemas.enums import ReleaseState, TaskState
from schemas.messages import Progress, ReleaseResult, encode
from tests.dashboard.test_units import T0, view


def parts(release: ReleaseView, before: ReleaseView | None = None) -> dict[str, str]:
    portal = release.tasks["portal"]
    return {
        f"row-{release.id}": f"{release.state} {portal.progress}",
        f"task-{release.id}-portal": f"{portal.progress} {portal.last_message_id}",
    }


class FakeGateway:
    """Answers ``show`` from a list of views, one per read (the last one again once exhausted)."""

    def __init__(self, *views: ReleaseView) -> None:
        self.views = list(views)
        self.reads = 0
        #: Cleared: every read waits until it is set again (a read "under way").
        self.answering = asyncio.Event()
        self.answering.set()
        self.read_begun = asyncio.Event()

    async def release(self, release_id: str, events: int = 0) -> ReleaseResult:
        self.reads += 1
        self.read_begun.set()
        current = self.views[min(self.reads, len(self.views)) - 1]
        await self.answering.wait()
        return ReleaseResult(release=current)


def hub_with(gateway: FakeGateway | None = None) -> Hub:
    return Hub(cast(Gateway, gateway or FakeGateway()), parts, poll_seconds=60, min_interval=0)


def at_progress(
    percent: float, seconds: float, message: str = "m", release_id: str = "RE_ABCDEFGH"
) -> ReleaseView:
    task = Task(service="portal", progress=percent, last_message_id=message)
    return view(portal=task).model_copy(
        update={"updated_at": T0 + timedelta(seconds=seconds), "id": release_id}
    )


def drained(subscription: Subscription) -> list[dict[str, Any]]:
    events = []
    while not subscription.queue.empty():
        chunk = subscription.queue.get_nowait()
        assert chunk is not None
        text = chunk.decode()
        if "event: update" in text or "event: reload" in text:
            kind = text.split("event: ")[1].split("\n")[0]
            events.append({"event": kind, **json.loads(text.split("data: ")[1])})
    return events


async def next_update(subscription: Subscription) -> dict[str, Any]:
    while True:
        chunk = await subscription.queue.get()
        assert chunk is not None
        if b"event: update" in chunk:
            data: dict[str, Any] = json.loads(chunk.decode().split("data: ")[1])
            return data


async def test_each_page_gets_the_updates_it_shows_once() -> None:
    hub = hub_with()
    listing = hub.subscribe(None, None)
    mine = hub.subscribe("RE_ABCDEFGH", None)
    other = hub.subscribe("RE_OTHER000", None)
    hub.observe(at_progress(10, 1))
    hub.observe(at_progress(10, 1))  # the same view again: nothing new
    hub.observe(at_progress(5, 0))  # an older view: ignored
    hub.observe(at_progress(20, 2))

    assert [set(u["parts"]) for u in drained(listing)] == [{"row-RE_ABCDEFGH"}] * 2
    updates = drained(mine)
    assert [u["parts"]["task-RE_ABCDEFGH-portal"] for u in updates] == ["10.0 m", "20.0 m"]
    assert drained(other) == []


async def test_a_page_that_reconnects_gets_what_it_missed_or_reloads() -> None:
    hub = hub_with()
    hub.observe(at_progress(10, 1))
    seen = hub.last_id
    hub.observe(at_progress(20, 2))
    hub.observe(at_progress(30, 3))
    replayed = drained(hub.subscribe("RE_ABCDEFGH", seen))
    assert [u["parts"]["task-RE_ABCDEFGH-portal"] for u in replayed] == ["20.0 m", "30.0 m"]
    assert drained(hub.subscribe("RE_ABCDEFGH", hub.last_id)) == []
    assert [u["event"] for u in drained(hub.subscribe(None, "0badc0de-1"))] == ["reload"]  # restarted

    for second in range(4, 4 + live.HISTORY + 1):
        hub.observe(at_progress(second % 100, second))
    assert [u["event"] for u in drained(hub.subscribe(None, seen))] == ["reload"]  # too far behind


async def test_a_page_too_far_behind_is_dropped_and_reconnects() -> None:
    hub = hub_with()
    slow = hub.subscribe("RE_ABCDEFGH", None)
    for second in range(1, live.QUEUE_LIMIT + 5):
        hub.observe(at_progress(second % 100, second))
    assert hub.subscribers == 0
    assert slow.queue.get_nowait() is None  # the stream ends; the browser reconnects with Last-Event-ID


async def test_a_hint_reads_the_release_until_the_coordinator_shows_the_message() -> None:
    # The coordinator has not stored the progress report yet on the first two reads.
    gateway = FakeGateway(at_progress(10, 1, "old"), at_progress(10, 1, "old"), at_progress(40, 2, "new"))
    hub = hub_with(gateway)
    page = hub.subscribe("RE_ABCDEFGH", None)
    hub.hint("RE_ABCDEFGH", "portal", "new")
    await asyncio.wait_for(hub._refreshing["RE_ABCDEFGH"], 10)
    assert gateway.reads == 3
    assert [u["parts"].get("task-RE_ABCDEFGH-portal") for u in drained(page)] == ["10.0 old", "40.0 new"]


async def test_a_hint_during_a_read_causes_one_more_read() -> None:
    gateway = FakeGateway(at_progress(10, 1), at_progress(20, 2))
    gateway.answering.clear()
    hub = hub_with(gateway)
    hub.hint("RE_ABCDEFGH")
    hub.hint("RE_ABCDEFGH")  # before the read began: the read will see it anyway
    reading = hub._refreshing["RE_ABCDEFGH"]
    await asyncio.wait_for(gateway.read_begun.wait(), 10)
    hub.hint("RE_ABCDEFGH")  # while the read is under way
    hub.hint("RE_ABCDEFGH")
    gateway.answering.set()
    await asyncio.wait_for(reading, 10)
    assert gateway.reads == 2
    assert hub.known["RE_ABCDEFGH"].view.tasks["portal"].progress == 20


async def test_ended_releases_are_forgotten_beyond_a_bound_but_open_ones_never() -> None:
    hub = hub_with()
    hub.observe(at_progress(10, 1, release_id="RE_OPEN0000"))
    for number in range(live.KEEP_ENDED + 20):
        ended = view(ReleaseState.PUBLISHED).model_copy(update={"id": f"RE_{number:08d}"})
        hub.observe(ended)
    assert len(hub.known) == live.KEEP_ENDED + 1
    assert hub.open_releases() == ["RE_OPEN0000"]


def report(percent: float, message_id: str, service: str = "portal") -> Progress:
    return Progress(
        message_id=message_id,
        sent_at=T0,
        release_id="RE_ABCDEFGH",
        service=service,
        in_reply_to="start-1",
        percent=percent,
        note=f"at {percent}",
        instance_id="i-1",
    )


async def test_a_progress_report_shows_before_the_coordinator_stored_it() -> None:
    # The coordinator is slow: its reads still show 10 % when the report of 40 % arrives.
    slow = at_progress(10, 1, "old")
    running = slow.model_copy(update={"state": ReleaseState.RUNNING})
    running = running.model_copy(
        update={"tasks": {"portal": running.tasks["portal"].model_copy(update={"state": TaskState.RUNNING})}}
    )
    gateway = FakeGateway(running)
    gateway.answering.clear()
    hub = hub_with(gateway)
    hub.observe(running)
    page = hub.subscribe("RE_ABCDEFGH", hub.last_id)
    hub.progress(report(40, "new"))
    update = await asyncio.wait_for(next_update(page), 5)  # pushed within FLUSH_SECONDS
    assert update["parts"]["task-RE_ABCDEFGH-portal"] == "40.0 new"
    assert hub.shown(running).tasks["portal"].progress == 40

    # The coordinator's view catches up: the report is dropped, nothing changes on the page.
    stored = running.model_copy(update={"updated_at": running.updated_at + timedelta(seconds=1)})
    stored = stored.model_copy(
        update={
            "tasks": {
                "portal": stored.tasks["portal"].model_copy(
                    update={"progress": 40.0, "last_message_id": "new"}
                )
            }
        }
    )
    hub.observe(stored)
    assert hub.overlays._reports == {}
    assert drained(page) == []
    gateway.answering.set()


async def test_a_report_the_coordinator_would_refuse_is_not_shown() -> None:
    hub = hub_with()
    staged = at_progress(100, 1).model_copy(update={"state": ReleaseState.STAGED})
    hub.observe(staged)
    hub.progress(report(50, "late"))  # the release is no longer running
    hub.progress(report(50, "stranger", service="search"))  # not one of its services
    assert hub.overlays._reports == {}
    assert hub.shown(staged) == staged


class Heard:
    """What the broker feed passes on."""

    def __init__(self) -> None:
        self.reports: list[str] = []
        self.hints: list[tuple[str, str | None, str | None]] = []

    def observe(self, view: ReleaseView, *, complete: bool = True) -> None: ...

    def hint(self, release_id: str, service: str | None = None, message_id: str | None = None) -> None:
        self.hints.append((release_id, service, message_id))

    def progress(self, report: Progress) -> None:
        self.reports.append(report.message_id)

    def connection_changed(self, connected: bool, text: str, *, progress_feed: bool = False) -> None: ...


@dataclass
class Delivery:
    body: bytes
    routing_key: str
    user_id: str | None


async def test_only_reports_the_coordinator_would_trust_are_shown_at_once() -> None:
    heard = Heard()
    feed = BrokerFeed(
        "amqp://u:p@127.0.0.1/", "rc", heard, reconnect_seconds=1, trusted_users=frozenset({"ops"})
    )
    key = "reply.portal.progress"
    for message_id, user in (("own", "portal"), ("trusted", "ops"), ("spoofed", "search"), ("nobody", None)):
        await feed._on_reply(cast(Any, Delivery(encode(report(10, message_id)), key, user)))
    await feed._on_reply(cast(Any, Delivery(b"{not json", key, "portal")))
    assert heard.reports == ["own", "trusted"]
    reply = b'{"release_id": "RE_ABCDEFGH", "service": "portal", "message_id": "r1", "kind": "reply"}'
    for user in ("portal", "search", "ops"):
        await feed._on_reply(cast(Any, Delivery(reply, "reply.portal.reply", user)))
    assert heard.hints == [("RE_ABCDEFGH", "portal", "r1")] * 2  # not the one from "search"
