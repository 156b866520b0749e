"""``rc-task module:Class``: run a task handler as a service.

Every option has an ``RC_*`` environment variable; an option given on the command line wins.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from task_sdk._handler import TaskHandler
from task_sdk._service import run
from task_sdk._settings import ENVIRONMENT, Settings


def load_handler(target: str) -> TaskHandler:
    """Import ``module:Class`` (or ``module:instance``) and return a handler instance."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"expected module:Class, got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: modules of the current directory import
    found: object = importlib.import_module(module_name)
    for part in attribute.split("."):
        found = getattr(found, part)
    handler = found() if isinstance(found, type) else found
    if not isinstance(handler, TaskHandler):
        raise TypeError(f"{target} is not a TaskHandler subclass or instance")
    return handler


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_LEVEL_VARIABLE = "RC_LOG_LEVEL"


def _settings_help() -> str:
    lines = ["environment (an option given on the command line wins):"]
    lines += [f"  {variable:<22} {text}" for variable, (_, text) in ENVIRONMENT.items()]
    lines.append(f"  {LOG_LEVEL_VARIABLE:<22} {', '.join(LOG_LEVELS)} (default INFO)")
    return "\n".join(lines)


def _log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="rc-task",
        description="Run a Release Coordinator task service until SIGTERM/SIGINT (then drain and exit 0).",
        epilog=_settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli.add_argument(
        "handler", help="the TaskHandler to run, as module:Class (e.g. examples.search_index:SearchIndex)"
    )
    cli.add_argument("--amqp-url", help="AMQP URL of the broker [RC_AMQP_URL]")
    cli.add_argument("--namespace", help="prefix of exchange and queue names [RC_NAMESPACE]")
    cli.add_argument(
        "--concurrency", type=int, help="prefetch and parallel process() calls [RC_TASK_CONCURRENCY]"
    )
    cli.add_argument(
        "--heartbeat-seconds", type=float, help="seconds between heartbeats [RC_HEARTBEAT_SECONDS]"
    )
    cli.add_argument(
        "--state-dir", type=Path, help="directory of the outcome store (sqlite) [RC_TASK_STATE_DIR]"
    )
    cli.add_argument(
        "--shutdown-timeout", type=float, help="seconds to drain after a signal [RC_SHUTDOWN_TIMEOUT]"
    )
    cli.add_argument(
        "--publish-timeout",
        type=float,
        help="seconds to wait for the broker to confirm a message [RC_BROKER_PUBLISH_TIMEOUT]",
    )
    cli.add_argument(
        "--reconnect-seconds",
        type=float,
        help="seconds between reconnection attempts [RC_RECONNECT_SECONDS]",
    )
    cli.add_argument(
        "--log-level",
        type=_log_level,
        help=f"{', '.join(LOG_LEVELS)} (default INFO) [{LOG_LEVEL_VARIABLE}]",
    )
    return cli


def main(argv: Sequence[str] | None = None) -> None:
    arguments = parser().parse_args(argv)
    try:
        handler = load_handler(arguments.handler)
        settings = Settings.from_env(
            amqp_url=arguments.amqp_url,
            namespace=arguments.namespace,
            concurrency=arguments.concurrency,
            heartbeat_seconds=arguments.heartbeat_seconds,
            state_dir=arguments.state_dir,
            shutdown_timeout=arguments.shutdown_timeout,
            publish_timeout=arguments.publish_timeout,
            reconnect_seconds=arguments.reconnect_seconds,
        )
        log_level = arguments.log_level or _log_level(os.environ.get(LOG_LEVEL_VARIABLE) or "INFO")
    except (ImportError, AttributeError, TypeError, ValueError, argparse.ArgumentTypeError) as error:
        raise SystemExit(f"rc-task: {error}") from None
    run(handler, settings, log_level=log_level)


if __name__ == "__main__":
    main()
