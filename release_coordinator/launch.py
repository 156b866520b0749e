"""The command-line entry points, each saying which extra to install when its libraries are missing.

``pip install release-coordinator`` brings what a task service needs (``task_sdk``, ``rc-task``); the
coordinator, ``rc``, the HTTP bridge and the dashboard come with extras of their own. Running one of them
without its extra prints one line naming the extra, instead of a traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

#: command -> (module whose ``main`` it runs, the extra it needs, or None)
COMMANDS: dict[str, tuple[str, str | None]] = {
    "rc-task": ("task_sdk.cli", None),
    "rc-coordinator": ("coordinator.__main__", "coordinator"),
    "rc": ("rc_cli.main", "cli"),
    "rc-http-bridge": ("rc_http_bridge.__main__", "bridge"),
    "rc-dashboard": ("rc_dashboard.__main__", "dashboard"),
    "rc-admin-setup": ("deploy.setup", None),
}
#: The libraries the product brings itself: one of them missing means an extra was not installed.
_OWN_PACKAGES = ("coordinator", "task_sdk", "schemas", "rc_cli", "rc_http_bridge", "rc_dashboard", "deploy")


def launch(command: str) -> int:
    module, extra = COMMANDS[command]
    try:
        main: Callable[[], int | None] = importlib.import_module(module).main
    except ModuleNotFoundError as missing:
        if extra is None or (missing.name or "").split(".")[0] in _OWN_PACKAGES:
            raise
        print(
            f"{command}: the library {missing.name!r} is missing; install the {extra!r} extra: "
            f"pip install 'release-coordinator[{extra}]'",
            file=sys.stderr,
        )
        return 2
    return main() or 0


def rc_task() -> int:
    return launch("rc-task")


def rc_coordinator() -> int:
    return launch("rc-coordinator")


def rc() -> int:
    return launch("rc")


def rc_http_bridge() -> int:
    return launch("rc-http-bridge")


def rc_dashboard() -> int:
    return launch("rc-dashboard")


def rc_admin_setup() -> int:
    return launch("rc-admin-setup")
