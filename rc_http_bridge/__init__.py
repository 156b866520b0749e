"""Bridge: an HTTP task service of the original Release Coordinator, standing in on the broker.

``rc-http-bridge --service portal --url http://portal:8080`` makes the HTTP service ``portal`` a
task service on the broker: commands become ``POST /tasks`` actions, and the service's answers,
callbacks and polled statuses become the step's outcome and progress. See ``rc-http-bridge --help``.
"""

from rc_http_bridge.bridge import HttpBridge, HttpServiceError, make_bridge, run_bridge
from rc_http_bridge.config import BridgeConfig
from rc_http_bridge.protocol import (
    HttpState,
    ProtocolError,
    TaskStatus,
    UnknownState,
    parse_progress,
    parse_state,
    parse_task_body,
    task_id_for,
)

__all__ = [
    "BridgeConfig",
    "HttpBridge",
    "HttpServiceError",
    "HttpState",
    "ProtocolError",
    "TaskStatus",
    "UnknownState",
    "make_bridge",
    "parse_progress",
    "parse_state",
    "parse_task_body",
    "run_bridge",
    "task_id_for",
]
