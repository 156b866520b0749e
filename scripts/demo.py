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
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from coordinator.store import store_for
from rc_cli import render
from rc_cli.client import AdminClient, AdminClientError, Refused, expect_ok
from rc_cli.watch import watch_release
from schemas.broker_url import broker_user, mask_url, split_urls
from schemas.documents import ReleaseView
from schemas.enums import ReleaseState, TaskState
from schemas.messages import (
    CreateRelease,
    ListServices,
    PublishRelease,
    ReleaseResult,
    RequireService,
    ServiceList,
)
from schemas.topology import Topology

ROOT = Path(__file__).resolve().parent.parent

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
STUDIES = ("SD_KIDS0001", "SD_KIDS0002")
GRACE_SECONDS = 10.0
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


# ---------------------------------------------------------------------- processes


def _load_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def _in_child() -> None:
    """Runs in each child between fork and exec: undo the blocked signals; die with the demo (Linux)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """Hold Ctrl-C and friends while a child is started and recorded: none can escape the record."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@dataclass
class Processes:
    """The demo's subprocesses, each the leader of its own process group, recorded in ``pids.json``."""

    log_dir: Path
    started: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    @property
    def pid_file(self) -> Path:
        return self.log_dir / "pids.json"

    def log_of(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def start(self, name: str, argv: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(self.log_of(name), "wb") as log, _signals_blocked():
            process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the demo only; the demo stops its children
                preexec_fn=_in_child,  # safe: the demo starts its children before any thread exists
            )
            self.started.append((name, process))
            self._record()
        return process

    def _record(self) -> None:
        data = {"processes": [{"name": name, "pid": p.pid, "pgid": p.pid} for name, p in self.started]}
        self.pid_file.write_text(json.dumps(data, indent=2) + "\n")

    def running(self) -> list[str]:
        return [name for name, process in self.started if process.poll() is None]

    def exited(self, name: str) -> int | None:
        """The exit code of ``name`` if it has exited, else None."""
        for started, process in self.started:
            if started == name:
                return process.poll()
        return None

    def stop(self, grace: float = GRACE_SECONDS) -> list[str]:
        """SIGTERM every child, wait up to ``grace`` seconds, then SIGKILL each child's process group
        (the child itself if it did not stop, and whatever it left behind); return the stragglers.

        SIGTERM goes to the child alone, not its group, so that it stops its own helpers in order
        (the coordinator's embedded store must outlive the coordinator's last write).
        """
        for _, process in self.started:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _, process in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.0, deadline - time.monotonic()))
        stragglers = [name for name, process in self.started if process.poll() is None]
        for _, process in self.started:
            _signal_group(process.pid, signal.SIGKILL)  # also whatever a child left in its group
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
        return stragglers


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


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


def span(start: datetime | None, end: datetime | None) -> str:
    """``end - start`` as ``1.2s``, or ``-`` when either is unknown."""
    if start is None or end is None:
        return "-"
    return f"{(end - start).total_seconds():.1f}s"


def final_table(view: ReleaseView) -> Table:
    """Per service and for the release: how long each step took, and where it ended."""
    table = Table(box=box.SIMPLE_HEAD, title=f"{view.id}  {view.name}", title_justify="left")
    table.add_column("service", no_wrap=True)
    for column in ("initialize", "process", "review", "publish", "total"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("state", no_wrap=True)
    for task in render.ordered_tasks(view):
        at = task.entered.get
        begun = at(TaskState.WAITING, view.created_at)
        ended = at(TaskState.PUBLISHED) or (task.updated_at if task.state.is_final else None)
        table.add_row(
            task.service,
            span(begun, at(TaskState.INITIALIZED)),
            span(at(TaskState.RUNNING), at(TaskState.STAGED)),
            "",
            span(at(TaskState.PUBLISHING), at(TaskState.PUBLISHED)),
            span(begun, ended),
            render.styled_state(task.state.value),
        )
    was = view.entered.get
    table.add_section()
    table.add_row(
        Text("release", style="bold"),
        span(was(ReleaseState.INITIALIZING), was(ReleaseState.RUNNING)),
        span(was(ReleaseState.RUNNING), was(ReleaseState.STAGED)),
        span(was(ReleaseState.STAGED), was(ReleaseState.PUBLISHING)),
        span(was(ReleaseState.PUBLISHING), was(ReleaseState.PUBLISHED)),
        span(view.created_at, was(view.state) if view.state.is_terminal else None),
        render.styled_state(view.state.value),
    )
    return table


class Screen:
    """Live progress on a terminal; one line per change of a task's state or quarter of progress otherwise."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live: Live | None = None
        self._printed: dict[str, tuple[str, int]] = {}
        self._state: str | None = None
        self._note: str | None = None

    def __enter__(self) -> Screen:
        if self.console.is_terminal:
            self.live = Live(console=self.console, auto_refresh=False, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def show(self, view: ReleaseView, note: str | None) -> None:
        elapsed = (datetime.now(UTC) - view.created_at).total_seconds()
        if self.live is not None:
            footer = Text(f"{elapsed:5.1f}s" + (f"  {note}" if note else ""), style="dim")
            parts: list[RenderableType] = [render.watch_view(view), footer]
            self.live.update(Group(*parts), refresh=True)
            return
        if view.state.value != self._state:
            self._state = view.state.value
            self.console.print(f"{elapsed:5.1f}s  release {render.release_state_line(view)}", soft_wrap=True)
        for task in render.ordered_tasks(view):
            mark = (task.state.value, int(task.progress // 25))
            if self._printed.get(task.service) != mark:
                self._printed[task.service] = mark
                self.console.print(
                    f"{elapsed:5.1f}s    {task.service:<13} {task.state.value:<10} "
                    f"{render.percent(task.progress):>4}  {task.last_message or ''}",
                    soft_wrap=True,
                )
        if note and note != self._note:
            self.console.print(f"{elapsed:5.1f}s  {note}", soft_wrap=True)
        self._note = note


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
        for signum in _STOP_SIGNALS:  # a second Ctrl-C must not cut the cleanup short
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
