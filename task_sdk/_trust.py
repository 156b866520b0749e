"""Whom a service takes commands from, and what it says at start about the broker users it trusts.

RabbitMQ refuses a message whose ``user_id`` is not its publisher's own broker user, so a command's
``user_id`` proves who sent it. Only the coordinator's broker user (``RC_COORDINATOR_USER``, default
``rc-coordinator``) commands a service; in development, the trusted users (``RC_TRUSTED_USERS``) too.
Any other command is dead-lettered unheard: the handler never sees it and the outcome store records nothing.
"""

from __future__ import annotations

from typing import Any

from task_sdk._settings import Settings


def command_refusal(settings: Settings, user_id: str | None) -> str | None:
    """Why a command signed by ``user_id`` is refused; None if the coordinator (or a trusted user) sent it."""
    if settings.accepts_commands_from(user_id):
        return None
    sender = f"broker user {user_id!r}" if user_id else "no broker user (the message has no user_id)"
    return (
        f"command refused: signed by {sender}, not by the coordinator's {settings.coordinator_user!r} "
        "(set RC_COORDINATOR_USER to the coordinator's broker user; RC_TRUSTED_USERS only in development)"
    )


def warn_about_identity(settings: Settings, service: str, log: Any) -> None:
    """At start: warn when trusted users are set, and when the service's broker user is not its own."""
    if settings.trusted_users:
        log.warning(
            "trusted users set: their commands are acted on as the coordinator's (development only; "
            "unset RC_TRUSTED_USERS in production)",
            trusted_users=sorted(settings.trusted_users),
        )
    user = settings.broker_user
    if user != service and user not in settings.trusted_users:
        log.warning(
            f"broker user {user!r} is not named after service {service!r}: the coordinator refuses its "
            f"replies and heartbeats (connect as broker user {service!r}, made by rc-admin-setup; in "
            f"development only, name {user!r} in RC_TRUSTED_USERS)",
            broker_user=user,
        )


class DeadLetters:
    """The commands this service dead-lettered since it started, told in every heartbeat's ``detail`` (the
    coordinator keeps it as the service's health detail: ``rc service list --json``, the dashboard), since
    the dead letters themselves cannot carry the reason (a service may not publish to ``<ns>.dlx``)."""

    def __init__(self) -> None:
        self.count = 0
        self.last: str | None = None

    def record(self, reason: str, message_id: str | None) -> None:
        self.count += 1
        self.last = f"{reason} (message {message_id or 'without id'})"

    def summary(self) -> str | None:
        if not self.count:
            return None
        return f"{self.count} command(s) dead-lettered since start, the last: {self.last}"
