"""An example task service: the data portal, where researchers browse studies and participants.

For each release it loads every study's metadata, then builds the study's participant pages
(simulated: the work is spread over ``PORTAL_SECONDS``, default 8), reporting progress as it goes.
The pages are staged under the release's tentative version, invisible to visitors; on publication
the portal's public alias is swapped to them in one move. A cancel stops the work at its next
chunk and drops the staged pages.

Run it against a local RabbitMQ::

    python -m examples.portal
    rc-task examples.portal:Portal --namespace rc

Environment (besides the SDK's ``RC_*`` settings, see ``rc-task --help``):

``PORTAL_SECONDS``  how long processing takes in total (default 8)
``PORTAL_FAIL``     if set, processing fails half way with this text as the error
``PORTAL_REJECT``   if set, every release is rejected at initialization with this reason
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import structlog

from examples._simulated import Knobs, StagingArea, work_through
from schemas.messages import ReleaseInfo
from task_sdk import ProgressReporter, TaskHandler, run

log = structlog.get_logger("portal")

ENV_PREFIX = "PORTAL"
DEFAULT_SECONDS = 8.0
#: Chunks the participant pages of one study are built in (after one chunk loading its metadata).
PAGE_CHUNKS = 3


def participants(study: str) -> int:
    """How many participants a study has (made up, but the same every time)."""
    return 100 + int.from_bytes(hashlib.sha256(study.encode()).digest()[:2], "big") % 1900


@dataclass
class PortalSite(StagingArea):
    """Stands in for the portal's content store: staged page sets, public ones, and the live alias."""

    live_version: str | None = None

    @property
    def public_pages(self) -> dict[str, str]:
        return self.public


class Portal(TaskHandler):
    service = "portal"

    def __init__(self, site: PortalSite | None = None) -> None:
        self.site = site or PortalSite()

    async def initialize(self, release: ReleaseInfo) -> None:
        Knobs.from_env(ENV_PREFIX, DEFAULT_SECONDS).check_accept()
        log.info("release.accepted", release_id=release.id, studies=list(release.studies))

    async def process(self, release: ReleaseInfo, progress: ProgressReporter) -> None:
        knobs = Knobs.from_env(ENV_PREFIX, DEFAULT_SECONDS)
        staged: dict[str, str] = {}

        def load_metadata(study: str) -> str:
            return f"loaded metadata of {study} ({participants(study)} participants)"

        def build_pages(study: str, part: int) -> str:
            built = participants(study) * part // PAGE_CHUNKS
            if part == PAGE_CHUNKS:
                staged[study] = f"pages/{release.tentative_version}/{study.lower()}"
            return f"{study}: {built}/{participants(study)} participant pages"

        chunks = []
        for study in release.studies:
            chunks.append(functools.partial(load_metadata, study))
            chunks += [functools.partial(build_pages, study, part) for part in range(1, PAGE_CHUNKS + 1)]
        await work_through(chunks, progress, knobs)
        self.site.stage(release.id, staged)

    async def publish(self, release: ReleaseInfo) -> None:
        pages = self.site.make_public(release.id)
        self.site.live_version = release.version  # the public alias now points at this release
        log.info("release.published", release_id=release.id, version=release.version, pages=pages)

    async def cancel(self, release: ReleaseInfo) -> None:
        dropped = self.site.discard(release.id)
        log.info("release.discarded", release_id=release.id, pages=sorted(dropped.values()))


if __name__ == "__main__":
    run(Portal())
