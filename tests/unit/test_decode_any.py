"""``decode_any`` reads a body once, the ``kind`` choosing the model, and says what is wrong in one line."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from coordinator.admission import admit_reply
from schemas.enums import Action, Outcome
from schemas.messages import (
    MAX_BODY_BYTES,
    Command,
    Heartbeat,
    MessageError,
    Progress,
    TaskReply,
    decode,
    decode_any,
    encode,
)
from task_sdk.testing import make_command, make_release
from tests.sabotage.plugin import caught_by

REPLIES = (TaskReply, Progress, Heartbeat)
REPLY = TaskReply(
    message_id=uuid.uuid4().hex,
    sent_at=datetime(2026, 12, 2, tzinfo=UTC),
    release_id="RE_00000001",
    service="portal",
    in_reply_to=uuid.uuid4().hex,
    action=Action.INITIALIZE,
    outcome=Outcome.ACCEPTED,
    instance_id="portal-1",
    sdk_version="1.0",
)


def changed(**fields: Any) -> bytes:
    """The reply's body with ``fields`` set (``None``: removed)."""
    body = json.loads(encode(REPLY))
    for name, value in fields.items():
        if value is None:
            body.pop(name)
        else:
            body[name] = value
    return json.dumps(body).encode()


def reason(body: bytes) -> str:
    with pytest.raises(MessageError) as refused:
        decode_any(body, REPLIES)
    return refused.value.reason


def test_a_valid_body_becomes_the_model_its_kind_names() -> None:
    assert decode_any(encode(REPLY), REPLIES) == REPLY
    beat = Heartbeat(
        message_id="b1", sent_at=REPLY.sent_at, service="portal", instance_id="portal-1", sdk_version="1.0"
    )
    assert decode_any(encode(beat), REPLIES) == beat


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "invalid JSON: Invalid JSON: key must be a string at line 1 column 2"),
        (b"[]", "invalid message: body: Input should be an object"),
        (changed(kind=None), "invalid message: kind: Field required"),
        (
            changed(kind="bogus"),
            "invalid message: kind: Input should be 'command', 'reply', 'progress', 'heartbeat', "
            "'admin_request', 'admin_answer' or 'announcement'",
        ),
        (changed(kind="command"), "unexpected kind 'command' here (expected TaskReply, Progress, Heartbeat)"),
        (changed(release_id=None), "invalid TaskReply: release_id: Field required"),
        (changed(extra=1), "invalid TaskReply: extra: Extra inputs are not permitted"),
        (changed(instance_id=5), "invalid TaskReply: instance_id: Input should be a valid string"),
        (changed(sent_at=1_700_000_000), "invalid TaskReply: sent_at: Input should be a valid datetime"),
        (
            json.dumps({"kind": "heartbeat", "message_id": "x"}).encode(),
            "invalid Heartbeat: service: Field required; sent_at: Field required; instance_id: Field "
            "required; sdk_version: Field required",
        ),
    ],
)
def test_a_refusal_names_the_kind_or_the_model_and_what_is_wrong(body: bytes, expected: str) -> None:
    assert reason(body) == expected


def test_an_oversize_body_is_refused_before_it_is_read() -> None:
    assert reason(b" " * (MAX_BODY_BYTES + 1)).startswith("oversize: ")


@caught_by("accept-oversize")
def test_a_valid_message_over_the_size_limit_is_refused_by_the_coordinator_and_by_services() -> None:
    padding = b" " * MAX_BODY_BYTES  # valid JSON still: only its size is wrong
    with pytest.raises(MessageError, match=r"^oversize: "):
        admit_reply(encode(REPLY) + padding, "reply.portal.reply", "portal", trusted_users=())
    command = make_command("portal", Action.INITIALIZE, make_release())
    with pytest.raises(MessageError, match=r"^oversize: "):
        decode(encode(command) + padding, Command)  # what a task service does with a command
