"""Deployment helpers: the RabbitMQ definitions (users, permissions, topology) of an installation."""
