"""Prometheus metrics of the coordinator (served on ``RC_METRICS_ADDRESS``:``RC_METRICS_PORT``)."""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RELEASES_BY_STATE = Gauge("rc_releases", "Releases the coordinator has loaded, by state", ["state"])
STEP_SECONDS = Histogram(
    "rc_step_duration_seconds",
    "How long a release stayed in a state before leaving it",
    ["state"],
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
)
TRANSITIONS = Counter("rc_transitions_total", "Release state changes", ["to"])
MESSAGES = Counter("rc_messages_total", "Messages consumed, by kind and verdict", ["kind", "verdict"])
DEAD_LETTERED = Counter("rc_dead_lettered_total", "Messages dead-lettered by the coordinator", ["reason"])
OUTBOX_SIZE = Gauge("rc_outbox_messages", "Messages stored but not yet confirmed by the broker")
PUBLISH_FAILURES = Counter("rc_publish_failures_total", "Publications the broker did not confirm")
STORE_LATENCY = Histogram(
    "rc_store_seconds",
    "Latency of store operations",
    ["operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)
STORE_CONFLICTS = Counter("rc_store_conflicts_total", "Compare-and-set updates that lost a race")
STORE_COMMITS = Counter(
    "rc_store_commits_total", "Durable transactions committed by the embedded store (one per batch of writes)"
)
IS_ACTIVE = Gauge("rc_coordinator_active", "1 while this replica is the active coordinator")


def serve(port: int, address: str = "127.0.0.1") -> WSGIServer | None:
    """Serve ``/metrics`` on ``address:port`` in a thread (loopback unless told otherwise); None if the
    port is 0 (disabled)."""
    if not port:
        return None
    server, _ = start_http_server(port, addr=address)
    return server
