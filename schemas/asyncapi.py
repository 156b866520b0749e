"""The AsyncAPI 3.0 document of the whole message contract, generated from the pydantic models.

    python -m schemas.asyncapi            # (re)write schemas/asyncapi.yaml
    python -m schemas.asyncapi --check    # exit 1 if the checked-in file is stale
    python -m schemas.asyncapi --stdout   # print it

Channels are the exchange/routing-key patterns of docs/design.md, section 3 (default namespace ``rc``);
operations are written from the coordinator's point of view (it *sends* commands and announcements and
*receives* replies, progress, heartbeats and admin requests, answering those on their ``reply_to``).
Every payload is the model's JSON Schema; every ``$defs`` entry is hoisted into ``components/schemas``.
The output is deterministic: the same models always give the same bytes. Needs PyYAML (a dev dependency).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from schemas._asyncapi_channels import AMQP_BINDING_VERSION, Json, channels, operations, ref
from schemas.enums import MessageKind
from schemas.messages import (
    MAX_BODY_BYTES,
    SCHEMA_VERSION,
    AdminAnswer,
    AdminRequest,
    Announcement,
    Command,
    Envelope,
    Heartbeat,
    Progress,
    TaskReply,
)
from schemas.topology import DEAD_REASON_HEADER, SCHEMA_VERSION_HEADER, Topology

OUTPUT = Path(__file__).with_name("asyncapi.yaml")
SCHEMAS_REF = "#/components/schemas/{model}"


def _rewrite(node: Any) -> Any:
    """AsyncAPI schemas are JSON Schema draft 07 where ``discriminator`` is a property name, not an object."""
    if isinstance(node, dict):
        result = {key: _rewrite(value) for key, value in node.items()}
        discriminator = result.get("discriminator")
        if isinstance(discriminator, dict):
            result["discriminator"] = discriminator["propertyName"]
        return result
    if isinstance(node, list):
        return [_rewrite(item) for item in node]
    return node


def component_schemas(models: list[type[BaseModel]]) -> Json:
    """Every model's JSON Schema and all of their ``$defs``, in one flat, sorted mapping."""
    _, top = models_json_schema([(model, "validation") for model in models], ref_template=SCHEMAS_REF)
    defs: Json = top.get("$defs", {})
    return {name: _rewrite(defs[name]) for name in sorted(defs)}


def _headers(*, dead: bool = False) -> Json:
    properties: Json = {
        SCHEMA_VERSION_HEADER: {
            "type": "integer",
            "const": SCHEMA_VERSION,
            "description": "The schema version of the body.",
        }
    }
    required = [SCHEMA_VERSION_HEADER]
    if dead:
        properties[DEAD_REASON_HEADER] = {"type": "string", "description": "Why the message was refused."}
        required = [DEAD_REASON_HEADER]
    return {"type": "object", "required": required, "properties": properties}


def _message(model: type[Envelope], kind: MessageKind, summary: str, *, by_release: bool = True) -> Json:
    message: Json = {
        "name": model.__name__,
        "title": model.__name__,
        "summary": summary,
        "contentType": "application/json",
        "headers": _headers(),
        "payload": ref(SCHEMAS_REF.format(model=model.__name__)),
        "bindings": {"amqp": {"messageType": kind.value, "bindingVersion": AMQP_BINDING_VERSION}},
    }
    if model.__doc__:
        message["description"] = " ".join(model.__doc__.split())
    if by_release:
        message["correlationId"] = {
            "description": "The release id; also the AMQP correlation_id property.",
            "location": "$message.payload#/release_id",
        }
    return message


def build(namespace: str = "rc", vhost: str = "rc") -> Json:
    """The AsyncAPI document (a plain JSON-like structure)."""
    t = Topology(namespace)
    models: list[type[BaseModel]] = [
        Command,
        TaskReply,
        Progress,
        Heartbeat,
        AdminRequest,
        AdminAnswer,
        Announcement,
    ]
    return {
        "asyncapi": "3.0.0",
        "id": "urn:release-coordinator:messages",
        "info": _info(namespace),
        "defaultContentType": "application/json",
        "servers": _servers(vhost),
        "channels": channels(t, namespace, vhost),
        "operations": operations(),
        "components": {
            "schemas": component_schemas(models),
            "messages": _messages(),
            "securitySchemes": {
                "userPassword": {"type": "userPassword", "description": "Each process's own broker user."}
            },
        },
    }


def _messages() -> Json:
    """Each message with its headers and payload schema."""
    messages: Json = {
        "Command": _message(Command, MessageKind.COMMAND, "Do one step of a release."),
        "TaskReply": _message(TaskReply, MessageKind.REPLY, "The outcome of one command."),
        "Progress": _message(Progress, MessageKind.PROGRESS, "How far processing is."),
        "Heartbeat": _message(
            Heartbeat, MessageKind.HEARTBEAT, "A service instance is alive.", by_release=False
        ),
        "AdminRequest": _message(
            AdminRequest, MessageKind.ADMIN_REQUEST, "An operator's request.", by_release=False
        ),
        "AdminAnswer": _message(
            AdminAnswer, MessageKind.ADMIN_ANSWER, "The answer to a request.", by_release=False
        ),
        "Announcement": _message(Announcement, MessageKind.ANNOUNCEMENT, "A release changed state."),
        "DeadLetter": {
            "name": "DeadLetter",
            "title": "DeadLetter",
            "summary": "Any refused message, unchanged, with the reason.",
            "headers": _headers(dead=True),
            "payload": {"description": "The refused body, as it was received (possibly not JSON)."},
        },
    }
    for message in messages.values():
        message.setdefault("contentType", "application/json")

    return messages


def _info(namespace: str) -> Json:
    return {
        "title": "Release Coordinator message contract",
        "version": f"{SCHEMA_VERSION}.0.0",
        "description": (
            "Every message between the coordinator, the task services, the operators' CLI and listeners "
            "(docs/design.md, section 3). Bodies are JSON, persistent, with a unique message_id, the "
            "sender's "
            f"broker user in user_id and the `{SCHEMA_VERSION_HEADER}` header; at most {MAX_BODY_BYTES} "
            f"bytes. Names are shown for the default namespace `{namespace}`. Generated by "
            "`python -m schemas.asyncapi` from the pydantic models: do not edit."
        ),
    }


def _servers(vhost: str) -> Json:
    return {
        "rabbitmq": {
            "host": "rabbitmq:5672",
            "protocol": "amqp",
            "protocolVersion": "0.9.1",
            "pathname": f"/{vhost}",
            "description": f"RabbitMQ, virtual host `{vhost}`; one broker user per process.",
            "security": [ref("#/components/securitySchemes/userPassword")],
        }
    }


def render(document: Json | None = None) -> str:
    import yaml  # a dev dependency: only the generator needs it

    class _Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    text = yaml.dump(
        build() if document is None else document,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        width=110,
        default_flow_style=False,
    )
    return "# Generated by `python -m schemas.asyncapi` from the pydantic models: do not edit.\n" + text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m schemas.asyncapi", description="Generate the AsyncAPI 3.0 document of the contract."
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the checked-in file is stale")
    parser.add_argument("--stdout", action="store_true", help="print the document instead of writing it")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = render()
    if args.stdout:
        sys.stdout.write(text)
        return 0
    current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
    if args.check:
        if current != text:
            print(f"{args.output.name} is stale: run `python -m schemas.asyncapi`", file=sys.stderr)
            return 1
        return 0
    if current != text:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
