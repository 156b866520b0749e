"""The real ``rc`` entry point, as a subprocess, against a fake coordinator on the real broker."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any

import aio_pika

from coordinator.admin import NO_BROKER_USER
from schemas.broker_url import broker_user, mask_url
from schemas.enums import ReleaseState, TaskState
from schemas.messages import AdminAnswer, AdminRequest, ListServices, decode, encode
from schemas.topology import SCHEMA_VERSION_HEADER, Topology
from tests.cli.conftest import Rc
from tests.cli.fake_coordinator import FakeCoordinator

RELEASE_ID = re.compile(r"^RE_[0-9A-Z]{8}$")


async def create(rc: Rc, name: str = "June", *extra: str) -> dict[str, Any]:
    outcome = await rc("release", "create", "--name", name, "--study", "SD_ONE", *extra, "--json")
    assert outcome.code == 0, outcome.stderr
    data: dict[str, Any] = outcome.json()
    return data


# ---------------------------------------------------------------------- releases


async def test_create_show_and_list(rc: Rc, coordinator: FakeCoordinator) -> None:
    outcome = await rc(
        "--json",
        "release",
        "create",
        "--name",
        "June data",
        "--study",
        "SD_AAA",
        "--study",
        "SD_BBB",
        "--tag",
        "dr-1",
        "--major",
        "--description",
        "the June release",
    )
    assert outcome.code == 0, outcome.stderr
    created = outcome.json()
    assert RELEASE_ID.match(created["id"])
    assert created["state"] == "waiting"
    assert created["version"] == "0.0.1"
    assert created["studies"] == ["SD_AAA", "SD_BBB"]
    assert created["tags"] == ["dr-1"]
    assert created["is_major"] is True
    assert created["author"] == "tester"
    assert set(created["tasks"]) == {"portal", "search-index"}
    assert created["tasks"]["portal"]["state"] == "waiting"

    shown = (await rc("release", "show", created["id"], "--json")).json()
    assert shown["id"] == created["id"]
    assert {"id", "state", "version", "tasks", "events", "held", "created_at"} <= set(shown)
    assert [event["kind"] for event in shown["events"]] == ["created"]

    second = await create(rc, "July")
    listed, page, staged = await asyncio.gather(
        rc("release", "list", "--json"),
        rc("release", "list", "--limit", "1", "--json"),
        rc("release", "list", "--state", "staged", "--json"),
    )
    assert [release["id"] for release in listed.json()["releases"]] == [second["id"], created["id"]]
    assert listed.json()["next_cursor"] is None
    assert listed.json()["releases"][0]["version"] == "0.0.2"
    assert len(page.json()["releases"]) == 1
    assert page.json()["next_cursor"] == "1"
    assert staged.json() == {"releases": [], "next_cursor": None}
    rest = (await rc("release", "list", "--limit", "1", "--cursor", "1", "--json")).json()
    assert [release["id"] for release in rest["releases"]] == [created["id"]]


async def test_hold_unhold_publish(rc: Rc, coordinator: FakeCoordinator) -> None:
    release_id = str((await create(rc))["id"])
    await coordinator.stage(release_id)

    held = await rc("release", "hold", release_id, "--json")
    assert held.code == 0, held.stderr
    assert held.json()["held"] is True

    refused = await rc("release", "publish", release_id, "--json")
    assert refused.code == 1
    assert refused.json() == {"error": "refused: the release is on hold; unhold it before publishing"}
    assert refused.stderr.strip() == "rc: refused: the release is on hold; unhold it before publishing"

    unheld = await rc("release", "unhold", release_id, "--json")
    assert unheld.code == 0, unheld.stderr
    assert unheld.json()["held"] is False

    published = await rc("release", "publish", release_id, "--json")
    assert published.code == 0, published.stderr
    data = published.json()
    assert data["state"] == "publishing"
    assert data["final_version"] == data["version"] == "0.1.0"
    assert {task["state"] for task in data["tasks"].values()} == {"publishing"}


async def test_refusal_prints_the_coordinators_reason(rc: Rc, coordinator: FakeCoordinator) -> None:
    release_id = str((await create(rc))["id"])
    await coordinator.update(release_id, state=ReleaseState.RUNNING, task_state=TaskState.RUNNING)

    human = await rc("release", "publish", release_id)
    assert human.code == 1
    assert human.stderr == "rc: refused: only a staged release can be published; this one is running\n"
    assert human.stdout == ""

    machine = await rc("release", "publish", release_id, "--json")
    assert machine.code == 1
    assert machine.json() == {"error": "refused: only a staged release can be published; this one is running"}

    unknown = await rc("release", "show", "RE_00000000", "--json")
    assert unknown.code == 1
    assert unknown.json() == {"error": "refused: unknown release RE_00000000"}


async def test_cancel(rc: Rc, coordinator: FakeCoordinator) -> None:
    release_id = str((await create(rc))["id"])

    canceled = await rc("release", "cancel", release_id, "--reason", "wrong studies", "--json")
    assert canceled.code == 0, canceled.stderr
    data = canceled.json()
    assert data["state"] == "canceled"
    assert data["state_reason"] == "wrong studies"
    cancel = coordinator.received[-1].request
    assert cancel is not None
    assert cancel.operation.op == "cancel"

    again = await rc("release", "cancel", release_id, "--reason", "twice")
    assert again.code == 1
    assert again.stderr.strip() == "rc: refused: the release is already canceled"


async def test_human_output(rc: Rc, coordinator: FakeCoordinator) -> None:
    release_id = str((await create(rc, "Human"))["id"])
    await coordinator.update(
        release_id, state=ReleaseState.RUNNING, task_state=TaskState.RUNNING, progress=42, message="indexing"
    )

    shown = await rc("release", "show", release_id)
    assert shown.code == 0, shown.stderr
    for expected in (release_id, "Human", "running", "0.0.1 (tentative)", "search-index", "42%", "indexing"):
        assert expected in shown.stdout
    assert "recent events" in shown.stdout

    listed = await rc("release", "list")
    assert listed.code == 0, listed.stderr
    assert release_id in listed.stdout
    assert "running" in listed.stdout

    await coordinator.stage(release_id)
    held = await rc("release", "hold", release_id)
    assert held.code == 0, held.stderr
    assert held.stdout.startswith(f"held {release_id} 'Human' (staged (held)")

    services = await rc("service", "list")
    assert services.code == 0, services.stderr
    assert "search-index" in services.stdout


async def test_the_audit_trail_names_the_broker_user_with_the_operators_label(
    rc: Rc, coordinator: FakeCoordinator, amqp_url: str
) -> None:
    """As the real coordinator records it (``test_real_coordinator_safety.py``): the actor is the broker user
    ``rc`` logs in as, and the name it gives (``RC_OPERATOR``) a label beside it."""
    user = broker_user(amqp_url)
    release_id = str((await create(rc, "Audited"))["id"])
    await coordinator.stage(release_id)
    assert (await rc("release", "hold", release_id)).code == 0
    shown = await rc("release", "show", release_id, "--json")
    assert shown.code == 0, shown.stderr
    by_operators = [
        (event["kind"], event["actor"], event["label"], event["reason"])
        for event in shown.json()["events"]
        if event["kind"] != "transition"
    ]
    assert by_operators == [
        ("created", user, "tester", "created by tester with services portal, search-index"),
        ("operator", user, "tester", "held by tester"),
    ]
    human = await rc("release", "show", release_id)
    assert f"{user} (tester)" in human.stdout


# ---------------------------------------------------------------------- services


async def test_services(rc: Rc, coordinator: FakeCoordinator) -> None:
    listed = await rc("service", "list", "--json")
    assert listed.code == 0, listed.stderr
    services = {service["name"]: service for service in listed.json()["services"]}
    assert set(services) == {"portal", "search-index", "file-service"}
    assert services["portal"]["required"] is True
    assert services["file-service"]["required"] is False

    required = await rc("service", "require", "file-service", "--json")
    assert required.code == 0, required.stderr
    assert {s["name"]: s["required"] for s in required.json()["services"]}["file-service"] is True

    unrequired = await rc("service", "unrequire", "portal", "--json")
    assert unrequired.code == 0, unrequired.stderr
    assert {s["name"]: s["required"] for s in unrequired.json()["services"]}["portal"] is False

    created = await create(rc)
    assert set(created["tasks"]) == {"file-service", "search-index"}


# ---------------------------------------------------------------------- the request on the wire


async def test_request_follows_the_protocol(rc: Rc, coordinator: FakeCoordinator, amqp_url: str) -> None:
    outcome = await rc("service", "list", "--json", env={"RC_OPERATOR": "alice"})
    assert outcome.code == 0, outcome.stderr
    [received] = coordinator.received
    assert received.request is not None
    assert received.request.operator == "alice"
    assert received.request.operation.op == "services"
    properties = received.properties
    assert properties["content_type"] == "application/json"
    assert properties["type"] == "admin_request"
    assert properties["message_id"] == received.request.message_id
    assert properties["correlation_id"] == received.request.message_id
    assert properties["reply_to"].startswith("amq.gen-")  # server-named, exclusive
    assert properties["user_id"] == "guest"
    assert properties["expiration"] is not None  # a request nobody took in time is not executed later
    assert received.headers[SCHEMA_VERSION_HEADER] == 1


async def test_a_request_without_user_id_is_refused_as_the_real_coordinator_refuses_it(
    coordinator: FakeCoordinator, amqp_url: str, namespace: str
) -> None:
    topology = Topology(namespace)
    request = AdminRequest(
        message_id="anonymous", sent_at=datetime.now(UTC), operator="alice", operation=ListServices()
    )
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        replies = await channel.declare_queue("", exclusive=True)
        exchange = await channel.get_exchange(topology.admin_exchange, ensure=False)
        await exchange.publish(
            aio_pika.Message(encode(request), message_id=request.message_id, reply_to=replies.name),
            topology.admin_routing_key,
        )
        async with replies.iterator() as answers:
            message = await asyncio.wait_for(anext(answers), 10)
            await message.ack()
    answer = decode(message.body, AdminAnswer)
    assert (answer.in_reply_to, answer.ok, answer.error) == ("anonymous", False, NO_BROKER_USER)


# ---------------------------------------------------------------------- bad input: exit 2, nothing sent
# (the full table of bad inputs is in test_input.py, in-process)


async def test_bad_input_is_refused_before_sending(rc: Rc, coordinator: FakeCoordinator) -> None:
    human, machine, usage = await asyncio.gather(
        rc("release", "show", "re_12345678"),
        rc("release", "create", "--name", "x", "--study", "bad study!", "--json"),
        rc("release", "list", "--limit", "0"),
    )
    assert human.code == 2
    assert human.stderr == (
        "rc: invalid release id 're_12345678': expected RE_ followed by 8 uppercase letters or digits "
        "(e.g. RE_0A1B2C3D)\n"
    )
    assert machine.code == 2
    assert machine.json()["error"].startswith("invalid input: --study #1: String should match pattern")
    assert usage.code == 2
    assert coordinator.received == []


# ---------------------------------------------------------------------- no coordinator: exit 3


async def test_no_coordinator_answering_times_out_clearly(rc: Rc, amqp_url: str, namespace: str) -> None:
    async with FakeCoordinator(amqp_url, namespace, silent=True) as silent:
        outcome, as_json = await asyncio.gather(
            rc("release", "list", "--timeout", "1"), rc("--timeout", "1", "--json", "service", "list")
        )
        assert len(silent.received) == 2  # the requests were delivered; nobody answered
    message = f"no coordinator answered within 1s on {mask_url(amqp_url)} (namespace {namespace})"
    assert outcome.code == 3
    assert outcome.stdout == ""
    assert outcome.stderr == f"rc: {message}\n"
    # It waited the timeout; the upper bound only catches a hang (a loaded machine starts Python slowly).
    assert 1 <= outcome.elapsed < 30
    assert as_json.code == 3
    assert as_json.json() == {"error": message}
    assert 1 <= as_json.elapsed < 30


async def test_no_coordinator_ever_ran(rc: Rc, namespace: str) -> None:
    outcome = await rc("release", "list", "--timeout", "60")
    assert outcome.code == 3
    assert f"exchange '{namespace}.admin' does not exist" in outcome.stderr
    assert outcome.elapsed < 60  # said at once, without waiting for an answer that cannot come


async def test_unroutable_request(rc: Rc, amqp_url: str, namespace: str) -> None:
    """The admin exchange exists but no queue is bound: the request comes back, which is reported."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_exchange(
            Topology(namespace).admin_exchange, aio_pika.ExchangeType.DIRECT, durable=True
        )
    outcome = await rc("service", "list", "--timeout", "1")
    assert outcome.code == 3
    assert "no coordinator is listening" in outcome.stderr
    assert "unroutable" in outcome.stderr


async def test_broker_unreachable_masks_the_password(rc: Rc) -> None:
    outcome = await rc(
        "release", "list", "--timeout", "1", env={"RC_AMQP_URL": "amqp://ops:s3cr%40t@127.0.0.1:1/"}
    )
    assert outcome.code == 3
    assert outcome.stderr.startswith("rc: cannot reach the broker at amqp://ops:***@127.0.0.1:1/")
    assert outcome.stderr.count("\n") == 1
    assert "s3cr" not in outcome.stderr + outcome.stdout


# ---------------------------------------------------------------------- watch


async def shows_received(coordinator: FakeCoordinator, count: int) -> None:
    """Wait until the fake has had ``count`` more ``show`` requests than it had when called."""
    await coordinator.wait_for_requests("show", coordinator.count("show") + count)


async def test_watch_follows_progress_until_published(rc: Rc, coordinator: FakeCoordinator) -> None:
    release_id = str((await create(rc))["id"])
    await coordinator.update(
        release_id, state=ReleaseState.RUNNING, task_state=TaskState.RUNNING, progress=10
    )
    watcher = asyncio.create_task(rc("release", "watch", release_id, "--interval", "0.2", "--json"))
    await shows_received(coordinator, 2)  # the first show, then a poll
    await coordinator.update(release_id, progress=55, message="halfway")
    await shows_received(coordinator, 2)
    await coordinator.stage(release_id)
    await coordinator.update(
        release_id, state=ReleaseState.PUBLISHING, final_version="0.1.0", version="0.1.0"
    )
    await coordinator.update(release_id, state=ReleaseState.PUBLISHED, task_state=TaskState.PUBLISHED)
    outcome = await asyncio.wait_for(watcher, 15)
    assert outcome.code == 0, outcome.stderr
    views = outcome.lines()
    assert all(view["id"] == release_id for view in views)
    progress = [view["tasks"]["portal"]["progress"] for view in views]
    assert progress[0] == 10
    assert 55 in progress
    assert any(view["tasks"]["portal"]["last_message"] == "halfway" for view in views)
    assert views[-1]["state"] == "published"
    assert views[-1]["version"] == "0.1.0"


async def test_watch_sees_announcements_at_once(rc: Rc, coordinator: FakeCoordinator) -> None:
    """With polls 30 s apart, only the announcement can end the watch quickly."""
    release_id = str((await create(rc))["id"])
    other_id = str((await create(rc, "other"))["id"])
    watcher = asyncio.create_task(rc("release", "watch", release_id, "--interval", "30", "--json"))
    await shows_received(coordinator, 1)
    await coordinator.update(other_id, state=ReleaseState.CANCELED)  # someone else's: ignored
    canceled = await coordinator.update(
        release_id, state=ReleaseState.CANCELED, state_reason="operator said so"
    )
    async with asyncio.timeout(10):
        while not watcher.done():  # announce again until the watcher, subscribed a moment later, has it
            await asyncio.sleep(0.2)
            await coordinator.announce(canceled)
    outcome = watcher.result()
    assert outcome.code == 1
    views = outcome.lines()
    assert views[0]["state"] == "waiting"
    assert views[-1]["state"] == "canceled"
    assert {view["id"] for view in views} == {release_id}
    assert f"rc: {release_id} ended canceled: operator said so" in outcome.stderr


async def test_watch_human_output_ends_failed(rc: Rc, coordinator: FakeCoordinator) -> None:
    release_id = str((await create(rc))["id"])
    await coordinator.update(release_id, state=ReleaseState.RUNNING, progress=30, message="copying")
    watcher = asyncio.create_task(rc("release", "watch", release_id, "--interval", "0.2"))
    await shows_received(coordinator, 1)
    await coordinator.update(release_id, state=ReleaseState.FAILED, state_reason="search-index failed")
    outcome = await asyncio.wait_for(watcher, 10)
    assert outcome.code == 1
    assert "search-index" in outcome.stdout
    assert "failed" in outcome.stdout
    assert "ended failed: search-index failed" in outcome.stderr


async def test_watch_unknown_release_is_refused(rc: Rc, coordinator: FakeCoordinator) -> None:
    outcome = await rc("release", "watch", "RE_ZZZZZZZZ")
    assert outcome.code == 1
    assert outcome.stderr.strip() == "rc: refused: unknown release RE_ZZZZZZZZ"
