"""The channels and operations of the AsyncAPI document: where each message travels (exchanges and routing
keys, docs/design.md, section 3) and which of them the coordinator sends or receives."""

from __future__ import annotations

from typing import Any

from schemas.enums import Action, ReleaseState, ReplyKind
from schemas.messages import Heartbeat, Progress, TaskReply
from schemas.topology import SERVICE_NAME_PATTERN, Topology

AMQP_BINDING_VERSION = "0.3.0"

Json = dict[str, Any]


def ref(path: str) -> Json:
    return {"$ref": path}


def _exchange_binding(topology: Topology, exchange: str, vhost: str) -> Json:
    return {
        "amqp": {
            "is": "routingKey",
            "exchange": {
                "name": exchange,
                "type": topology.exchanges()[exchange],
                "durable": True,
                "autoDelete": False,
                "vhost": vhost,
            },
            "bindingVersion": AMQP_BINDING_VERSION,
        }
    }


def _operation_binding(*, mandatory: bool = True) -> Json:
    return {"amqp": {"deliveryMode": 2, "mandatory": mandatory, "bindingVersion": AMQP_BINDING_VERSION}}


def channels(t: Topology, namespace: str, vhost: str) -> Json:
    """Where each message travels: exchanges and routing keys."""
    return {**_task_channels(t, namespace, vhost), **_operator_channels(t, vhost)}


def _task_channels(t: Topology, namespace: str, vhost: str) -> Json:
    """Between the coordinator and the task services."""
    service = {
        "description": f"The task service's name (`{SERVICE_NAME_PATTERN}`), also its broker user.",
        "examples": ["search-index"],
    }
    channels: Json = {
        "commands": {
            "address": "task.{service}.{action}",
            "title": f"Commands ({t.commands_exchange})",
            "description": f"Coordinator to one service; the service's queue `{namespace}.task.{{service}}` "
            f"is bound `task.{{service}}.*` and dead-letters to `{t.dead_letter_exchange}`.",
            "parameters": {
                "service": service,
                "action": {"enum": [a.value for a in Action], "description": "The step to perform."},
            },
            "messages": {"command": ref("#/components/messages/Command")},
            "bindings": _exchange_binding(t, t.commands_exchange, vhost),
        },
    }
    descriptions = {
        "taskReplies": f"A service's outcome of a command, consumed from `{t.replies_queue}`.",
        "progress": "How far processing is; keeps the step's deadline alive.",
        "heartbeats": "A service instance is alive and consuming.",
    }
    replies = {  # channel: the kind of reply, its model and title
        "taskReplies": (ReplyKind.REPLY, TaskReply, "Task replies"),
        "progress": (ReplyKind.PROGRESS, Progress, "Progress"),
        "heartbeats": (ReplyKind.HEARTBEAT, Heartbeat, "Heartbeats"),
    }
    for name, (kind, model, title) in replies.items():
        message = model.__name__[0].lower() + model.__name__[1:]
        channels[name] = {
            "address": f"reply.{{service}}.{kind.value}",
            "title": f"{title} ({t.replies_exchange})",
            "description": descriptions[name],
            "parameters": {"service": service},
            "messages": {message: ref(f"#/components/messages/{model.__name__}")},
            "bindings": _exchange_binding(t, t.replies_exchange, vhost),
        }
    return channels


def _operator_channels(t: Topology, vhost: str) -> Json:
    """Between the coordinator, operators and listeners."""
    channels: Json = {
        "admin": {
            "address": t.admin_routing_key,
            "title": f"Admin requests ({t.admin_exchange})",
            "description": f"Operator requests, consumed from `{t.admin_queue}`.",
            "messages": {"adminRequest": ref("#/components/messages/AdminRequest")},
            "bindings": _exchange_binding(t, t.admin_exchange, vhost),
        },
        "adminAnswers": {
            "address": None,
            "title": "Admin answers (default exchange)",
            "description": "The answer to an admin request, sent to the request's `reply_to` queue "
            "with the request's `correlation_id`.",
            "messages": {"adminAnswer": ref("#/components/messages/AdminAnswer")},
        },
        "events": {
            "address": "release.{state}",
            "title": f"Announcements ({t.events_exchange})",
            "description": "A release changed state; for any listener.",
            "parameters": {
                "state": {"enum": [s.value for s in ReleaseState], "description": "The new state."}
            },
            "messages": {"announcement": ref("#/components/messages/Announcement")},
            "bindings": _exchange_binding(t, t.events_exchange, vhost),
        },
        "deadLetters": {
            "address": None,
            "title": f"Dead letters ({t.dead_letter_exchange} -> {t.dead_letter_queue})",
            "description": "Poison, invalid or over-delivered messages, with the reason in a header.",
            "messages": {"deadLetter": ref("#/components/messages/DeadLetter")},
            "bindings": _exchange_binding(t, t.dead_letter_exchange, vhost),
        },
    }

    return channels


def _operation(action: str, channel: str, message: str, summary: str, **extra: Any) -> Json:
    return {
        "action": action,
        "channel": ref(f"#/channels/{channel}"),
        "summary": summary,
        "messages": [ref(f"#/channels/{channel}/messages/{message}")],
        **extra,
    }


def operations() -> Json:
    """What the coordinator sends and receives."""
    operation = _operation
    operations: Json = {
        "sendCommand": operation(
            "send", "commands", "command", "Tell one service to do one step.", bindings=_operation_binding()
        ),
        "receiveTaskReply": operation(
            "receive", "taskReplies", "taskReply", "A service's outcome of a command."
        ),
        "receiveProgress": operation("receive", "progress", "progress", "A service's progress."),
        "receiveHeartbeat": operation(
            "receive", "heartbeats", "heartbeat", "A service instance's heartbeat."
        ),
        "receiveAdminRequest": operation(
            "receive",
            "admin",
            "adminRequest",
            "An operator's request, answered on its reply_to.",
            reply={
                "address": {
                    "description": "The request's AMQP reply_to property.",
                    "location": "$message.header#/reply_to",
                },
                "channel": ref("#/channels/adminAnswers"),
                "messages": [ref("#/channels/adminAnswers/messages/adminAnswer")],
            },
        ),
        "sendAnnouncement": operation(
            "send",
            "events",
            "announcement",
            "Announce a release's new state.",
            bindings=_operation_binding(mandatory=False),
        ),
        "sendDeadLetter": operation(
            "send",
            "deadLetters",
            "deadLetter",
            "Refuse a message, with the reason.",
            bindings=_operation_binding(),
        ),
    }

    return operations
