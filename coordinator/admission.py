"""Which replies the coordinator admits: a pure check of body, routing key and broker user.

RabbitMQ guarantees that ``user_id``, when present, is the sending connection's own user, so a
reply is admitted for service S only from broker user S (or a trusted development user).
Everything refused raises :class:`MessageError` with a one-line reason for the dead-letter header.
"""

from __future__ import annotations

from collections.abc import Collection

from schemas.messages import Heartbeat, MessageError, Progress, TaskReply, decode_any

Reply = TaskReply | Progress | Heartbeat
_KINDS: tuple[type[Heartbeat] | type[Progress] | type[TaskReply], ...] = (TaskReply, Progress, Heartbeat)


def admit_reply(body: bytes, routing_key: str, user_id: str | None, trusted_users: Collection[str]) -> Reply:
    """Decode and authenticate one message from the replies queue, or raise MessageError."""
    message = decode_any(body, _KINDS)
    assert isinstance(message, TaskReply | Progress | Heartbeat)
    service = message.service
    parts = routing_key.split(".")
    if len(parts) != 3 or parts[0] != "reply" or parts[1] != service or parts[2] != _kind_key(message):
        raise MessageError(f"routing key {routing_key!r} does not match a {message.kind} from {service!r}")
    if user_id is None:
        raise MessageError(f"no user_id: cannot tell whether {service} sent this")
    if user_id != service and user_id not in trusted_users:
        raise MessageError(f"spoofed: broker user {user_id!r} may not answer for {service!r}")
    return message


def _kind_key(message: Reply) -> str:
    return {TaskReply: "reply", Progress: "progress", Heartbeat: "heartbeat"}[type(message)]
