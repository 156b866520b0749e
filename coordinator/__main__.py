"""``rc-coordinator`` / ``python -m coordinator``: run the coordinator, or move its store.

    rc-coordinator                                   run until SIGTERM or SIGINT
    rc-coordinator store copy --from URL --to URL    copy every release, event, note and service record

Exit status: 0 done; 2 bad settings or arguments; 4 the store cannot be opened or used (the reason is
printed in one line, and an existing file is left as it was); 1 a copy refused or not verified.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable

import structlog

from coordinator import logs, metrics
from coordinator.broker.rabbitmq import RabbitBroker
from coordinator.service import Coordinator
from coordinator.settings import SETTINGS, Settings
from coordinator.store import StoreUnavailable, UnknownStoreUrl, store_for
from coordinator.store.copying import CopyRefused, copy_store
from schemas.topology import Topology

EXIT_USAGE = 2
EXIT_STORE = 4
EXIT_COPY = 1


def _help() -> str:
    width = max(len(name) for name in SETTINGS)
    lines = [
        f"  {name:<{width}}  {text} [default: {default or 'unset'}]"
        for name, (default, text) in SETTINGS.items()
    ]
    store = Settings.from_env().store if _env_is_valid() else "(settings invalid)"
    return (
        "settings (environment variables):\n"
        + "\n".join(lines)
        + f"\n\nwith the current settings the store is {store}"
        + "\n\nexit status: 0 done, 1 copy refused or not verified, 2 bad settings, 4 store unusable"
    )


def _env_is_valid() -> bool:
    try:
        Settings.from_env()
    except ValueError:
        return False
    return True


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rc-coordinator",
        description="Run the Release Coordinator: one active replica at a time, others stand by.",
        epilog=_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="{run,store}")
    commands.add_parser("run", help="run the coordinator (the default)")
    store = commands.add_parser("store", help="manage the store").add_subparsers(
        dest="store_command", required=True
    )
    copy = store.add_parser(
        "copy",
        help="copy every release, event, note and service record into an empty store",
        description="Copy a whole installation from one store to another (stop the coordinator first). "
        "The target must be empty; counts are verified at the end. Example: "
        "rc-coordinator store copy --from sqlite:///rc.db --to mongodb://db1,db2/?replicaSet=rs",
    )
    copy.add_argument("--from", dest="source", required=True, metavar="URL", help="the store to copy")
    copy.add_argument("--to", dest="target", required=True, metavar="URL", help="an empty store to copy into")
    copy.add_argument("--database", help="MongoDB database name on both sides (default: the namespace's)")
    copy.add_argument("--batch", type=int, default=500, help="documents per write (default 500)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as error:
        print(f"rc-coordinator: {error}", file=sys.stderr)
        return EXIT_USAGE
    logs.configure(settings.log_level)
    if args.command == "store":
        database = args.database or settings.database
        return asyncio.run(_copy(args.source, args.target, database, max(1, args.batch)))
    try:
        factory = loop_factory(settings.event_loop)
    except ImportError as error:
        print(f"rc-coordinator: RC_EVENT_LOOP={settings.event_loop}: {error}", file=sys.stderr)
        return EXIT_USAGE
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_serve(settings))


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the event loop ``RC_EVENT_LOOP`` names (None: asyncio's default)."""
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError as error:
        raise ImportError(
            f"uvloop cannot be imported ({error}): install it (it comes with the 'coordinator' extra), "
            "or set RC_EVENT_LOOP=asyncio"
        ) from error
    return uvloop.new_event_loop


async def _serve(settings: Settings) -> int:
    log = structlog.get_logger("coordinator")
    store = store_for(settings.store, settings.database)
    try:
        await store.open()
    except StoreUnavailable as error:
        print(f"rc-coordinator: {error}", file=sys.stderr)
        return EXIT_STORE
    log.info("store opened", engine=store.engine, location=store.location)
    metrics.serve(settings.metrics_port, settings.metrics_address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await Coordinator(settings, store, broker_of(settings)).run(stop)
    finally:
        await store.close()
    log.info("stopped")
    return 0


def broker_of(settings: Settings) -> RabbitBroker:
    """The RabbitMQ broker the settings name (TLS verified with the CA file, if one is set)."""
    return RabbitBroker(
        settings.amqp_url_with_tls(),
        Topology(settings.namespace),
        publish_timeout=settings.broker_publish_timeout,
        prefetch=settings.prefetch,
    )


async def _copy(source_url: str, target_url: str, database: str, batch: int) -> int:
    try:
        source, target = store_for(source_url, database), store_for(target_url, database)
    except UnknownStoreUrl as error:
        print(f"rc-coordinator: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        await source.open()
        try:
            await target.open()
            try:
                counts = await copy_store(source, target, batch=batch, progress=_progress)
            finally:
                await target.close()
        finally:
            await source.close()
    except StoreUnavailable as error:
        print(f"rc-coordinator: {error}", file=sys.stderr)
        return EXIT_STORE
    except CopyRefused as error:
        print(f"rc-coordinator: {error}", file=sys.stderr)
        return EXIT_COPY
    print(
        f"copied {counts.releases} releases, {counts.events} events and {counts.services} services "
        f"from {source.location} to {target.location}; counts verified"
    )
    return 0


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
