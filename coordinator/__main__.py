"""``rc-coordinator`` / ``python -m coordinator``: run the coordinator until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

import structlog

from coordinator import logs, metrics
from coordinator.embedded_store import EmbeddedStore, EmbeddedStoreUnavailable
from coordinator.service import Coordinator
from coordinator.settings import SETTINGS, Settings
from coordinator.store import Store


def _help() -> str:
    width = max(len(name) for name in SETTINGS)
    lines = [
        f"  {name:<{width}}  {text} [default: {default or 'unset'}]"
        for name, (default, text) in SETTINGS.items()
    ]
    return "settings (environment variables):\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rc-coordinator",
        description="Run the Release Coordinator: one active replica at a time, others stand by.",
        epilog=_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as error:
        print(f"rc-coordinator: {error}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    return asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> int:
    log = structlog.get_logger("coordinator")
    embedded: EmbeddedStore | None = None
    url = settings.mongodb_url
    if url is None:
        embedded = EmbeddedStore()
        try:
            url = await asyncio.to_thread(embedded.start)
        except EmbeddedStoreUnavailable as error:
            log.error("no store", error=str(error))
            return 2
        log.warning(
            "EMBEDDED IN-MEMORY STORE: RC_MONGODB_URL is unset, releases will NOT survive a restart",
            store=url,
        )
    metrics.serve(settings.metrics_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    store = Store.connect(url, settings.database)
    try:
        await Coordinator(settings, store).run(stop)
    finally:
        await store.close()
        if embedded is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(embedded.stop)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
