"""The real ``rc``, as a subprocess, against the real coordinator on RabbitMQ: names and the audit trail are
printed as text (never Rich markup), their control characters made visible. Generated reasons, progress notes
and the ``rc:`` error line are in ``test_terminal_safety.py``."""

from __future__ import annotations

import re

from tests.cli.conftest import Outcome, Rc
from tests.cli.test_real_coordinator import live_coordinator, ok, rc  # noqa: F401 (fixtures)
from tests.coordinator.fixtures import Running

#: A control character that reached the output: C0 (but line feed), DEL, C1, bidi overrides and isolates.
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
#: A name that clears the screen and writes the clipboard (OSC 52), with markup around it.
ESCAPING_NAME = "evil \x1b[2J\x1b]52;c;ZXZpbA==\x07 [bold]name[/bold] \u202eeman"


async def create(rc: Rc, name: str) -> Outcome:  # noqa: F811
    """Create a release named ``name`` (human output); it waits for portal, which is required but absent."""
    ok(await rc("service", "require", "portal", "--json"))
    return await rc("release", "create", "--name", name, "--study", "SD_ONE")


def assert_safe(*outputs: str) -> None:
    for output in outputs:
        found = UNSAFE.search(output)
        assert found is None, f"{found.group()!r} reached the terminal in {output!r}"
        assert "Traceback" not in output


async def test_create_prints_a_name_with_markup_literally(rc: Rc, live_coordinator: Running) -> None:  # noqa: F811
    created = await create(rc, "evil [/bold] name")
    assert created.code == 0, created.stderr
    assert_safe(created.stdout, created.stderr)
    assert "'evil [/bold] name'" in created.stdout
    release_id = re.search(r"RE_[0-9A-Z]{8}", created.stdout)
    assert release_id is not None

    listed = await rc("release", "list")
    assert listed.code == 0, listed.stderr
    assert "evil [/bold] name" in listed.stdout
    shown = await rc("release", "show", release_id.group())
    assert shown.code == 0, shown.stderr
    assert "evil [/bold] name" in shown.stdout
    assert_safe(listed.stdout, listed.stderr, shown.stdout, shown.stderr)


async def test_escape_sequences_in_a_name_are_shown_not_run(
    rc: Rc,  # noqa: F811
    live_coordinator: Running,  # noqa: F811
) -> None:
    created = await create(rc, ESCAPING_NAME)
    assert created.code == 0, created.stderr
    assert "\\x1b[2J" in created.stdout
    release_id = ok(await rc("release", "list", "--json"))["releases"][0]["id"]
    outcomes = [
        await rc("release", "list"),
        await rc("release", "show", release_id),
        await rc("release", "events", release_id),
    ]
    watched = await rc("release", "watch", release_id)
    assert watched.code == 1
    assert watched.stderr.startswith(f"rc: {release_id} ended canceled")  # portal never consumed
    assert "\\x1b[2J" in watched.stdout
    for outcome in outcomes:
        assert outcome.code == 0, outcome.stderr
    assert all("\\x1b[2J" in outcome.stdout for outcome in outcomes[:2])  # list and show
    assert_safe(
        created.stdout,
        *(text for outcome in [*outcomes, watched] for text in (outcome.stdout, outcome.stderr)),
    )


async def test_the_audit_trail_shows_the_operators_label_beside_the_broker_user(
    rc: Rc,  # noqa: F811
    live_coordinator: Running,  # noqa: F811
) -> None:
    ok(await rc("service", "require", "portal", "--json"))
    created = ok(await rc("release", "create", "--name", "June", "--study", "SD_ONE", "--json"))
    shown = await rc("release", "show", created["id"])
    assert shown.code == 0, shown.stderr
    assert "guest (tester)" in shown.stdout  # the rc fixture creates as RC_OPERATOR=tester, user guest
    events = await rc("release", "events", created["id"])
    assert "guest (tester)" in events.stdout
