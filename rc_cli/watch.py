"""Follow one release until it reaches a terminal state, independent of how it is displayed.

Two sources, merged by the view's ``updated_at`` (the newer view wins):

- polling ``show`` every ``poll_interval`` seconds: the only source of task progress, which is not announced;
- ``release.<state>`` announcements on the events exchange (an exclusive queue bound ``release.#``,
  filtered by release id): state changes show up at once instead of at the next poll.

If the events exchange cannot be subscribed to, watching goes on by polling alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from rc_cli.client import AdminClient, InvalidAnswer, NoAnswer, NoCoordinator, Refused, expect_ok
from schemas.documents import ReleaseView
from schemas.messages import Announcement, ReleaseResult, ShowRelease

#: ``on_update(view, note)``: called with the latest view whenever it may have changed; ``note`` says
#: something about the watching itself (e.g. the coordinator is not answering), or is ``None``.
OnUpdate = Callable[[ReleaseView, str | None], None]

DEFAULT_POLL_INTERVAL = 1.0


async def show_release(client: AdminClient, release_id: str, events: int = 0) -> ReleaseResult:
    result = expect_ok(await client.request(ShowRelease(release_id=release_id, events=events)))
    if not isinstance(result, ReleaseResult):
        raise InvalidAnswer(f"the coordinator answered show {release_id} without a release on {client.where}")
    return result


async def watch_release(
    client: AdminClient,
    release_id: str,
    on_update: OnUpdate,
    *,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
) -> ReleaseView:
    """Report the release through ``on_update`` until it is terminal; return its terminal view.

    Raises :class:`Refused` (e.g. unknown release) and the client's errors if the first ``show`` fails;
    later polls that get no answer are reported as a note and retried.
    """
    latest = (await show_release(client, release_id)).release
    wake = asyncio.Event()

    def newer(view: ReleaseView) -> bool:
        return view.updated_at >= latest.updated_at

    def on_announcement(announcement: Announcement) -> None:
        nonlocal latest
        if announcement.release_id != release_id:
            return
        if newer(announcement.release):
            latest = announcement.release
            wake.set()

    note: str | None = None
    try:
        await client.subscribe_announcements(on_announcement)
    except NoCoordinator:
        note = "no announcements (events exchange missing): polling only"
    on_update(latest, note)

    while not latest.state.is_terminal:
        wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), poll_interval)
        if wake.is_set():  # an announcement: show the new state at once, progress at the next poll
            on_update(latest, note)
            continue
        try:
            view = (await show_release(client, release_id)).release
        except NoAnswer as error:
            note = f"{error}; retrying"
        else:
            note = None if note and note.endswith("retrying") else note
            if newer(view):
                latest = view
        on_update(latest, note)
    return latest


__all__ = ["DEFAULT_POLL_INTERVAL", "OnUpdate", "Refused", "show_release", "watch_release"]
