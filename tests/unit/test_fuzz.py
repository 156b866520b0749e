"""Random and mutated messages never escape admission as anything but a MessageError with a reason,
and nothing invalid ever reaches the state machine."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.admission import admit_reply
from coordinator.machine import ProgressReceived, ReplyReceived, decide
from schemas.enums import OUTCOMES_BY_ACTION, Action
from schemas.messages import MAX_BODY_BYTES, Heartbeat, MessageError, Progress, TaskReply, encode
from tests.unit.releases import TIMEOUTS, Driver

NOW = datetime(2026, 1, 1, tzinfo=UTC)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)


def valid_reply(release_id: str, service: str, action: Action, outcome_index: int) -> TaskReply:
    outcomes = sorted(OUTCOMES_BY_ACTION[action])
    return TaskReply(
        message_id="m-1",
        sent_at=NOW,
        release_id=release_id,
        service=service,
        in_reply_to="c-1",
        action=action,
        outcome=outcomes[outcome_index % len(outcomes)],
        instance_id="i",
        sdk_version="1",
    )


@st.composite
def messages(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    service = draw(st.sampled_from(["portal", "search-index", "file-service"]))
    kind = draw(st.sampled_from(["reply", "progress", "heartbeat"]))
    if kind == "reply":
        action = draw(st.sampled_from(list(Action)))
        body = json.loads(encode(valid_reply("RE_00000001", service, action, draw(st.integers(0, 3)))))
    elif kind == "progress":
        body = json.loads(
            encode(
                Progress(
                    message_id="p",
                    sent_at=NOW,
                    release_id="RE_00000001",
                    service=service,
                    in_reply_to="c",
                    percent=draw(st.floats(0, 100)),
                    instance_id="i",
                )
            )
        )
    else:
        body = json.loads(
            encode(Heartbeat(message_id="h", sent_at=NOW, service=service, instance_id="i", sdk_version="1"))
        )
    return body, kind


MUTATIONS = [
    "none",
    "drop",
    "add",
    "retype",
    "truncate",
    "garbage",
    "oversize",
    "wrong_key",
    "spoof",
    "no_user",
]


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    message=messages(),
    mutation=st.sampled_from(MUTATIONS),
    pick=st.integers(0, 50),
    value=json_values,
    garbage=st.binary(max_size=200),
)
def test_admission_refuses_every_mutation_with_a_reason(
    message: tuple[dict[str, Any], str], mutation: str, pick: int, value: object, garbage: bytes
) -> None:
    body, kind = message
    service = str(body["service"])
    routing_key, user_id = f"reply.{service}.{kind}", service
    keys = sorted(body)
    key = keys[pick % len(keys)]
    raw: bytes
    match mutation:
        case "drop":
            body.pop(key)
        case "add":
            body[f"unexpected_{pick}"] = value
        case "retype":
            body[key] = value
        case "wrong_key":
            routing_key = f"reply.other-service.{kind}"
        case "spoof":
            user_id = "mallory"
        case "no_user":
            user_id = None  # type: ignore[assignment]
    raw = json.dumps(body).encode()
    if mutation == "truncate":
        raw = raw[: pick % max(1, len(raw) - 1)]
    if mutation == "garbage":
        raw = garbage
    if mutation == "oversize":
        raw = raw + b" " * MAX_BODY_BYTES
    refusal: MessageError | None = None
    try:
        admitted = admit_reply(raw, routing_key, user_id, trusted_users=())
    except MessageError as error:
        refusal = error
    if refusal is not None:
        assert mutation != "none", f"a valid message was refused: {refusal.reason}"
        assert refusal.reason
        assert "\n" not in refusal.reason
        return
    # Only a mutation that happens to leave a valid message (an optional field dropped, a value
    # replaced by another valid one) may be admitted; it is then well-formed and signed by its service.
    assert mutation in {"none", "drop", "retype"}, f"{mutation} was admitted"
    assert admitted.service == service == user_id


@settings(max_examples=1000, deadline=None)
@given(
    service=st.sampled_from(["portal", "search-index", "file-service", "intruder"]),
    action=st.sampled_from(list(Action)),
    outcome_index=st.integers(0, 3),
    path=st.sampled_from(["waiting", "initializing", "running", "staged", "publishing", "published"]),
)
def test_admitted_messages_never_make_the_machine_raise(
    service: str, action: Action, outcome_index: int, path: str
) -> None:
    from schemas.enums import ReleaseState

    driver = Driver().to(ReleaseState(path))
    reply = valid_reply(driver.release.id, service, action, outcome_index)
    decision = decide(driver.release, ReplyReceived(reply, NOW), TIMEOUTS)
    assert decision.reason
    if not decision.applied:
        assert decision.release is driver.release
    progress = Progress(
        message_id="p",
        sent_at=NOW,
        release_id=driver.release.id,
        service=service,
        in_reply_to="c",
        percent=10,
        instance_id="i",
    )
    assert decide(driver.release, ProgressReceived(progress, NOW), TIMEOUTS).reason
