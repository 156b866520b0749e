"""The task SDK: write one class, and your service takes part in coordinated data releases.

A team writes a :class:`TaskHandler` and runs it::

    from task_sdk import TaskHandler, Reject, run

    class SearchIndex(TaskHandler):
        service = "search-index"

        async def initialize(self, release):          # raise Reject("why") to refuse the release
            if not release.studies:
                raise Reject("nothing to index")

        async def process(self, release, progress):   # the heavy work
            for done, study in enumerate(release.studies, 1):
                await build_index(study)
                await progress.report(100 * done / len(release.studies), f"indexed {study}")

        async def publish(self, release): ...         # make the staged data public
        async def cancel(self, release): ...          # discard what was staged

    run(SearchIndex())        # or, from a shell: rc-task mypackage.module:SearchIndex

Health
------
Override ``health()`` to say whether the service's own dependencies are usable; its answer goes
into every heartbeat (``healthy``, ``detail``), and the coordinator refuses to start a release on
an unhealthy service. It may be ``async def`` or plain ``def`` (run in a worker thread); an
exception, or no answer within half the heartbeat period, counts as unhealthy::

    from task_sdk import HealthStatus

    class SearchIndex(TaskHandler):
        ...
        async def health(self):
            if not await cluster.ping():
                return HealthStatus(False, "search cluster unreachable")
            return HealthStatus(True)

Embedding
---------
``await serve(handler, settings, stop=event)`` runs the service inside an existing asyncio
program until ``event`` is set (or the task is cancelled), without touching signal handlers; the
connection is closed however it ends.

The SDK owns the connection, the topology, command validation, replies, heartbeats, progress
keepalives, idempotency (a replayed command is answered, not re-run), graceful shutdown on
SIGTERM/SIGINT, and keeping blocking code off the event loop. Settings come from ``RC_*``
environment variables (see ``rc-task --help`` and :class:`Settings`).

Blocking and CPU-heavy code
---------------------------
Every step may be a plain ``def``: it then runs in a worker thread (``asyncio.to_thread``), so the
event loop keeps sending heartbeats while it blocks. Report progress with
``progress.report_sync(pct, note)`` and stop early when canceled by calling
``progress.raise_if_cancelled()`` between chunks of work (a thread cannot be interrupted).

CPU-heavy work in Python holds the GIL, which starves the heartbeat loop even from a thread. Run
it in a process pool from an ``async def`` step::

    import asyncio
    from concurrent.futures import ProcessPoolExecutor

    POOL = ProcessPoolExecutor(max_workers=2)

    class Variants(TaskHandler):
        service = "variant-store"

        async def process(self, release, progress):
            loop = asyncio.get_running_loop()
            for done, study in enumerate(release.studies, 1):
                # compute_study must be a top-level (picklable) function
                await loop.run_in_executor(POOL, compute_study, study)
                await progress.report(100 * done / len(release.studies), study)

A cancel command cancels the ``await``; the child process finishes its current call (submit
smaller chunks to stop sooner).

Testing
-------
:mod:`task_sdk.testing` runs a handler without a broker::

    from task_sdk.testing import Harness

    async def test_search_index():
        result = await Harness(SearchIndex()).run_release(studies=["SD_1"])
        assert result.outcomes == ["accepted", "staged", "published"]
"""

from schemas.messages import ReleaseInfo
from task_sdk._handler import HealthResult, HealthStatus, Reject, StepResult, TaskHandler
from task_sdk._progress import ProgressReporter, StepCancelled
from task_sdk._runner import Runner
from task_sdk._service import run, serve
from task_sdk._settings import Settings
from task_sdk._store import MemoryOutcomeStore, OutcomeStore, SqliteOutcomeStore
from task_sdk._version import SDK_VERSION

__version__ = SDK_VERSION

__all__ = [
    "SDK_VERSION",
    "HealthResult",
    "HealthStatus",
    "MemoryOutcomeStore",
    "OutcomeStore",
    "ProgressReporter",
    "Reject",
    "ReleaseInfo",
    "Runner",
    "Settings",
    "SqliteOutcomeStore",
    "StepCancelled",
    "StepResult",
    "TaskHandler",
    "__version__",
    "run",
    "serve",
]
