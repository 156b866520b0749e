"""``rc-dashboard``: a live web dashboard of releases; it talks to the coordinator over the broker, as ``rc``.

Runs until SIGTERM or SIGINT. Exit status: 0 after a signal, 1 if it cannot listen, 2 on bad settings.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from coordinator.logs import configure
from rc_dashboard.app import serve
from rc_dashboard.settings import ENVIRONMENT, DashboardSettings

EXIT_BAD_INPUT = 2


def parser() -> argparse.ArgumentParser:
    epilog = ["environment (an option given on the command line wins):"]
    epilog += [f"  {variable:<28} {text}" for variable, text in ENVIRONMENT.items()]
    cli = argparse.ArgumentParser(
        prog="rc-dashboard",
        description="A live web dashboard of data releases. Read-only unless RC_DASHBOARD_TOKEN is set.",
        epilog="\n".join(epilog),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli.add_argument("--listen", help="HOST:PORT to serve on [RC_DASHBOARD_LISTEN]")
    cli.add_argument("--amqp-url", help="broker URL [RC_AMQP_URL]")
    cli.add_argument("--namespace", help="installation namespace [RC_NAMESPACE]")
    cli.add_argument("--timeout", help="seconds to wait for the coordinator's answer [RC_TIMEOUT]")
    cli.add_argument("--operator", help="operator name recorded for actions [RC_DASHBOARD_OPERATOR]")
    cli.add_argument(
        "--poll-seconds", help="seconds between re-reads of open releases [RC_DASHBOARD_POLL_SECONDS]"
    )
    cli.add_argument(
        "--heartbeat-timeout",
        help="seconds without a heartbeat before a service shows as silent, as the coordinator's "
        "[RC_HEARTBEAT_TIMEOUT]",
    )
    cli.add_argument(
        "--public-url",
        help="the URL browsers open it at, behind a TLS proxy (e.g. https://dash.example.org) "
        "[RC_DASHBOARD_PUBLIC_URL]",
    )
    cli.add_argument("--log-level", default="info", help="debug, info, warning or error (default info)")
    return cli


async def _run(settings: DashboardSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(settings, stop)


def main(argv: Sequence[str] | None = None) -> None:
    arguments = parser().parse_args(argv)
    try:
        settings = DashboardSettings.from_env(
            listen=arguments.listen,
            amqp_url=arguments.amqp_url,
            namespace=arguments.namespace,
            timeout=arguments.timeout,
            operator=arguments.operator,
            poll_seconds=arguments.poll_seconds,
            public_url=arguments.public_url,
            heartbeat_timeout=arguments.heartbeat_timeout,
        )
    except (TypeError, ValueError) as error:
        print(f"rc-dashboard: {error}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    configure(arguments.log_level)
    try:
        asyncio.run(_run(settings))
    except OSError as error:  # e.g. the address is taken
        print(f"rc-dashboard: cannot listen on {settings.listen}: {error}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
