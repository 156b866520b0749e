"""Pure pieces of the command line: JSON shapes, human rendering, URL masking."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from rich.console import Console, RenderableType

from rc_cli import render
from rc_cli.client import default_operator, format_seconds
from schemas.broker_url import broker_user, mask_url
from schemas.documents import AuditEvent, ReleaseView, ServiceRecord, Task
from schemas.enums import EventKind, ReleaseState, TaskState
from schemas.messages import ReleasePage, ReleaseResult, ServiceList

MOMENT = datetime(2025, 6, 1, 12, 30, 5, tzinfo=UTC)


def view(**changes: object) -> ReleaseView:
    base = ReleaseView(
        id="RE_0A1B2C3D",
        name="June",
        description="",
        studies=("SD_AAA", "SD_BBB"),
        tags=("dr-1",),
        author="alice",
        is_major=False,
        version="1.2.4",
        tentative_version="1.2.4",
        final_version=None,
        state=ReleaseState.RUNNING,
        state_reason=None,
        held=False,
        tasks={
            "search-index": Task(
                service="search-index", state=TaskState.RUNNING, progress=42.4, last_message="indexing"
            ),
            "portal": Task(service="portal", state=TaskState.STAGED, progress=100),
        },
        entered={ReleaseState.WAITING: MOMENT},
        created_at=MOMENT,
        updated_at=MOMENT,
    )
    return base.model_copy(update=changes)


def text_of(renderable: RenderableType, width: int = 160) -> str:
    console = Console(record=True, width=width, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_release_json_has_the_view_at_the_top_level() -> None:
    event = AuditEvent(id="e1", release_id="RE_0A1B2C3D", at=MOMENT, kind=EventKind.CREATED, reason="created")
    data = render.release_result_json(ReleaseResult(release=view(), events=(event,)))
    assert data["id"] == "RE_0A1B2C3D"
    assert data["state"] == "running"
    assert data["version"] == "1.2.4"
    assert data["tasks"]["search-index"]["progress"] == 42.4
    assert data["created_at"] == "2025-06-01T12:30:05Z"
    assert data["events"][0]["kind"] == "created"
    assert set(ReleaseView.model_fields) | {"events"} == set(data)


def test_list_and_service_json_shapes() -> None:
    page = render.release_page_json(ReleasePage(releases=(view(),), next_cursor="abc"))
    assert set(page) == {"releases", "next_cursor"}
    assert page["releases"][0]["id"] == "RE_0A1B2C3D"
    assert page["next_cursor"] == "abc"
    services = render.service_list_json(ServiceList(services=(ServiceRecord(name="portal", required=True),)))
    assert services == {"services": [ServiceRecord(name="portal", required=True).model_dump(mode="json")]}
    assert render.error_json("refused: no") == {"error": "refused: no"}


def test_when_is_utc() -> None:
    assert render.when(None) == "-"
    assert render.when(MOMENT) == "2025-06-01 12:30:05Z"
    paris = MOMENT.astimezone(timezone(timedelta(hours=2)))
    assert render.when(paris) == "2025-06-01 12:30:05Z"


def test_state_and_version_lines() -> None:
    assert render.release_state_line(view()) == "running"
    assert render.release_state_line(view(state=ReleaseState.STAGED, held=True)) == "staged (held)"
    failed = view(state=ReleaseState.FAILED, state_reason="portal did not answer")
    assert render.release_state_line(failed) == "failed: portal did not answer"
    assert render.version_line(view()) == "1.2.4 (tentative)"
    assert render.version_line(view(final_version="1.3.0", version="1.3.0")) == "1.3.0"
    assert (
        render.release_summary("held", view())
        == "held RE_0A1B2C3D 'June' (running, version 1.2.4 (tentative))"
    )


def test_release_details_show_header_tasks_and_events() -> None:
    event = AuditEvent(
        id="e1",
        release_id="RE_0A1B2C3D",
        at=MOMENT,
        kind=EventKind.TRANSITION,
        reason="all accepted",
        state_before=ReleaseState.INITIALIZING,
        state_after=ReleaseState.RUNNING,
    )
    text = text_of(render.release_details(ReleaseResult(release=view(), events=(event,))))
    for expected in ("RE_0A1B2C3D  June", "running", "1.2.4 (tentative)", "SD_AAA, SD_BBB", "dr-1", "alice"):
        assert expected in text
    lines = text.splitlines()
    portal = next(line for line in lines if line.lstrip().startswith("portal"))
    index = next(line for line in lines if line.lstrip().startswith("search-index"))
    assert lines.index(portal) < lines.index(index)  # sorted by service
    assert "100%" in portal
    assert "42%" in index
    assert "indexing" in index
    assert "initializing -> running: all accepted" in text


def test_releases_table_and_empty_page() -> None:
    text = text_of(render.release_page(ReleasePage(releases=(view(held=True),), next_cursor="c2")))
    header = text.splitlines()[0].split()
    assert header == ["id", "name", "state", "version", "held", "created"]
    assert "RE_0A1B2C3D" in text
    assert "yes" in text
    assert "--cursor c2" in text
    assert text_of(render.release_page(ReleasePage(releases=()))).strip() == "no releases"


def test_services_table() -> None:
    records = (
        ServiceRecord(name="search-index", required=True, sdk_version="0.1.0", instances={"a": MOMENT}),
        ServiceRecord(name="portal", healthy=False, health_detail="not consuming"),
    )
    text = text_of(render.services_table(records))
    assert "no (not consuming)" in text
    lines = text.splitlines()
    assert lines[1].lstrip().startswith("portal") or lines[2].lstrip().startswith("portal")
    assert text_of(render.services_table(())).strip() == "no services registered"


def test_watch_view_has_one_bar_per_task() -> None:
    text = text_of(render.watch_view(view(), note="retrying"))
    assert text.splitlines()[0].startswith("RE_0A1B2C3D June  running  version 1.2.4 (tentative)")
    assert "42%" in text
    assert "100%" in text
    assert "indexing" in text
    assert "retrying" in text


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", "amqp://guest:***@127.0.0.1:5672/"),
        ("amqps://ops:p%40ss@broker.example:5671/rc", "amqps://ops:***@broker.example:5671/rc"),
        ("amqp://127.0.0.1/", "amqp://127.0.0.1/"),
        ("amqp://ops@127.0.0.1/", "amqp://ops@127.0.0.1/"),
        ("amqp://ops:@127.0.0.1/", "amqp://ops:***@127.0.0.1/"),
        ("mongodb://ops:pw@db1:27017,db2:27017/rc", "mongodb://ops:***@db1:27017,db2:27017/rc"),
        ("amqp://ops:secret@[::1/", "amqp://ops:***@[::1/"),  # unparsable: all before the last @ is masked
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_broker_user_and_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    assert broker_user("amqp://rc-operator:x@h/") == "rc-operator"
    assert broker_user("amqp://a%40b:x@h/") == "a@b"
    assert broker_user("amqp://h/") == "guest"
    monkeypatch.setenv("RC_OPERATOR", "alice")
    assert default_operator() == "alice"
    monkeypatch.delenv("RC_OPERATOR")
    assert default_operator()
    assert format_seconds(10.0) == "10s"
    assert format_seconds(0.5) == "0.5s"
