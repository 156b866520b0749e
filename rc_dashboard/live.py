"""The live side of the dashboard: one view of every release in sight, pushed to every open page.

Inputs, all funnelled into :meth:`Hub.observe` (a release view from the coordinator) or :meth:`Hub.hint`
(something happened to a release: read it again):

- ``release.<state>`` announcements (the coordinator's view, applied at once);
- replies and progress reports of the services (a hint naming the message; the release is read again
  until the coordinator's view shows that message, so a page never shows what the coordinator refused);
- every page served, every action taken;
- a poll of the open releases every ``poll_seconds`` (hold, notes and edits are not announced; without
  the right to subscribe to replies it is also how progress arrives);
- after a (re)connection to the broker, a fresh read of the newest releases and every open one.

Outputs: server-sent events. Each update is rendered once (HTML fragments, escaped by the templates),
numbered, kept in a short history and fanned out to every subscriber that shows that release. A page
that reconnects with ``Last-Event-ID`` gets what it missed, or ``reload`` if that is no longer known.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from rc_cli.client import Refused
from rc_dashboard.gateway import Gateway, Unavailable
from rc_dashboard.overlay import Overlays
from rc_dashboard.views import micros
from schemas.documents import ReleaseView
from schemas.messages import ListReleases, Progress

log = structlog.get_logger("rc_dashboard")

#: Renders the HTML fragments of a release, ``{element id: html}``: those that may differ from the view
#: given second (every one if it is ``None``).
RenderParts = Callable[[ReleaseView, ReleaseView | None], dict[str, str]]

#: Updates kept for pages that reconnect.
HISTORY = 2000
#: Ended releases kept in memory (open ones are always kept).
KEEP_ENDED = 500
#: Updates a page may have waiting before it is dropped (it then reconnects and catches up).
QUEUE_LIMIT = 500
#: Attempts to see a reply or progress report in the coordinator's view before giving up on it.
CONFIRM_ATTEMPTS = 6
#: Progress reports heard within this many seconds go out to the pages together.
FLUSH_SECONDS = 0.1


def sse(event: str, data: dict[str, Any], event_id: str | None = None) -> bytes:
    """One server-sent event (``data`` as one line of JSON)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@dataclass
class Known:
    #: The coordinator's view.
    view: ReleaseView
    #: What the pages show: ``view`` with the progress reports it does not show yet (:mod:`overlay`).
    shown: ReleaseView
    #: The last fragments rendered of ``shown``, by element id.
    parts: dict[str, str]


@dataclass(frozen=True)
class Entry:
    seq: int
    release_id: str
    #: For pages showing the list of releases (its row only), or ``None`` when the row did not change.
    for_list: bytes | None
    for_release: bytes


@dataclass(eq=False)
class Subscription:
    """One open page: ``release_id`` ``None`` for the releases list, else the release it shows."""

    release_id: str | None
    queue: asyncio.Queue[bytes | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT + 10))
    received: int = 0

    def offer(self, chunk: bytes) -> bool:
        """Queue ``chunk``; ``False`` (and the stream is ended) if the page is too far behind."""
        if self.queue.qsize() >= QUEUE_LIMIT:
            self.end()
            return False
        self.queue.put_nowait(chunk)
        self.received += 1
        return True

    def end(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


@dataclass
class Status:
    connected: bool = False
    text: str = "connecting to the broker"
    #: Whether replies and progress reports arrive as they happen (else by polling).
    progress_feed: bool = False

    def event(self) -> bytes:
        return sse("status", {"connected": self.connected, "text": self.text})


class Hub:
    def __init__(
        self, gateway: Gateway, render: RenderParts, *, poll_seconds: float, min_interval: float = 0.2
    ) -> None:
        self.gateway = gateway
        self.render = render
        self.poll_seconds = poll_seconds
        self.min_interval = min_interval
        self.epoch = secrets.token_hex(4)
        self.seq = 0
        self.status = Status()
        self.known: OrderedDict[str, Known] = OrderedDict()
        self._history: deque[Entry] = deque()
        self._evicted_through = 0
        self._subscriptions: set[Subscription] = set()
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()
        self._expected: dict[str, dict[str, str]] = {}
        self._limit = asyncio.Semaphore(8)
        self._background: set[asyncio.Task[None]] = set()
        self.overlays = Overlays()
        self._unflushed: set[str] = set()

    @property
    def last_id(self) -> str:
        """The id of the newest update: a page rendered now has seen everything up to it."""
        return f"{self.epoch}-{self.seq}"

    # ------------------------------------------------------------------ inputs

    def observe(self, view: ReleaseView, *, complete: bool = True) -> None:
        """A view of a release from the coordinator: kept and pushed if it is newer than the one known.

        A view without the notes (``complete`` false: from a list page) is not pushed: an open release it
        shows changed is read again instead.
        """
        known = self.known.get(view.id)
        if not complete:
            if not view.state.is_terminal and (known is None or view.updated_at > known.view.updated_at):
                self.hint(view.id)
            return
        if known is not None and view.updated_at <= known.view.updated_at:
            return
        self.overlays.settle(view)
        self._show(view, known)

    def progress(self, report: Progress) -> None:
        """A progress report from a sender the coordinator would accept: shown within ``FLUSH_SECONDS``,
        then confirmed by reading the release (see :mod:`rc_dashboard.overlay`)."""
        self.hint(report.release_id, report.service, report.message_id)
        known = self.known.get(report.release_id)
        if known is None or not self.overlays.add(known.view, report):
            return
        if not self._unflushed:
            self._spawn(self._flush())
        self._unflushed.add(report.release_id)

    def shown(self, view: ReleaseView) -> ReleaseView:
        """``view`` as the pages show it (with the progress reports it does not show yet)."""
        return self.overlays.apply(view)

    async def _flush(self) -> None:
        await asyncio.sleep(FLUSH_SECONDS)
        releases, self._unflushed = self._unflushed, set()
        for release_id in releases:
            if (known := self.known.get(release_id)) is not None:
                self._show(known.view, known)

    def _show(self, view: ReleaseView, known: Known | None) -> None:
        """Render what changed on the pages, keep it, push it."""
        shown = self.overlays.apply(view)
        parts = self.render(shown, known.shown if known is not None else None)
        changed = {key: html for key, html in parts.items() if known is None or known.parts.get(key) != html}
        self.known[view.id] = Known(view, shown, {**known.parts, **parts} if known is not None else parts)
        self.known.move_to_end(view.id)
        self._forget_ended()
        if changed:
            self._broadcast(view, changed)

    def hint(self, release_id: str, service: str | None = None, message_id: str | None = None) -> None:
        """Something happened to the release (``message_id`` from ``service``, if known): read it again."""
        if service is not None and message_id is not None:
            expected = self._expected.setdefault(release_id, {})
            if len(expected) < 1000:
                expected[service] = message_id
        if release_id in self._refreshing:
            self._dirty.add(release_id)
            return
        self._refreshing[release_id] = asyncio.create_task(self._refresh(release_id))

    def connection_changed(self, connected: bool, text: str, *, progress_feed: bool = False) -> None:
        """The broker feed went up or down: tell every page; once up again, catch up on what was missed."""
        self.status = Status(connected, text, progress_feed)
        event = self.status.event()
        for subscription in list(self._subscriptions):
            if not subscription.offer(event):
                self._subscriptions.discard(subscription)
        if connected:
            self._spawn(self.resync())

    async def resync(self) -> None:
        """Read the newest releases and every open one again (after a (re)connection)."""
        try:
            page = await self.gateway.releases(ListReleases(limit=50))
        except (Unavailable, Refused) as error:
            log.warning("dashboard.resync_failed", reason=str(error))
            return
        for view in reversed(page.releases):
            self.observe(view, complete=False)
        for release_id in self.open_releases():
            self.hint(release_id)

    def open_releases(self) -> list[str]:
        return [rid for rid, known in self.known.items() if not known.view.state.is_terminal]

    async def run(self, stop: asyncio.Event) -> None:
        """Poll the open releases every ``poll_seconds`` until ``stop`` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_seconds)
            if self.status.connected:
                for release_id in self.open_releases():
                    self.hint(release_id)

    async def close(self) -> None:
        for subscription in list(self._subscriptions):
            subscription.end()
        self._subscriptions.clear()
        pending = [*self._refreshing.values(), *self._background]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # ------------------------------------------------------------------ reading a release again

    async def _refresh(self, release_id: str) -> None:
        try:
            await self._read_until_confirmed(release_id)
        finally:  # before the task ends, so that a hint from now on starts a new read
            self._refreshing.pop(release_id, None)

    async def _read_until_confirmed(self, release_id: str) -> None:
        loop = asyncio.get_running_loop()
        attempts, delay = 0, 0.05
        while True:
            self._dirty.discard(release_id)
            started = loop.time()
            try:
                async with self._limit:
                    view = (await self.gateway.release(release_id)).release
            except Refused:  # unknown release (a hint about a release of another coordinator)
                self._expected.pop(release_id, None)
                return
            except Unavailable as error:
                log.info("dashboard.refresh_failed", release_id=release_id, reason=str(error))
                return
            self.observe(view, complete=True)
            unseen = self._unconfirmed(view)
            attempts += 1
            if release_id not in self._dirty and (not unseen or attempts >= CONFIRM_ATTEMPTS):
                self._expected.pop(release_id, None)
                return
            if unseen:  # the coordinator has not stored it yet: look again soon, then less and less soon
                pause, delay = min(delay, self.min_interval), delay * 2
            else:  # more happened meanwhile: read again, at most once per min_interval
                pause = max(self.min_interval - (loop.time() - started), 0)
            await asyncio.sleep(pause)

    def _unconfirmed(self, view: ReleaseView) -> bool:
        """Forget the expected messages the view shows; whether any is still missing from it."""
        expected = self._expected.get(view.id)
        if not expected:
            return False
        if view.state.is_terminal:
            expected.clear()
            return False
        for service, message_id in list(expected.items()):
            task = view.tasks.get(service)
            if task is None or task.last_message_id == message_id:
                del expected[service]
        return bool(expected)

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _forget_ended(self) -> None:
        ended = [rid for rid, known in self.known.items() if known.view.state.is_terminal]
        for release_id in ended[: max(0, len(ended) - KEEP_ENDED)]:
            del self.known[release_id]
            self.overlays.forget(release_id)

    # ------------------------------------------------------------------ outputs

    def _broadcast(self, view: ReleaseView, changed: dict[str, str]) -> None:
        self.seq += 1
        event_id = self.last_id
        head = {
            "id": view.id,
            "state": view.state.value,
            "held": view.held,
            "updated": micros(view.updated_at),
            "studies": list(view.studies),
        }
        row = changed.get(f"row-{view.id}")
        entry = Entry(
            self.seq,
            view.id,
            sse("update", {**head, "parts": {f"row-{view.id}": row}}, event_id) if row else None,
            sse("update", {**head, "parts": changed}, event_id),
        )
        self._history.append(entry)
        while len(self._history) > HISTORY:
            self._evicted_through = self._history.popleft().seq
        for subscription in list(self._subscriptions):
            chunk = self._chunk_for(subscription, entry)
            if chunk is not None and not subscription.offer(chunk):
                self._subscriptions.discard(subscription)

    @staticmethod
    def _chunk_for(subscription: Subscription, entry: Entry) -> bytes | None:
        if subscription.release_id is None:
            return entry.for_list
        return entry.for_release if subscription.release_id == entry.release_id else None

    def subscribe(self, release_id: str | None, last_event_id: str | None) -> Subscription:
        """A new page stream: the connection status, then every update after ``last_event_id``."""
        subscription = Subscription(release_id)
        subscription.offer(b"retry: 1000\n\n")
        subscription.offer(self.status.event())
        for chunk in self._missed(subscription, last_event_id):
            subscription.offer(chunk)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)

    def _missed(self, subscription: Subscription, last_event_id: str | None) -> list[bytes]:
        if not last_event_id:
            return []
        epoch, _, number = last_event_id.partition("-")
        if epoch != self.epoch or not number.isdigit() or int(number) > self.seq:
            return [sse("reload", {"why": "the dashboard restarted"})]
        seen = int(number)
        if seen < self._evicted_through:
            return [sse("reload", {"why": "too many updates were missed"})]
        chunks = (self._chunk_for(subscription, entry) for entry in self._history if entry.seq > seen)
        return [chunk for chunk in chunks if chunk is not None]
