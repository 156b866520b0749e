"""An example task service: the file service, which serves the studies' data files for download.

For each release it checksums every file of every study and stages a manifest per study
(simulated: the work is spread over ``FILE_SERVICE_SECONDS``, default 12), reporting progress as it
goes. Staged files stay hidden; on publication their visibility is flipped to public. A cancel
stops the work at its next file and drops the staged manifests.

Run it against a local RabbitMQ::

    python -m examples.file_service
    rc-task examples.file_service:FileService --namespace rc

Environment (besides the SDK's ``RC_*`` settings, see ``rc-task --help``):

``FILE_SERVICE_SECONDS``  how long processing takes in total (default 12)
``FILE_SERVICE_FAIL``     if set, processing fails half way with this text as the error
``FILE_SERVICE_REJECT``   if set, every release is rejected at initialization with this reason
"""

from __future__ import annotations

import functools
import hashlib

import structlog

from examples._simulated import Knobs, StagingArea, work_through
from schemas.messages import ReleaseInfo
from task_sdk import ProgressReporter, TaskHandler, run

log = structlog.get_logger("file_service")

ENV_PREFIX = "FILE_SERVICE"
DEFAULT_SECONDS = 12.0
FILE_KINDS = ("cram", "crai", "vcf.gz", "tsv")


def data_files(study: str) -> list[str]:
    """The files of a study (made up, but the same every time): 3 to 6 of them."""
    count = 3 + hashlib.sha256(study.encode()).digest()[0] % 4
    return [f"{study.lower()}/part-{n}.{FILE_KINDS[n % len(FILE_KINDS)]}" for n in range(1, count + 1)]


class FileStore(StagingArea):
    """Stands in for the object store: staged manifests per release, and the visible ones per study."""

    @property
    def visible(self) -> dict[str, str]:
        return self.public


class FileService(TaskHandler):
    service = "file-service"

    def __init__(self, store: FileStore | None = None) -> None:
        self.store = store or FileStore()

    async def initialize(self, release: ReleaseInfo) -> None:
        Knobs.from_env(ENV_PREFIX, DEFAULT_SECONDS).check_accept()
        log.info("release.accepted", release_id=release.id, studies=list(release.studies))

    async def process(self, release: ReleaseInfo, progress: ProgressReporter) -> None:
        knobs = Knobs.from_env(ENV_PREFIX, DEFAULT_SECONDS)
        checksums: dict[str, list[str]] = {}
        staged: dict[str, str] = {}

        def checksum(study: str, path: str, number: int, total: int) -> str:
            content = f"{release.id}/{path}".encode()  # stands for streaming the file from storage
            checksums.setdefault(study, []).append(hashlib.sha256(content).hexdigest())
            if number == total:
                manifest = hashlib.sha256("\n".join(checksums[study]).encode()).hexdigest()[:12]
                staged[study] = f"{study.lower()}@{release.tentative_version} sha256:{manifest}"
                return f"staged {study}: {total} files"
            return f"checksummed {path} ({number}/{total})"

        chunks = []
        for study in release.studies:
            files = data_files(study)
            chunks += [
                functools.partial(checksum, study, path, number, len(files))
                for number, path in enumerate(files, 1)
            ]
        await work_through(chunks, progress, knobs)
        self.store.stage(release.id, staged)

    async def publish(self, release: ReleaseInfo) -> None:
        manifests = self.store.make_public(release.id)  # flips the staged files to public
        log.info("release.published", release_id=release.id, version=release.version, manifests=manifests)

    async def cancel(self, release: ReleaseInfo) -> None:
        dropped = self.store.discard(release.id)
        log.info("release.discarded", release_id=release.id, manifests=sorted(dropped.values()))


if __name__ == "__main__":
    run(FileService())
