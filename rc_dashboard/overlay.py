"""Progress reports shown as they arrive, before the coordinator has stored them.

A busy coordinator may take a while to store a progress report and answer a ``show``; pages would then
lag behind the services. So a report heard on the broker is shown at once, on top of the coordinator's
view, when the coordinator would accept it too: its sender is the service itself (the broker vouches for
``user_id``) or a trusted user (``RC_TRUSTED_USERS``, as the coordinator's), the release is running, and
the service is one of its tasks and is running. The report is dropped as soon as the coordinator's view
shows it (same message id) or moves the task on, and after ``LIFETIME_SECONDS`` in any case: what a page
shows for long is always the coordinator's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from schemas.documents import ReleaseView
from schemas.enums import ReleaseState, TaskState
from schemas.messages import Progress

LIFETIME_SECONDS = 10.0


@dataclass(frozen=True)
class Report:
    message_id: str
    percent: float
    note: str | None
    received: float


def _applies(view: ReleaseView, service: str) -> bool:
    task = view.tasks.get(service)
    return view.state is ReleaseState.RUNNING and task is not None and task.state is TaskState.RUNNING


@dataclass
class Overlays:
    lifetime: float = LIFETIME_SECONDS
    _reports: dict[str, dict[str, Report]] = field(default_factory=dict)

    def add(self, view: ReleaseView, progress: Progress) -> bool:
        """Keep ``progress`` to show on ``view`` (the coordinator's); whether it applies at all."""
        if progress.release_id != view.id or not _applies(view, progress.service):
            return False
        report = Report(progress.message_id, progress.percent, progress.note, time.monotonic())
        self._reports.setdefault(view.id, {})[progress.service] = report
        return True

    def settle(self, view: ReleaseView) -> None:
        """Forget the reports ``view`` shows, overtakes or no longer allows, and the old ones."""
        reports = self._reports.get(view.id)
        if not reports:
            return
        oldest = time.monotonic() - self.lifetime
        for service, report in list(reports.items()):
            task = view.tasks.get(service)
            if (
                not _applies(view, service)
                or (task is not None and task.last_message_id == report.message_id)
                or report.received < oldest
            ):
                del reports[service]
        if not reports:
            del self._reports[view.id]

    def apply(self, view: ReleaseView) -> ReleaseView:
        """``view`` with the reports it does not show yet."""
        reports = self._reports.get(view.id)
        if not reports:
            return view
        tasks = dict(view.tasks)
        for service, report in reports.items():
            task = tasks[service]
            tasks[service] = task.model_copy(
                update={
                    "progress": report.percent,
                    "last_message": report.note if report.note is not None else task.last_message,
                    "last_message_id": report.message_id,
                }
            )
        return view.model_copy(update={"tasks": tasks})

    def forget(self, release_id: str) -> None:
        self._reports.pop(release_id, None)
