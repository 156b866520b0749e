"""``rc-http-bridge --service NAME --url URL``: an existing HTTP task service, on the broker.

Every option has an environment variable (``RC_BRIDGE_*`` for the bridge, ``RC_*`` for the SDK);
an option given on the command line wins.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from rc_http_bridge.bridge import run_bridge
from rc_http_bridge.config import DEFAULT_LISTEN, ENVIRONMENT, BridgeConfig
from task_sdk import Settings
from task_sdk._logging import configure_logging
from task_sdk._settings import ENVIRONMENT as SDK_ENVIRONMENT


def _environment_help() -> str:
    lines = ["environment (an option given on the command line wins):"]
    lines += [f"  {variable:<30} {text}" for variable, (_, text) in ENVIRONMENT.items()]
    lines += [f"  {variable:<30} {text}" for variable, (_, text) in SDK_ENVIRONMENT.items()]
    lines += [
        "",
        "callback endpoints served at the public URL (see the README section",
        '"Bring an existing HTTP task service"):',
        "  PATCH /tasks/{task_id}         {state, progress} from the service",
        "  GET   /releases/{release_id}   id, name, version, studies, state",
        "  GET   /status                  the bridge's own health",
    ]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="rc-http-bridge",
        description=(
            "Stand in on the broker for an HTTP task service that speaks the original Release "
            "Coordinator task-service protocol. Runs until SIGTERM/SIGINT (then drains and exits 0)."
        ),
        epilog=_environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bridge = cli.add_argument_group("bridge")
    bridge.add_argument("--service", help="the task service name on the broker [RC_BRIDGE_SERVICE]")
    bridge.add_argument("--url", help="base URL of the HTTP task service [RC_BRIDGE_URL]")
    bridge.add_argument(
        "--public-url",
        help="base URL at which the HTTP service reaches the callback endpoints "
        "(default http://<this host>:<listen port>) [RC_BRIDGE_PUBLIC_URL]",
    )
    bridge.add_argument(
        "--listen", help=f"HOST:PORT of the callback server (default {DEFAULT_LISTEN}) [RC_BRIDGE_LISTEN]"
    )
    bridge.add_argument(
        "--poll-seconds",
        type=float,
        help="poll get_status after this many seconds without news (default 10) [RC_BRIDGE_POLL_SECONDS]",
    )
    bridge.add_argument(
        "--http-timeout",
        type=float,
        help="seconds any HTTP call may take (default 10) [RC_BRIDGE_HTTP_TIMEOUT]",
    )
    bridge.add_argument(
        "--stall-seconds",
        type=float,
        help="fail a step whose task has not changed for this long; 0 never (default 3600) "
        "[RC_BRIDGE_STALL_SECONDS]",
    )
    _security_options(bridge)
    _sdk_options(cli.add_argument_group("broker (task SDK)"))
    cli.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    return cli


def _security_options(bridge: argparse._ArgumentGroup) -> None:
    """Tokens, and the limits of the callback server."""
    bridge.add_argument(
        "--token-file",
        help="file holding the bearer token sent to the service [RC_BRIDGE_TOKEN_FILE, "
        "or the token itself in RC_BRIDGE_OUTBOUND_TOKEN]",
    )
    bridge.add_argument(
        "--callback-token",
        help="bearer token the service's callbacks must carry (visible to other local users in the "
        "process list: prefer the variable or the file) [RC_BRIDGE_CALLBACK_TOKEN]",
    )
    bridge.add_argument(
        "--callback-token-file",
        help="file holding the callback token [RC_BRIDGE_CALLBACK_TOKEN_FILE]",
    )
    bridge.add_argument(
        "--insecure-callbacks",
        action="store_const",
        const=True,
        help="accept callbacks without a token on an address other than the loopback; logs a warning "
        "at every start (development only) [RC_BRIDGE_INSECURE_CALLBACKS=1]",
    )
    bridge.add_argument(
        "--idle-timeout",
        type=float,
        help="seconds a callback connection may take to send a whole request or stay idle (default 15) "
        "[RC_BRIDGE_IDLE_TIMEOUT]",
    )
    bridge.add_argument(
        "--max-connections",
        type=int,
        help="callback connections open at once; more are answered 503 (default 64) "
        "[RC_BRIDGE_MAX_CONNECTIONS]",
    )


def _sdk_options(sdk: argparse._ArgumentGroup) -> None:
    """The task SDK's settings."""
    sdk.add_argument("--amqp-url", help="AMQP URL of the broker [RC_AMQP_URL]")
    sdk.add_argument("--namespace", help="prefix of exchange and queue names [RC_NAMESPACE]")
    sdk.add_argument(
        "--concurrency", type=int, help="commands and releases handled at once [RC_TASK_CONCURRENCY]"
    )
    sdk.add_argument(
        "--heartbeat-seconds", type=float, help="seconds between heartbeats [RC_HEARTBEAT_SECONDS]"
    )
    sdk.add_argument("--state-dir", help="directory of the outcome store (sqlite) [RC_TASK_STATE_DIR]")
    sdk.add_argument(
        "--shutdown-timeout", type=float, help="seconds to drain after a signal [RC_SHUTDOWN_TIMEOUT]"
    )


def configuration(arguments: argparse.Namespace) -> tuple[BridgeConfig, Settings]:
    """The bridge and SDK settings from parsed ``arguments`` and the environment."""
    config = BridgeConfig.from_env(
        service=arguments.service,
        url=arguments.url,
        public_url=arguments.public_url,
        listen=arguments.listen,
        poll_seconds=arguments.poll_seconds,
        http_timeout=arguments.http_timeout,
        stall_seconds=arguments.stall_seconds,
        token_file=arguments.token_file,
        callback_token=arguments.callback_token,
        callback_token_file=arguments.callback_token_file,
        insecure_callbacks=arguments.insecure_callbacks,
        idle_timeout=arguments.idle_timeout,
        max_connections=arguments.max_connections,
    )
    settings = Settings.from_env(
        amqp_url=arguments.amqp_url,
        namespace=arguments.namespace,
        concurrency=arguments.concurrency,
        heartbeat_seconds=arguments.heartbeat_seconds,
        state_dir=Path(arguments.state_dir) if arguments.state_dir else None,
        shutdown_timeout=arguments.shutdown_timeout,
    )
    return config, settings


def main(argv: Sequence[str] | None = None) -> None:
    arguments = parser().parse_args(argv)
    try:
        config, settings = configuration(arguments)
    except (TypeError, ValueError) as error:
        raise SystemExit(f"rc-http-bridge: {error}") from None
    configure_logging(arguments.log_level)
    try:
        asyncio.run(run_bridge(config, settings))
    except OSError as error:  # e.g. the listen address is taken
        print(f"rc-http-bridge: {error}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
