"""Broker names and queue arguments shared by the coordinator, the task SDK and the CLI.

Every name is prefixed by the namespace (``RC_NAMESPACE``, default ``rc``) so that several
installations, or several test runs, can share one broker without seeing each other.
Queues must be declared with identical arguments by everyone who declares them, so the
arguments live here and nowhere else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from schemas.enums import Action, ReplyKind

SERVICE_NAME_PATTERN = r"^[a-z][a-z0-9-]{0,62}$"
_SERVICE_NAME = re.compile(SERVICE_NAME_PATTERN)

#: Header carrying the schema version of a message body.
SCHEMA_VERSION_HEADER = "x-rc-schema-version"
#: Header the coordinator sets on a dead-lettered message to say why it was refused.
DEAD_REASON_HEADER = "x-rc-dead-reason"
#: How long an instance's control queue outlives its last consumer (RabbitMQ's ``x-expires``, in ms); it is
#: exclusive too, so it normally goes at once with its connection.
CONTROL_QUEUE_EXPIRES_MS = 60_000
#: Redeliveries a quorum queue allows before it dead-letters a message (poison protection).
DELIVERY_LIMIT = 5


def instance_token(instance_id: str) -> str:
    """An instance id as one word of a queue name or routing key: lowercase letters, digits and '-'."""
    token = re.sub(r"[^a-z0-9-]+", "-", instance_id.lower()).strip("-")[:60]
    return token or "instance"


def check_service_name(name: str) -> str:
    """Return ``name`` if it is a valid service name, else raise ``ValueError`` saying why."""
    if not _SERVICE_NAME.match(name):
        raise ValueError(
            f"invalid service name {name!r}: use lowercase letters, digits and '-', starting with a letter"
        )
    return name


@dataclass(frozen=True, slots=True)
class Topology:
    """The names of every exchange, queue and routing key of one installation."""

    namespace: str = "rc"

    def exchanges(self) -> dict[str, str]:
        """Every exchange (all durable) with its type; declare them exactly so."""
        return {
            self.commands_exchange: "topic",
            self.replies_exchange: "topic",
            self.admin_exchange: "direct",
            self.events_exchange: "topic",
            self.dead_letter_exchange: "fanout",
        }

    @property
    def commands_exchange(self) -> str:
        return f"{self.namespace}.commands"

    @property
    def replies_exchange(self) -> str:
        return f"{self.namespace}.replies"

    @property
    def admin_exchange(self) -> str:
        return f"{self.namespace}.admin"

    @property
    def events_exchange(self) -> str:
        return f"{self.namespace}.events"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.namespace}.dlx"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.namespace}.dead"

    @property
    def replies_queue(self) -> str:
        return f"{self.namespace}.coordinator.replies"

    @property
    def admin_queue(self) -> str:
        return f"{self.namespace}.coordinator.admin"

    @property
    def admin_routing_key(self) -> str:
        return "admin"

    def task_queue(self, service: str) -> str:
        return f"{self.namespace}.task.{check_service_name(service)}"

    @staticmethod
    def task_binding(service: str) -> str:
        return f"task.{check_service_name(service)}.*"

    @staticmethod
    def command_key(service: str, action: Action) -> str:
        return f"task.{service}.{action.value}"

    def control_queue(self, service: str, instance_id: str) -> str:
        """The queue of one instance of a service, for the commands meant for that instance alone (a cancel
        of the release it is processing). Exclusive and short-lived: it goes with its instance."""
        return f"{self.namespace}.control.{check_service_name(service)}.{instance_token(instance_id)}"

    @staticmethod
    def control_key(service: str, instance_id: str) -> str:
        """A cancel addressed to one instance: four words, so the service's shared queue (``task.<s>.*``)
        does not take it."""
        return f"task.{check_service_name(service)}.{Action.CANCEL.value}.{instance_token(instance_id)}"

    @staticmethod
    def reply_key(service: str, kind: ReplyKind) -> str:
        return f"reply.{service}.{kind.value}"

    @staticmethod
    def event_key(state: str) -> str:
        return f"release.{state}"

    def quorum_arguments(self, *, single_active_consumer: bool = False) -> dict[str, Any]:
        """Arguments of every quorum queue: dead-letter to ``rc.dlx`` after too many deliveries."""
        arguments: dict[str, Any] = {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": self.dead_letter_exchange,
            "x-delivery-limit": DELIVERY_LIMIT,
        }
        if single_active_consumer:
            arguments["x-single-active-consumer"] = True
        return arguments

    def coordinator_queues(self) -> dict[str, tuple[dict[str, Any], str, str]]:
        """Every queue the coordinator owns: name -> (arguments, source exchange, binding key)."""
        single_active = self.coordinator_queue_arguments()
        return {
            self.replies_queue: (single_active, self.replies_exchange, "reply.#"),
            self.admin_queue: (single_active, self.admin_exchange, self.admin_routing_key),
            self.dead_letter_queue: (self.dead_letter_queue_arguments(), self.dead_letter_exchange, ""),
        }

    def task_queue_arguments(self) -> dict[str, Any]:
        return self.quorum_arguments()

    @staticmethod
    def control_queue_arguments() -> dict[str, Any]:
        """An instance's control queue: a classic exclusive queue that expires once unused."""
        return {"x-expires": CONTROL_QUEUE_EXPIRES_MS}

    def coordinator_queue_arguments(self) -> dict[str, Any]:
        return self.quorum_arguments(single_active_consumer=True)

    @staticmethod
    def dead_letter_queue_arguments() -> dict[str, Any]:
        return {"x-queue-type": "quorum"}
