"""An example task service: the search index of a data portal.

For each release it builds one index per study (simulated: the work is spread over
``SEARCH_INDEX_SECONDS``, default 10), reporting progress as it goes, stages the indexes under
release-specific names, and on publication swaps the public alias to them.

Run it against a local RabbitMQ::

    python -m examples.search_index
    rc-task examples.search_index:SearchIndex --namespace rc

Environment (besides the SDK's ``RC_*`` settings, see ``rc-task --help``):

``SEARCH_INDEX_SECONDS``  how long processing takes in total (default 10)
``SEARCH_INDEX_FAIL``     if set, processing fails half way with this text as the error
``SEARCH_INDEX_REJECT``   if set, every release is rejected at initialization with this reason
"""

from __future__ import annotations

import functools

import structlog

from examples._simulated import Knobs, StagingArea, work_through
from schemas.messages import ReleaseInfo
from task_sdk import ProgressReporter, TaskHandler, run

log = structlog.get_logger("search_index")

ENV_PREFIX = "SEARCH_INDEX"
DEFAULT_SECONDS = 10.0
#: Chunks each study's index is built in (one progress report per chunk).
CHUNKS_PER_STUDY = 4


class IndexCatalog(StagingArea):
    """Stands in for the search cluster: staged indexes per release, and the public alias per study."""

    @property
    def public_alias(self) -> dict[str, str]:
        return self.public


class SearchIndex(TaskHandler):
    service = "search-index"

    def __init__(self, catalog: IndexCatalog | None = None) -> None:
        self.catalog = catalog or IndexCatalog()

    async def initialize(self, release: ReleaseInfo) -> None:
        Knobs.from_env(ENV_PREFIX, DEFAULT_SECONDS).check_accept()
        log.info("release.accepted", release_id=release.id, studies=list(release.studies))

    async def process(self, release: ReleaseInfo, progress: ProgressReporter) -> None:
        knobs = Knobs.from_env(ENV_PREFIX, DEFAULT_SECONDS)
        staged: dict[str, str] = {}

        def index_part(study: str, part: int) -> str:  # reads the study's documents and indexes a share
            staged[study] = f"{study.lower()}-{release.tentative_version}"
            return f"indexing {study} ({part}/{CHUNKS_PER_STUDY})"

        chunks = [
            functools.partial(index_part, study, part)
            for study in release.studies
            for part in range(1, CHUNKS_PER_STUDY + 1)
        ]
        await work_through(chunks, progress, knobs)
        self.catalog.stage(release.id, staged)

    async def publish(self, release: ReleaseInfo) -> None:
        aliases = self.catalog.make_public(release.id)
        log.info("release.published", release_id=release.id, version=release.version, aliases=aliases)

    async def cancel(self, release: ReleaseInfo) -> None:
        dropped = self.catalog.discard(release.id)
        log.info("release.discarded", release_id=release.id, indexes=sorted(dropped.values()))


if __name__ == "__main__":
    run(SearchIndex())
