"""Text from releases and services reaches operators' terminals as text: never markup, never control codes.

Names, tags, reasons, progress notes, notes and service messages are generated with Rich markup, ANSI and OSC
escape sequences, BEL, DEL, C1 controls and bidi overrides, and shown by the real ``rc`` (in-process, against
the fake coordinator on the real broker) and by every renderer with real result objects. The output must hold
no control character (Rich adds none when the output is not a terminal, so any would come from the data) and
no traceback; and ``rc`` must print each piece of data as written, its markup included, once its control
characters are made visible. The real coordinator's path is in ``test_real_coordinator_safety.py``.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from rich.console import Console, RenderableType
from typer.testing import CliRunner, Result

from rc_cli import render
from rc_cli.main import app
from rc_cli.render import visible
from schemas.documents import (
    AuditEvent,
    Note,
    ReleaseBrief,
    ReleaseView,
    ServiceRecord,
    StudySummary,
    Task,
)
from schemas.enums import EventKind, ReleaseState, TaskState
from schemas.messages import EventPage, NotePage, ReleasePage, ReleaseResult, StudyPage, StudyResult
from tests.cli.fake_coordinator import FakeCoordinator

T = TypeVar("T")
MOMENT = datetime(2025, 6, 1, 12, 30, 5, tzinfo=UTC)

#: What an attacker puts in a name or a message: markup, escape sequences and controls.
HOSTILE = [
    "[/bold]",
    "[bold red]",
    "[link=https://evil.example]click[/link]",
    "[/]",
    "\x1b[2J",
    "\x1b[31m",
    "\x1b]52;c;ZXZpbA==\x07",
    "\x1b]8;;https://evil.example\x1b\\",
    "\x07",
    "\x9b2J",
    "\x9d0;title\x9c",
    "\u202e",
    "\u2066",
    "\x7f",
    "\r",
    "\x08",
    ":smile:",
    "\\",
]
#: Rich markup (and emoji codes): printed as markup, it would vanish from the output or change it.
MARKUP = [
    "[bold]",
    "[/bold]",
    "[/]",
    "[bold red]",
    "[link=https://evil.example]",
    "[link=https://evil.example]click[/link]",
    "[/link]",
    ":smile:",
]
#: A control character that reached the output: C0 (but line feed), DEL, C1, bidi overrides and isolates.
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

hostile_text = st.lists(
    st.one_of(st.sampled_from(HOSTILE), st.text(st.characters(exclude_categories=["Cs"]), max_size=8)),
    min_size=1,
    max_size=6,
).map("".join)
#: A release name: what the schema accepts (1 to 200 characters once stripped).
hostile_name = hostile_text.map(lambda text: f"n{text}"[:190])
#: Hostile text that holds markup for sure, at its start (so that cutting it to a length keeps it).
marked_text = st.tuples(st.sampled_from(MARKUP), hostile_text).map("".join)


def assert_safe(*outputs: str) -> None:
    for output in outputs:
        found = UNSAFE.search(output)
        assert found is None, f"{found.group()!r} reached the terminal in {output!r}"
        assert "Traceback" not in output


# ---------------------------------------------------------------------- the real rc, in-process


def invoke(*args: str) -> Result:
    """``rc ARGS`` in this process (environment from the ``rc`` fixture's), not on a terminal."""
    result = CliRunner().invoke(app, list(args), env={"FORCE_COLOR": None, "TTY_COMPATIBLE": None})
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert_safe(result.stdout, result.stderr)
    return result


@pytest.mark.timeout(600)
async def test_list_show_watch_and_the_error_line_print_data_as_text(
    coordinator: FakeCoordinator, amqp_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in {
        "RC_AMQP_URL": amqp_url,
        "RC_NAMESPACE": namespace,
        "RC_OPERATOR": "tester",
        "RC_TIMEOUT": "10",
        "COLUMNS": "5000",  # no line is wrapped: each piece of data must be found as written
    }.items():
        monkeypatch.setenv(key, value)
    loop = asyncio.get_running_loop()

    def on_fake(work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, loop).result(30)

    @settings(
        max_examples=8,
        deadline=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],  # each example runs rc four times: no shrinking
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(name=marked_text, tag=marked_text, reason=marked_text, message=marked_text)
    @example(name="evil [/bold] name", tag="[red]", reason="\x1b]52;c;ZXZpbA==\x07 [/]", message="\x1b[2J")
    def examples(name: str, tag: str, reason: str, message: str) -> None:
        name, tag = f"n{name}"[:190], f"t{tag}"[:60]
        created = invoke("release", "create", "--name", name, "--study", "SD_ONE", "--tag", tag)
        assert created.exit_code == 0, created.stderr
        release_id = list(coordinator.releases)[-1]
        stored = coordinator.releases[release_id]  # the name and tag as the schema took them
        assert visible(repr(stored.name)) in created.stdout  # ``created RE_... 'NAME' (...)``
        on_fake(coordinator.update(release_id, state=ReleaseState.RUNNING, progress=40, message=message))
        on_fake(coordinator.update(release_id, state=ReleaseState.FAILED, state_reason=reason))
        listed = invoke("release", "list")
        assert listed.exit_code == 0
        assert visible(stored.name) in listed.stdout
        shown = invoke("release", "show", release_id)
        assert shown.exit_code == 0
        for text in (stored.name, *stored.tags, f"failed: {reason}", message):
            assert visible(text) in shown.stdout
        watched = invoke("release", "watch", release_id)
        assert watched.exit_code == 1
        assert watched.stderr == f"rc: {release_id} ended failed: {visible(reason)}\n"  # one line, as written
        for text in (stored.name, message):
            assert visible(text) in watched.stdout

    await asyncio.to_thread(examples)


# ---------------------------------------------------------------------- every renderer, real results


def printed(renderable: RenderableType) -> str:
    out = io.StringIO()
    Console(file=out, width=120, highlight=False, force_terminal=False).print(renderable)
    return out.getvalue()


def hostile_release(name: str, text: str) -> ReleaseView:
    return ReleaseView(
        id="RE_0A1B2C3D",
        name=name,
        description=text,
        studies=("SD_AAA",),
        tags=(f"t{text}"[:60],),
        author=text,
        is_major=False,
        version="1.2.4",
        tentative_version="1.2.4",
        final_version=None,
        state=ReleaseState.FAILED,
        state_reason=text,
        held=False,
        tasks={"portal": Task(service="portal", state=TaskState.RUNNING, progress=40, last_message=text)},
        notes=(Note(id="N1", text=f"# {text}\n\n{text}", author=text, created_at=MOMENT, updated_at=MOMENT),),
        entered={ReleaseState.WAITING: MOMENT},
        created_at=MOMENT,
        updated_at=MOMENT,
    )


@settings(max_examples=60, deadline=None)
@given(name=hostile_name, text=hostile_text)
def test_every_renderer_prints_data_as_text(name: str, text: str) -> None:
    release = hostile_release(name, text)
    event = AuditEvent(
        id="e1", release_id=release.id, at=MOMENT, kind=EventKind.REFUSED, reason=text, actor=text, label=text
    )
    brief = ReleaseBrief(
        id=release.id,
        name=name,
        state=ReleaseState.PUBLISHED,
        version="1.0.0",
        created_at=MOMENT,
        published_at=MOMENT,
    )
    study = StudySummary(study="SD_AAA", latest=brief, last_published=brief, release_count=1)
    renderables: list[RenderableType] = [
        render.release_details(ReleaseResult(release=release, events=(event,))),
        render.release_page(ReleasePage(releases=(release,), next_cursor=text or None)),
        render.watch_view(release, note=text),
        render.event_page(EventPage(release_id=release.id, release_state=release.state, events=(event,))),
        render.note_page(NotePage(release_id=release.id, notes=release.notes)),
        render.services_table(
            (ServiceRecord(name="portal", healthy=False, health_detail=text, sdk_version=text),)
        ),
        render.study_page(StudyPage(studies=(study,))),
        render.study_details(StudyResult(study=study, releases=(brief,))),
    ]
    assert_safe(*(printed(renderable) for renderable in renderables))
    assert_safe(render.event_line(event), render.release_summary("created", release))
    assert_safe(render.release_state_line(release))
