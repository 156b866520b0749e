"""``schemas/asyncapi.yaml`` is current, valid AsyncAPI 3.0, and describes what the models accept."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from schemas import asyncapi
from schemas.enums import Action, Outcome
from schemas.messages import Command, Envelope, Heartbeat, ReleaseInfo, TaskReply, encode
from schemas.topology import SCHEMA_VERSION_HEADER

DATA = Path(__file__).with_name("data")


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded = yaml.safe_load(asyncapi.OUTPUT.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_checked_in_file_is_current() -> None:
    assert asyncapi.main(["--check"]) == 0, "run `python -m schemas.asyncapi`"
    assert asyncapi.render() == asyncapi.render(), "the output is deterministic"


def test_check_detects_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "asyncapi.yaml"
    stale.write_text(asyncapi.render().replace("version: 1.0.0", "version: 0.9.0"), encoding="utf-8")
    assert asyncapi.main(["--check", "--output", str(stale)]) == 1
    assert asyncapi.main(["--output", str(stale)]) == 0
    assert asyncapi.main(["--check", "--output", str(stale)]) == 0


def test_valid_asyncapi_3(document: dict[str, Any]) -> None:
    schema = json.loads((DATA / "asyncapi-3.0.0.schema.json").read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("operations", "sendCommand", "action"), "publish"),
        (("channels", "commands", "bindings", "amqp", "exchange", "type"), "bogus"),
        (("components", "schemas", "Command", "required"), "not-a-list"),
    ],
)
def test_validation_catches_mistakes(document: dict[str, Any], path: tuple[str, ...], value: str) -> None:
    """Control: the vendored schema (with its bundled bindings) really is what validates the document."""
    broken = copy.deepcopy(document)
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    schema = json.loads((DATA / "asyncapi-3.0.0.schema.json").read_text(encoding="utf-8"))
    assert not jsonschema.Draft7Validator(schema).is_valid(broken)


def _walk_refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _walk_refs(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in _walk_refs(item)]
    return []


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    refs = _walk_refs(document)
    assert refs
    for ref in refs:
        assert ref.startswith("#/"), ref
        node: Any = document
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
    assert "$defs" not in json.dumps(document), "every $defs is hoisted into components/schemas"


def test_channels_and_operations(document: dict[str, Any]) -> None:
    channels = document["channels"]
    assert channels["commands"]["address"] == "task.{service}.{action}"
    assert channels["commands"]["bindings"]["amqp"]["exchange"]["name"] == "rc.commands"
    assert {c["address"] for c in channels.values()} >= {
        "reply.{service}.reply",
        "reply.{service}.progress",
        "reply.{service}.heartbeat",
        "admin",
        "release.{state}",
    }
    actions = {name: op["action"] for name, op in document["operations"].items()}
    assert actions["sendCommand"] == "send"
    assert actions["receiveTaskReply"] == "receive"
    assert actions["sendAnnouncement"] == "send"
    assert document["operations"]["receiveAdminRequest"]["reply"]["channel"] == {
        "$ref": "#/channels/adminAnswers"
    }
    for message in document["components"]["messages"].values():
        assert message["headers"]["properties"]


def _examples() -> list[Envelope]:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    release = ReleaseInfo(id="RE_0000ABCD", name="r1", studies=("S1",), tentative_version="0.0.1")
    return [
        Command(
            message_id="m1",
            sent_at=now,
            release_id=release.id,
            service="portal",
            action=Action.START,
            release=release,
        ),
        TaskReply(
            message_id="m2",
            sent_at=now,
            release_id=release.id,
            service="portal",
            in_reply_to="m1",
            action=Action.START,
            outcome=Outcome.STAGED,
            instance_id="i1",
            sdk_version="0.1.0",
        ),
        Heartbeat(message_id="m3", sent_at=now, service="portal", instance_id="i1", sdk_version="0.1.0"),
    ]


@pytest.mark.parametrize("message", _examples(), ids=lambda m: type(m).__name__)
def test_payload_schemas_accept_real_messages(document: dict[str, Any], message: Envelope) -> None:
    resource: Resource[Any] = Resource.from_contents(document, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource("urn:contract", resource)
    name = type(message).__name__
    payload = {"$ref": f"urn:contract#/components/schemas/{name}"}
    validator = jsonschema.Draft202012Validator(payload, registry=registry)
    body = json.loads(encode(message))
    validator.validate(body)
    wrong = body | {"service": "Not A Name"}
    assert not validator.is_valid(wrong)
    headers = document["components"]["messages"][name]["headers"]
    jsonschema.Draft202012Validator(headers).validate({SCHEMA_VERSION_HEADER: 1})
