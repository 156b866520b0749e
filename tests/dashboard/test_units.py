"""Pure parts of the dashboard: what a release offers, its timeline, notes, sessions, settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from rc_dashboard.notes import ALLOWED_TAGS, render_markdown
from rc_dashboard.security import SESSION_COOKIE, Forbidden, Sessions, local_path
from rc_dashboard.settings import DashboardSettings
from rc_dashboard.views import (
    Action,
    available_actions,
    count_tasks,
    duration,
    rc_command,
    release_progress,
    timelines,
)
from schemas.documents import ReleaseView, Task
from schemas.enums import ReleaseState, TaskState

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def view(state: ReleaseState = ReleaseState.RUNNING, *, held: bool = False, **tasks: Task) -> ReleaseView:
    data: dict[str, Any] = {
        "id": "RE_ABCDEFGH",
        "name": "Fall",
        "description": "",
        "studies": ("SD_ONE",),
        "tags": (),
        "author": "ann",
        "is_major": False,
        "version": "0.0.1",
        "tentative_version": "0.0.1",
        "final_version": None,
        "state": state,
        "state_reason": None,
        "held": held,
        "tasks": tasks or {"portal": Task(service="portal")},
        "entered": {},
        "created_at": T0,
        "updated_at": T0,
    }
    return ReleaseView.model_validate(data)


@pytest.mark.parametrize(
    ("state", "held", "expected"),
    [
        (ReleaseState.WAITING, False, [Action.CANCEL]),
        (ReleaseState.RUNNING, False, [Action.CANCEL]),
        (ReleaseState.STAGED, False, [Action.HOLD, Action.PUBLISH, Action.CANCEL]),
        (ReleaseState.STAGED, True, [Action.UNHOLD, Action.CANCEL]),
        (ReleaseState.PUBLISHING, False, [Action.PUBLISH]),  # re-send; never cancel
        (ReleaseState.CANCELING, False, []),
        (ReleaseState.PUBLISHED, False, []),
        (ReleaseState.FAILED, False, []),
    ],
)
def test_actions_follow_the_state(state: ReleaseState, held: bool, expected: list[Action]) -> None:
    assert available_actions(view(state, held=held)) == expected


def test_rc_commands_are_quoted_for_a_shell() -> None:
    assert rc_command(Action.PUBLISH, "RE_ABCDEFGH") == "rc release publish RE_ABCDEFGH"
    assert rc_command(Action.CANCEL, "RE_ABCDEFGH", "bad data; rm -rf") == (
        "rc release cancel RE_ABCDEFGH --reason 'bad data; rm -rf'"
    )


def test_progress_and_counts() -> None:
    running = view(
        portal=Task(service="portal", state=TaskState.STAGED, progress=100),
        search=Task(service="search", state=TaskState.RUNNING, progress=50),
    )
    assert release_progress(running) == 75
    assert count_tasks(running) == "1/2 staged"
    assert release_progress(view(ReleaseState.PUBLISHING)) == 100


def test_the_timeline_puts_every_step_on_one_scale() -> None:
    done = Task(
        service="portal",
        state=TaskState.PUBLISHED,
        entered={
            TaskState.WAITING: at(0),
            TaskState.INITIALIZED: at(1),
            TaskState.RUNNING: at(1),
            TaskState.STAGED: at(6),
            TaskState.PUBLISHING: at(8),
            TaskState.PUBLISHED: at(10),
        },
    )
    failed = Task(
        service="search",
        state=TaskState.FAILED,
        entered={TaskState.WAITING: at(0), TaskState.INITIALIZED: at(1), TaskState.RUNNING: at(1)},
        updated_at=at(3),
    )
    still = Task(service="files", state=TaskState.RUNNING, entered={TaskState.RUNNING: at(2)})
    lines = {line.service: line for line in timelines(view(portal=done, search=failed, files=still))}

    initialize, process, review, publish = lines["portal"].segments
    assert [s.label if s else None for s in (initialize, process, review, publish)] == [
        "1.0s",
        "5.0s",
        "2.0s",
        "2.0s",
    ]
    assert process is not None
    assert publish is not None
    assert (process.left, process.width) == (100, 500)  # 1 s to 6 s of a 10 s lifetime
    assert publish.left + publish.width == 1000
    assert lines["portal"].total == "10s"
    assert [s.label if s else None for s in lines["search"].segments] == ["1.0s", "2.0s", None, None]
    running = lines["files"].segments[1]
    assert running is not None
    assert (running.label, running.left + running.width) == ("running", 1000)
    assert lines["files"].total == "-"


def test_durations() -> None:
    assert [duration(s) for s in (0.04, 9.94, 12, 184, 7500, 200_000)] == [
        "0.0s",
        "9.9s",
        "12s",
        "3m 04s",
        "2h 05m",
        "2d 7h",
    ]


@pytest.mark.parametrize(
    "note",
    [
        "<script>alert(1)</script>",
        "[x](javascript:alert(1))",
        "[x](JaVaScRiPt:alert(1))",
        "[x](data:text/html;base64,PHNjcmlwdD4=)",
        '<a href="javascript:alert(1)">x</a>',
        "<img src=x onerror=alert(1)>",
        '<div onmouseover="alert(1)">x</div>',
        "![x](javascript:alert(1))",
        '[x](https://ok.example "title" onclick=alert(1))',
        "<style>body{display:none}</style>",
        "<iframe src=https://evil.example></iframe>",
    ],
)
def test_notes_cannot_carry_code(note: str) -> None:
    elements = Elements()
    elements.feed(str(render_markdown(note)))
    assert elements.tags <= ALLOWED_TAGS
    assert not {"script", "img", "iframe", "style"} & elements.tags
    for name, value in elements.attributes:
        assert not name.startswith("on"), (name, value)
        if name == "href":
            assert value.startswith(("https:", "http:", "mailto:")), value


def test_notes_keep_what_a_note_needs() -> None:
    html = str(
        render_markdown("# Title\n\n**bold** `code` [docs](https://example.org/x)\n\n| a |\n|---|\n| 1 |")
    )
    assert "<h4>Title</h4>" in html
    assert "<strong>bold</strong>" in html
    assert "<code>code</code>" in html
    assert '<a href="https://example.org/x" rel="noopener noreferrer nofollow">docs</a>' in html
    assert "<table>" in html


class Elements(HTMLParser):
    """Every tag and attribute in a piece of HTML."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes += [(name, value or "") for name, value in attrs]


def _request(cookie: str | None = None, origin: str | None = None, **extra: str) -> Any:
    headers = {"Host": "127.0.0.1:8780", **extra}
    if cookie:
        headers["Cookie"] = f"{SESSION_COOKIE}={cookie}"
    if origin:
        headers["Origin"] = origin
    return make_mocked_request("POST", "/releases/RE_ABCDEFGH/publish", headers=headers)


def test_sessions_and_csrf() -> None:
    sessions = Sessions("a-token-of-enough-length")
    assert sessions.token_matches("a-token-of-enough-length")
    assert not sessions.token_matches("a-token-of-enough-lengtH")
    anonymous = sessions.start()
    with pytest.raises(Forbidden, match="sign in first"):
        sessions.check_post(_request(anonymous.id), anonymous.csrf)
    signed = sessions.start(signed_in=True)
    assert signed.id != anonymous.id
    assert sessions.check_post(_request(signed.id, "http://127.0.0.1:8780"), signed.csrf) is signed
    with pytest.raises(Forbidden, match="CSRF"):
        sessions.check_post(_request(signed.id), anonymous.csrf)
    with pytest.raises(Forbidden, match="not sent from this dashboard"):
        sessions.check_post(_request(signed.id, "http://127.0.0.1:9999"), signed.csrf)
    with pytest.raises(Forbidden, match="no session"):
        sessions.check_post(_request("forged"), signed.csrf)
    sessions.end(signed)
    with pytest.raises(Forbidden, match="no session"):
        sessions.check_post(_request(signed.id), signed.csrf)
    with pytest.raises(Forbidden, match="read-only"):
        Sessions(None).check_post(_request(signed.id), signed.csrf)


def test_behind_a_tls_proxy_forms_must_come_from_the_public_origin() -> None:
    """The proxy reaches the dashboard over plain HTTP: only the public URL's origin may post, and the
    session cookie is Secure when that URL is https. What the request says of itself is not believed."""
    public = Sessions("a-token-of-enough-length", public_origin="https://dash.example.org")
    signed = public.start(signed_in=True)
    proxied = _request(signed.id, "https://dash.example.org", Host="dash.example.org")
    assert public.check_post(proxied, signed.csrf) is signed
    assert public.cookie_secure(proxied)
    for origin in ("http://dash.example.org", "http://127.0.0.1:8780", "https://evil.example"):
        with pytest.raises(Forbidden, match="not sent from this dashboard"):
            public.check_post(_request(signed.id, origin), signed.csrf)
    assert not Sessions("t" * 16, public_origin="http://10.0.0.5:8780").cookie_secure(_request())

    # Without the public URL: the request's own scheme and host; forwarded headers change nothing.
    local = Sessions("a-token-of-enough-length")
    mine = local.start(signed_in=True)
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "dash.example.org"}
    forwarded |= {"Forwarded": "proto=https;host=dash.example.org"}
    for origin in ("https://dash.example.org", "https://127.0.0.1:8780"):
        with pytest.raises(Forbidden, match="not sent from this dashboard"):
            local.check_post(_request(mine.id, origin, **forwarded), mine.csrf)
    assert not local.cookie_secure(_request(mine.id, **forwarded))


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://dash.example.org", "https://dash.example.org"),
        ("https://Dash.Example.org/", "https://dash.example.org"),
        ("HTTPS://dash.example.org:443", "https://dash.example.org"),
        ("https://dash.example.org:8443/", "https://dash.example.org:8443"),
        ("http://10.0.0.5:80", "http://10.0.0.5"),
        ("http://[::1]:8780", "http://[::1]:8780"),
    ],
)
def test_the_public_url_gives_the_origin_browsers_send(url: str, origin: str) -> None:
    settings = DashboardSettings.from_env({"RC_DASHBOARD_PUBLIC_URL": url})
    assert settings.public_origin == origin
    overridden = DashboardSettings.from_env({"RC_DASHBOARD_PUBLIC_URL": "x"}, public_url=url)
    assert overridden.public_origin == origin


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("dash.example.org", "https:// or http://"),
        ("ftp://dash.example.org", "https:// or http://"),
        ("https://", "name a host"),
        ("https://dash.example.org/dashboard", "no path"),
        ("https://dash.example.org/?x=1", "no path"),
        ("https://dash.example.org/#top", "no path"),
        ("https://admin:secret@dash.example.org", "user or password"),
        ("https://dash.example.org:99999", "cannot be read"),
        ("https://dash.example.org:0", "1 to 65535"),
        ("https://bücher.example", "ASCII"),
    ],
)
def test_a_public_url_that_is_not_an_origin_is_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DashboardSettings.from_env({"RC_DASHBOARD_PUBLIC_URL": url})


def test_without_a_public_url_there_is_none() -> None:
    assert DashboardSettings.from_env({}).public_origin is None
    assert DashboardSettings.from_env({"RC_DASHBOARD_PUBLIC_URL": "  "}).public_origin is None


def test_only_local_paths_are_followed_after_sign_in() -> None:
    assert local_path("/releases/RE_ABCDEFGH") == "/releases/RE_ABCDEFGH"
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example", "", None, "releases"):
        assert local_path(target) == "/"


def test_settings_from_the_environment() -> None:
    settings = DashboardSettings.from_env(
        {"RC_NAMESPACE": "prod", "RC_DASHBOARD_TOKEN": "x" * 16, "RC_TIMEOUT": "3"}, listen="0.0.0.0:9000"
    )
    assert (settings.namespace, settings.timeout, settings.listen_address) == ("prod", 3.0, ("0.0.0.0", 9000))
    assert not settings.read_only
    assert DashboardSettings.from_env({}).listen == "127.0.0.1:8780"
    assert DashboardSettings.from_env({}).read_only
    # The services page's silence threshold: the coordinator's variable, 30 s unless set.
    assert DashboardSettings.from_env({}).heartbeat_timeout == 30
    assert DashboardSettings.from_env({"RC_HEARTBEAT_TIMEOUT": "90"}).heartbeat_timeout == 90
    assert (
        DashboardSettings.from_env({"RC_HEARTBEAT_TIMEOUT": "90"}, heartbeat_timeout="5").heartbeat_timeout
        == 5
    )
    for environ, message in [
        ({"RC_DASHBOARD_TOKEN": "short"}, "at least 16"),
        ({"RC_DASHBOARD_LISTEN": "8780"}, "HOST:PORT"),
        ({"RC_TIMEOUT": "soon"}, "number of seconds"),
        ({"RC_DASHBOARD_POLL_SECONDS": "0"}, "positive"),
        ({"RC_HEARTBEAT_TIMEOUT": "-1"}, "RC_HEARTBEAT_TIMEOUT must be a positive number"),
    ]:
        with pytest.raises(ValueError, match=message):
            DashboardSettings.from_env(environ)
