"""``make demo``: one whole data release, live, with the three example services.

Starts a coordinator (its store a SQLite file next to the logs, unless ``RC_STORE_URL`` or
``RC_MONGODB_URL`` names another) and the example
services portal, search-index and file-service as subprocesses in a namespace of their own
(``demo-<hex>``, so nothing else on the broker is disturbed), requires the services, creates a
release, shows each service's progress live, publishes the release once it is staged, prints how
long every step took and the final version, and stops everything.

Each subprocess runs in its own process group and logs to ``.demo/<namespace>/<name>.log``; the
pids are recorded in ``pids.json`` next to the logs. Ctrl-C (or SIGTERM, SIGHUP) at any point stops
them all: SIGTERM to each group, a grace period, then SIGKILL. On Linux the children also get
SIGTERM if the demo itself is killed.

Environment: ``RC_AMQP_URL`` (default the local guest account), ``RC_STORE_URL`` or ``RC_MONGODB_URL``;
``PORTAL_SECONDS``, ``SEARCH_INDEX_SECONDS``, ``FILE_SERVICE_SECONDS`` override the processing times,
and ``<PREFIX>_FAIL`` / ``<PREFIX>_REJECT`` inject failures (see ``examples/``).
Exit status: 0 published; 1 the release ended otherwise or the demo failed; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
import urllib.parse
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Modules next to this script: run as a script (``make demo``), its directory is on sys.path.
from demo_processes import GRACE_SECONDS, ROOT, STOP_SIGNALS, Processes
from demo_screen import Screen, final_table
from rich.console import Console

from coordinator.store import store_for
from rc_cli import render
from rc_cli.client import AdminClient, AdminClientError, Refused, expect_ok
from rc_cli.watch import watch_release
from schemas.broker_url import broker_user, mask_url, split_urls
from schemas.documents import ReleaseView
from schemas.enums import ReleaseState
from schemas.messages import (
    CreateRelease,
    ListServices,
    PublishRelease,
    ReleaseResult,
    RequireService,
    ServiceList,
)
from schemas.topology import Topology

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
STUDIES = ("SD_KIDS0001", "SD_KIDS0002")
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Example:
    name: str
    target: str
    env_prefix: str
    seconds: float


EXAMPLES = (
    Example("portal", "examples.portal:Portal", "PORTAL", 3.0),
    Example("search-index", "examples.search_index:SearchIndex", "SEARCH_INDEX", 4.5),
    Example("file-service", "examples.file_service:FileService", "FILE_SERVICE", 6.0),
)


class DemoError(Exception):
    """Something prevents the demo from going on; the text is one line for the operator."""


# ---------------------------------------------------------------------- broker and settings


def check_broker_reachable(url: str, timeout: float = 3.0) -> None:
    """A TCP connection to the broker's host and port (to one of a cluster's nodes), or :class:`DemoError`
    saying it is not reachable."""
    try:
        urls = split_urls(url)
    except ValueError as error:
        raise DemoError(str(error)) from None
    for one in urls:
        try:
            parts = urllib.parse.urlsplit(one)
            host = parts.hostname or "127.0.0.1"
            port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
        except ValueError as error:
            raise DemoError(f"RC_AMQP_URL is not a valid URL: {error}") from None
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return
        except OSError as error:
            problem = error
    raise DemoError(
        f"RabbitMQ is not reachable at {mask_url(url)} ({problem.strerror or problem}): start it "
        "(scripts/ensure-rabbitmq.sh) or set RC_AMQP_URL"
    ) from None


def base_env() -> dict[str, str]:
    """The demo's environment without the installation settings it chooses itself."""
    chosen = {"RC_NAMESPACE", "RC_MONGODB_DATABASE", "RC_METRICS_PORT", "RC_TRUSTED_USERS", "RC_DATA_DIR"}
    return {key: value for key, value in os.environ.items() if key not in chosen}


def coordinator_env(amqp_url: str, namespace: str, data_dir: Path) -> dict[str, str]:
    env = base_env() | {
        "RC_AMQP_URL": amqp_url,
        "RC_NAMESPACE": namespace,
        "RC_MONGODB_DATABASE": database_of(namespace),
        "RC_DATA_DIR": str(data_dir),
        "RC_METRICS_PORT": "0",
    }
    if broker_user(amqp_url) == "guest":  # the local development account answers for every service
        env["RC_TRUSTED_USERS"] = "guest"
    return env


def service_env(amqp_url: str, namespace: str, example: Example) -> dict[str, str]:
    env = base_env() | {"RC_AMQP_URL": amqp_url, "RC_NAMESPACE": namespace, "RC_HEARTBEAT_SECONDS": "1"}
    # The demo's coordinator logs in as the same broker user: the one the services take commands from.
    env["RC_COORDINATOR_USER"] = broker_user(amqp_url)
    if broker_user(amqp_url) == "guest":  # as for the coordinator: the development account, said at start
        env["RC_TRUSTED_USERS"] = "guest"
    env.setdefault("RC_SHUTDOWN_TIMEOUT", "3")  # Ctrl-C while processing: do not wait for the work to end
    env.setdefault(f"{example.env_prefix}_SECONDS", f"{example.seconds:g}")
    return env


def database_of(namespace: str) -> str:
    return namespace.replace("-", "_")


async def delete_namespace(amqp_url: str, namespace: str, services: Sequence[str]) -> None:
    """Remove the demo's queues and exchanges from the broker (they are durable)."""
    import aio_pika

    topology = Topology(namespace)
    queues = [topology.dead_letter_queue, topology.replies_queue, topology.admin_queue]
    queues += [topology.task_queue(name) for name in services]
    *others, last = split_urls(amqp_url)
    for url in others:  # the first node of a cluster that answers
        with contextlib.suppress(OSError):
            connection = await aio_pika.connect(url, timeout=5)
            break
    else:
        connection = await aio_pika.connect(last, timeout=5)
    async with connection:
        for name in [*queues, *topology.exchanges()]:
            channel = await connection.channel()  # a failed delete closes the channel: one per name
            with contextlib.suppress(Exception):
                if name in queues:
                    await channel.queue_delete(name, if_unused=False, if_empty=False)
                else:
                    await channel.exchange_delete(name, if_unused=False)
            with contextlib.suppress(Exception):
                await channel.close()


def configured_store() -> str | None:
    """The store URL the environment names, if any (else the demo's own SQLite file)."""
    return os.environ.get("RC_STORE_URL") or os.environ.get("RC_MONGODB_URL") or None


async def drop_mongodb_database(store_url: str, database: str) -> None:
    """Drop the demo's database on a MongoDB named by the environment (a SQLite file stays with the logs)."""
    if not store_url.startswith("mongodb"):
        return
    store = store_for(store_url, database)
    await store.drop()


# ---------------------------------------------------------------------- the release


async def wait_for_coordinator(client: AdminClient, processes: Processes, within: float) -> None:
    deadline = time.monotonic() + within
    log = _shown(processes.log_of("coordinator"))
    while True:
        code = processes.exited("coordinator")
        if code is not None:
            raise DemoError(f"the coordinator exited with status {code}: see {log}")
        try:
            await client.request(ListServices(), wait=1)
            return
        except AdminClientError:
            if time.monotonic() > deadline:
                raise DemoError(f"the coordinator did not answer within {within:g}s: see {log}") from None
            await asyncio.sleep(0.2)


async def wait_for_services(client: AdminClient, processes: Processes, within: float) -> None:
    """Until every example service is registered (it heartbeats) and healthy."""
    deadline = time.monotonic() + within
    missing: list[str] = [example.name for example in EXAMPLES]
    while True:
        for example in EXAMPLES:
            code = processes.exited(example.name)
            if code is not None:
                raise DemoError(
                    f"{example.name} exited with status {code}: see {processes.log_of(example.name)}"
                )
        result = expect_ok(await client.request(ListServices()))
        healthy = {s.name for s in result.services if s.healthy} if isinstance(result, ServiceList) else set()
        missing = [example.name for example in EXAMPLES if example.name not in healthy]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise DemoError(f"no heartbeat from {', '.join(missing)} within {within:g}s: see their logs")
        await asyncio.sleep(0.2)


async def run_release(client: AdminClient, console: Console) -> ReleaseView:
    """Create the release, follow it live, publish it once staged; return its terminal view."""
    created = expect_ok(
        await client.request(
            CreateRelease(
                name="Demo release",
                studies=STUDIES,
                description="made by make demo",
                tags=("demo",),
            )
        )
    )
    if not isinstance(created, ReleaseResult):
        raise DemoError("the coordinator answered create without a release")
    release = created.release
    console.print(render.release_summary("created", release), soft_wrap=True)

    publishing: list[asyncio.Task[None]] = []
    failures: list[str] = []

    async def publish() -> None:
        try:
            answer = expect_ok(await client.request(PublishRelease(release_id=release.id)))
        except (Refused, AdminClientError) as error:
            failures.append(f"publish refused: {error}")
            return
        if isinstance(answer, ReleaseResult):
            screen_note[0] = f"publishing as version {answer.release.version}"

    screen_note: list[str | None] = [None]
    with Screen(console) as screen:

        def on_update(view: ReleaseView, note: str | None) -> None:
            if view.state is ReleaseState.STAGED and not publishing:
                screen_note[0] = "staged everywhere: publishing"
                publishing.append(asyncio.create_task(publish()))
            screen.show(view, note or (failures[-1] if failures else screen_note[0]))

        final = await watch_release(client, release.id, on_update, poll_interval=0.25)
    if publishing:
        await publishing[0]
    return final


# ---------------------------------------------------------------------- main


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="demo", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--log-dir", type=Path, default=ROOT / ".demo", help="where the logs go (default .demo)"
    )
    parser.add_argument("--namespace", help="broker namespace (default demo-<random hex>)")
    return parser.parse_args(argv)


async def demo(amqp_url: str, namespace: str, processes: Processes, console: Console) -> int:
    python = sys.executable
    configured = configured_store()
    store = mask_url(configured) if configured else _shown(processes.log_dir / f"{namespace}.db")
    console.print(f"starting the coordinator (store: {store})")
    env = coordinator_env(amqp_url, namespace, processes.log_dir)
    processes.start("coordinator", [python, "-m", "coordinator"], env)
    for example in EXAMPLES:
        env = service_env(amqp_url, namespace, example)
        console.print(
            f"starting {example.name:<13} rc-task {example.target} "
            f"({example.env_prefix}_SECONDS={env[f'{example.env_prefix}_SECONDS']})"
        )
        processes.start(example.name, [python, "-m", "task_sdk.cli", example.target], env)

    async with AdminClient(amqp_url, namespace, timeout=5, operator="demo") as client:
        await wait_for_coordinator(client, processes, within=40)
        await wait_for_services(client, processes, within=30)
        for example in EXAMPLES:
            expect_ok(await client.request(RequireService(service=example.name)))
        console.print("required: " + ", ".join(example.name for example in EXAMPLES))
        final = await run_release(client, console)

    console.print()
    console.print(final_table(final))
    if final.state is ReleaseState.PUBLISHED:
        console.print(
            f"[bold green]{final.id} published as version {final.version}[/] "
            f"(tentative {final.tentative_version})",
            soft_wrap=True,
        )
        return 0
    console.print(f"[bold red]{final.id} ended {render.release_state_line(final)}[/]", soft_wrap=True)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    console = Console(highlight=False)
    if not console.is_terminal:  # a log or a pipe: wide enough for the final table
        console = Console(highlight=False, width=max(console.width, 120))
    amqp_url = os.environ.get("RC_AMQP_URL") or DEFAULT_AMQP_URL
    namespace = arguments.namespace or f"demo-{uuid.uuid4().hex[:8]}"
    try:
        check_broker_reachable(amqp_url)
    except DemoError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1

    log_dir: Path = arguments.log_dir / namespace
    log_dir.mkdir(parents=True, exist_ok=True)
    processes = Processes(log_dir)
    console.print(f"[bold]Release Coordinator demo[/]  namespace {namespace} on {mask_url(amqp_url)}")
    console.print(f"logs: {_shown(log_dir)}/")

    def stop_requested(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwinds like Ctrl-C, through the finally below

    signal.signal(signal.SIGTERM, stop_requested)
    signal.signal(signal.SIGHUP, stop_requested)
    status = 1
    try:
        status = asyncio.run(demo(amqp_url, namespace, processes, console))
    except KeyboardInterrupt:
        status = EXIT_INTERRUPTED
        print("demo: interrupted, stopping everything", file=sys.stderr)
    except DemoError as error:
        print(f"demo: {error}", file=sys.stderr)
    except (AdminClientError, Refused) as error:
        print(f"demo: {error}", file=sys.stderr)
    finally:
        for signum in STOP_SIGNALS:  # a second Ctrl-C must not cut the cleanup short
            signal.signal(signum, signal.SIG_IGN)
        stragglers = processes.stop()
        cleanup(amqp_url, namespace, configured_store())
    names = ", ".join(name for name, _ in processes.started)
    killed = f" (killed after {GRACE_SECONDS:g}s: {', '.join(stragglers)})" if stragglers else ""
    console.print(f"stopped {names or 'nothing'}{killed}; logs in {_shown(log_dir)}/")
    return status


def cleanup(amqp_url: str, namespace: str, store_url: str | None) -> None:
    async def go() -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(delete_namespace(amqp_url, namespace, [e.name for e in EXAMPLES]), 10)
        if store_url:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(drop_mongodb_database(store_url, database_of(namespace)), 10)

    asyncio.run(go())


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(Path.cwd()))
    return str(path)


if __name__ == "__main__":
    sys.exit(main())
