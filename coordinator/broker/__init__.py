"""The coordinator's message broker: an interface (:class:`Broker`, :class:`Session`, :class:`Delivery`)
and its implementations, RabbitMQ (:mod:`coordinator.broker.rabbitmq`) and in memory
(:mod:`coordinator.broker.memory`)."""

from coordinator.broker._interface import (
    Broker,
    BrokerUnreachable,
    Delivery,
    Handler,
    NotLeader,
    QueueUnusable,
    Session,
    Unroutable,
)

__all__ = [
    "Broker",
    "BrokerUnreachable",
    "Delivery",
    "Handler",
    "NotLeader",
    "QueueUnusable",
    "Session",
    "Unroutable",
]
