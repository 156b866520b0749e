"""Credentials never reach a log, and the Prometheus endpoint tells what happened (issue 8).

One run, shared by the tests of this module, with every process real and separate:

- its own broker users, made for the run with ``deploy.setup.grant`` (the coordinator, the operator and
  one per task service, each with the least-privilege permissions of ``rc-admin-setup``) and random,
  distinctive passwords with characters that URL encoding changes; deleted afterwards;
- a MongoDB-protocol server (mongoeco) that requires a password, which ``RC_MONGODB_URL`` carries;
- ``python -m coordinator`` with ``RC_METRICS_PORT`` and debug logging;
- the three example services (renamed, see ``named_examples``) as ``rc-task`` at debug level;
- the operator's ``rc`` for every operator action (and one failing call, whose error names the URL).

It drives a release through create -> staged -> publish -> published, publishes one malformed reply
(dead-lettered), scrapes ``/metrics``, stops everything, then the tests read what was written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aio_pika
import pymongo
import pytest
from prometheus_client.parser import text_string_to_metric_families

from deploy.definitions import Installation
from rc_cli.client import AdminClient, expect_ok
from schemas.broker_url import broker_user, mask_url
from schemas.enums import PUBLISHED_PATH, ReleaseState
from schemas.messages import ListServices, ReleaseResult, ServiceList, ShowRelease
from schemas.topology import Topology
from tests._broker_users import BrokerAdmin, with_credentials
from tests._harness import delete_namespace
from tests._mongoeco import can_import_mongoeco
from tests.cli.conftest import rc_env, run_rc

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = {
    "portal": ("tests.coordinator.named_examples:Portal", "PORTAL"),
    "search-index": ("tests.coordinator.named_examples:SearchIndex", "SEARCH_INDEX"),
    "file-service": ("tests.coordinator.named_examples:FileService", "FILE_SERVICE"),
}
STEP_TIMEOUT = 20.0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# ---------------------------------------------------------------------- secrets


def new_password() -> tuple[str, str]:
    """``(password, core)``: the password has ``/``, ``+``, ``%`` and ``@`` (URL encoding changes all four)
    around a random core that no log line contains by chance."""
    core = secrets.token_hex(12)
    return f"Pw{core}/+%@{secrets.token_hex(2)}", core


def forms(password: str, core: str) -> set[str]:
    """Every way a password could show up in text: raw, URL-encoded (both styles), and its random core."""
    return {
        password,
        urllib.parse.quote(password, safe=""),
        urllib.parse.quote_plus(password),
        urllib.parse.quote(password),
        core,
    }


def leaks(text: str, secrets_: dict[str, tuple[str, str]]) -> list[str]:
    """``owner: form`` for every form of every password found in ``text``."""
    return [
        f"{owner}: {form!r}"
        for owner, (password, core) in secrets_.items()
        for form in sorted(forms(password, core))
        if form in text
    ]


# ---------------------------------------------------------------------- processes


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    outputs: list[Path]

    def text(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in self.outputs if path.exists())

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def wait_stopped(self) -> None:
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def _rc_task() -> list[str]:
    script = Path(sys.executable).with_name("rc-task")
    return [str(script)] if script.exists() else [sys.executable, "-m", "task_sdk.cli"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def log_events(text: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``text`` (other lines skipped)."""
    events = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            parsed = json.loads(line)
            if isinstance(parsed, dict):
                events.append(parsed)
    return events


async def poll(what: str, probe: Callable[[], Any], within: float = STEP_TIMEOUT) -> Any:
    """Call (and await) ``probe`` until it returns something truthy; fail naming ``what`` after ``within``."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {what} within {within}s (last: {last!r})")


# ---------------------------------------------------------------------- the run


@dataclass
class Run:
    namespace: str
    services: dict[str, str]  # example -> service name (= broker user)
    urls: dict[str, str]  # owner -> URL with password
    secrets: dict[str, tuple[str, str]]  # owner -> (password, core)
    directory: Path
    processes: list[Process] = field(default_factory=list)
    rc_outputs: list[str] = field(default_factory=list)
    release_id: str = ""
    final_version: str | None = None
    metrics_text: str = ""

    def process(self, name: str) -> Process:
        return next(p for p in self.processes if p.name == name)

    async def rc(self, *args: str, amqp_url: str | None = None, fails: bool = False) -> Any:
        env = rc_env(amqp_url or self.urls["operator"], self.namespace)
        env |= {"RC_OPERATOR": "observer", "RC_TIMEOUT": "15"}
        done = await run_rc(*args, env=env)
        self.rc_outputs.append(f"$ rc {' '.join(args)}\n{done.stdout}\n{done.stderr}")
        assert (done.code != 0) is fails, f"rc {args}: exit {done.code}: {done.stdout!r} {done.stderr!r}"
        return (
            json.loads(done.stdout) if "--json" in args and done.stdout.strip() else done.stdout + done.stderr
        )

    def spawn(self, name: str, command: list[str], env: dict[str, str]) -> Process:
        out, err = self.directory / f"{name}.out", self.directory / f"{name}.err"
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            popen = subprocess.Popen(
                command,
                cwd=ROOT,
                env={k: v for k, v in os.environ.items() if not k.startswith("RC_")} | env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        process = Process(name, popen, [out, err])
        self.processes.append(process)
        return process


@contextlib.contextmanager
def secured_store(user: str, password: str, directory: Path) -> Iterator[str]:
    """A mongoeco server requiring ``user``/``password``; yields ``host:port``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RC_")}
    env |= {"RC_TEST_STORE_USER": user, "RC_TEST_STORE_PASSWORD": password}
    with open(directory / "store.err", "wb") as stderr:
        popen = subprocess.Popen(
            [sys.executable, "-m", "tests.coordinator.secured_store"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    assert popen.stdout is not None
    assert popen.stdin is not None
    try:
        line = popen.stdout.readline().decode().strip()
        assert line.startswith("READY "), f"the secured store did not start: {line!r}"
        yield line.split(" ", 1)[1]
    finally:
        stdin: IO[bytes] = popen.stdin
        with contextlib.suppress(OSError):
            stdin.close()
        try:
            popen.wait(10)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()


def drop_database(url: str, name: str) -> None:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)
    try:
        client.drop_database(name)
    finally:
        client.close()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def samples(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(parsed: Samples, name: str, **labels: str) -> float | None:
    return parsed.get((name, frozenset(labels.items())))


@pytest.fixture(scope="module")
async def run(
    amqp_url: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> AsyncIterator[Run]:
    tag = uuid.uuid4().hex[:8]
    namespace = f"obs-{tag}"
    services = {example: f"{example}-{tag}" for example in EXAMPLES}
    path = urllib.parse.urlsplit(amqp_url).path
    installation = Installation(
        services=tuple(services.values()),
        namespace=namespace,
        vhost=urllib.parse.unquote(path[1:]) if len(path) > 1 else "/",
        coordinator_user=f"obs-{tag}-coordinator",
        operator_user=f"obs-{tag}-operator",
    )
    owners = {
        "coordinator": installation.coordinator_user,
        "operator": installation.operator_user,
        **{f"service {name}": name for name in services.values()},
    }
    made = {owner: new_password() for owner in [*owners, "store"]}
    urls = {owner: with_credentials(amqp_url, user, made[owner][0]) for owner, user in owners.items()}
    run = Run(namespace, services, urls, made, tmp_path_factory.mktemp("observability"))
    admin = BrokerAdmin.for_url(amqp_url)
    metrics_port = free_port()
    try:
        await asyncio.to_thread(admin.grant, installation, {owners[o]: made[o][0] for o in owners})
        with contextlib.ExitStack() as stack:
            if can_import_mongoeco():
                address = stack.enter_context(secured_store(f"obs-{tag}", made["store"][0], run.directory))
                store_url = (
                    f"mongodb://obs-{tag}:{urllib.parse.quote(made['store'][0], safe='')}@{address}/"
                    "?directConnection=true&authMechanism=SCRAM-SHA-256"
                )
            else:
                # No mongoeco here to make a password-protected store with: use the suite's MongoDB
                # (RC_MONGODB_URL or Docker). Its password, if it has one, is not checked for.
                store_url = request.getfixturevalue("mongo_url")
                del made["store"]
                stack.callback(drop_database, store_url, namespace.replace("-", "_"))
            urls["store"] = store_url
            try:
                await drive(run, store_url, metrics_port)
            except BaseException:
                for process in run.processes:  # shown by pytest with the failure
                    print(f"----- {process.name}\n{process.text()[-4000:]}")
                raise
            finally:
                for process in run.processes:
                    process.stop()
                for process in run.processes:
                    await asyncio.to_thread(process.wait_stopped)
        yield run
    finally:
        for user in owners.values():
            await asyncio.to_thread(admin.delete_user, user)
        await delete_namespace(amqp_url, namespace)


async def drive(run: Run, store_url: str, metrics_port: int) -> None:
    await _start_coordinator(run, store_url, metrics_port)
    _start_services(run)
    await asyncio.gather(*(run.rc("service", "require", name, "--json") for name in run.services.values()))
    await _release_published(run)
    await run.rc("release", "show", run.release_id, "--json")
    await run.rc("release", "list")
    # An error path: the CLI names the broker URL in its message (with the password masked).
    wrong_vhost = urllib.parse.urlsplit(run.urls["operator"])._replace(path=f"/{run.namespace}-nowhere")
    await run.rc("release", "list", amqp_url=wrong_vhost.geturl(), fails=True)
    await _send_malformed_reply(run)

    def settled() -> str | None:
        text = scrape(metrics_port)
        parsed = samples(text)
        dead = value(parsed, "rc_dead_lettered_total", reason="invalid")
        outbox = value(parsed, "rc_outbox_messages")
        return text if dead and outbox == 0 else None

    run.metrics_text = await poll("dead-lettered reply in the metrics", settled)


async def _start_coordinator(run: Run, store_url: str, metrics_port: int) -> None:
    """Start the coordinator, and wait until it is active."""
    coordinator = run.spawn(
        "coordinator",
        [sys.executable, "-m", "coordinator"],
        {
            "RC_AMQP_URL": run.urls["coordinator"],
            "RC_MONGODB_URL": store_url,
            "RC_NAMESPACE": run.namespace,
            "RC_METRICS_PORT": str(metrics_port),
            "RC_LOG_LEVEL": "debug",
            "RC_INITIALIZE_TIMEOUT": "15",
            "RC_PROCESS_TIMEOUT": "15",
            "RC_PUBLISH_TIMEOUT": "15",
            "RC_HEARTBEAT_TIMEOUT": "15",
        },
    )

    def active() -> bool:
        assert coordinator.popen.poll() is None, f"the coordinator exited:\n{coordinator.text()}"
        return any(event.get("event") == "active" for event in log_events(coordinator.text()))

    await poll("active coordinator", active)


def _start_services(run: Run) -> None:
    """Start the example services, each as its own broker user."""
    for example, (target, prefix) in EXAMPLES.items():
        service = run.services[example]
        run.spawn(
            service,
            [*_rc_task(), target, "--log-level", "DEBUG"],
            {
                "RC_AMQP_URL": run.urls[f"service {service}"],
                "RC_NAMESPACE": run.namespace,
                "RC_COORDINATOR_USER": broker_user(run.urls["coordinator"]),
                "RC_HEARTBEAT_SECONDS": "0.5",
                "RC_SHUTDOWN_TIMEOUT": "2",
                "RC_TEST_SERVICE_NAME": service,
                f"{prefix}_SECONDS": "0.4",
            },
        )


async def _release_published(run: Run) -> None:
    """Once the services are healthy: create a release with ``rc``, and publish it once it is staged."""
    async with AdminClient(run.urls["operator"], run.namespace, timeout=10, operator="observer") as admin:

        async def ready() -> bool:
            result = expect_ok(await admin.request(ListServices()))
            assert isinstance(result, ServiceList)
            healthy = {s.name for s in result.services if s.required and s.healthy and s.last_heartbeat_at}
            return healthy == set(run.services.values())

        def in_state(state: ReleaseState) -> Callable[[], Any]:
            async def probe() -> bool:
                result = expect_ok(await admin.request(ShowRelease(release_id=run.release_id)))
                assert isinstance(result, ReleaseResult)
                assert result.release.state in {state, *_before(state)}, result.release.state
                run.final_version = result.release.final_version
                return result.release.state is state

            return probe

        await poll("healthy services", ready)
        created = await run.rc("release", "create", "--name", "Observed", "--study", "SD_OBS", "--json")
        run.release_id = created["id"]
        await poll("staged release", in_state(ReleaseState.STAGED))
        await run.rc("release", "publish", run.release_id, "--json")
        await poll("published release", in_state(ReleaseState.PUBLISHED))


async def _send_malformed_reply(run: Run) -> None:
    """One malformed reply, sent as a service (RabbitMQ vouches for the user_id): dead-lettered as invalid."""
    portal = run.services["portal"]
    connection = await aio_pika.connect(run.urls[f"service {portal}"], timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        replies = await channel.get_exchange(Topology(run.namespace).replies_exchange, ensure=False)
        await replies.publish(
            aio_pika.Message(b"this is not json", message_id=uuid.uuid4().hex, user_id=portal),
            routing_key=f"reply.{portal}.reply",
            timeout=10,
        )


def _before(state: ReleaseState) -> set[ReleaseState]:
    return set(PUBLISHED_PATH[: PUBLISHED_PATH.index(state)])


# ---------------------------------------------------------------------- credentials


def test_the_leak_check_catches_a_logged_url() -> None:
    """The check below would see a URL logged unmasked, and the masking function removes every form."""
    password, core = new_password()
    owned = {"someone": (password, core)}
    url = with_credentials("amqp://127.0.0.1:5672/", "someone", password)
    mongo = f"mongodb://someone:{urllib.parse.quote(password, safe='')}@127.0.0.1:27017/?authSource=admin"
    assert leaks(json.dumps({"event": "active", "broker": url}), owned)
    assert leaks(f"connect_failed url={mongo}", owned)
    assert leaks(f"password={password}", owned)
    for secret_url in (url, mongo):
        shown = mask_url(secret_url)
        assert ":***@127.0.0.1" in shown, shown
        assert not leaks(shown, owned), shown


async def test_no_process_logs_a_credential(run: Run) -> None:
    """Coordinator, task services and rc ran with passwords in their URLs; no output holds any form of any."""
    assert run.final_version == "0.1.0"
    written = {
        path.name: path.read_text(errors="replace") for path in run.directory.iterdir() if path.is_file()
    }
    written.pop("store.err")  # the test's own MongoDB stand-in, given its password on purpose
    written |= {f"rc call {n}": output for n, output in enumerate(run.rc_outputs)}
    assert {"coordinator.err", *(f"{service}.err" for service in run.services.values())} <= set(written)
    found = {name: leaks(text, run.secrets) for name, text in written.items()}
    assert not {name: hits for name, hits in found.items() if hits}, "credentials in logs"

    # The URLs are logged, masked: the masking functions are what keeps the passwords out.
    coordinator = log_events(written["coordinator.err"])
    assert {"event": "active", "broker": mask_url(run.urls["coordinator"])}.items() <= next(
        e for e in coordinator if e.get("event") == "active"
    ).items()
    for service in run.services.values():
        started = next(e for e in log_events(written[f"{service}.err"]) if e.get("event") == "runner.started")
        assert started["amqp_url"] == mask_url(run.urls[f"service {service}"])
    refused = run.rc_outputs[-1]
    assert re.search(r"obs-\w+-operator:\*\*\*@", refused), refused
    # The checks above ran over real output: every stored write of the run was logged (one line each;
    # the decision of each input is a debug line).
    assert sum(e.get("event") == "stored" for e in coordinator) >= 5


# ---------------------------------------------------------------------- metrics


async def test_metrics_endpoint_reports_the_run(run: Run) -> None:
    parsed = samples(run.metrics_text)
    expected_states = PUBLISHED_PATH[:-1]  # every state of the path but the last, published
    # Releases by state: the one release is published, no state holds any other.
    assert value(parsed, "rc_releases", state="published") == 1
    for state in expected_states:
        assert value(parsed, "rc_releases", state=state.value) in (None, 0), state
    # Step durations: every state the release went through and left was observed exactly once.
    for state in expected_states[1:]:
        assert value(parsed, "rc_step_duration_seconds_count", state=state.value) == 1, state
        assert (value(parsed, "rc_step_duration_seconds_sum", state=state.value) or 0) > 0, state
    for state in ReleaseState:
        assert value(parsed, "rc_transitions_total", to=state.value) in (
            (1,) if state in {*expected_states[1:], ReleaseState.PUBLISHED} else (None, 0)
        ), state
    # Replies processed: accepted, staged and published from each of the three services, each applied once.
    assert value(parsed, "rc_messages_total", kind="reply", verdict="applied") == 3 * len(run.services)
    assert (value(parsed, "rc_messages_total", kind="heartbeat", verdict="applied") or 0) > 0
    assert (value(parsed, "rc_messages_total", kind="progress", verdict="applied") or 0) > 0
    # Dead-lettered by reason: the one malformed reply, and nothing else.
    dead = {
        dict(labels)["reason"]: v for (name, labels), v in parsed.items() if name == "rc_dead_lettered_total"
    }
    assert dead == {"invalid": 1}
    # Outbox size: everything the run caused was confirmed by the broker.
    assert value(parsed, "rc_outbox_messages") == 0
    assert value(parsed, "rc_publish_failures_total") == 0
    # Store latency: every update went through the store, timed.
    assert value(parsed, "rc_store_seconds_count", operation="insert_release") == 1
    assert (value(parsed, "rc_store_seconds_count", operation="compare_and_set") or 0) >= len(expected_states)
    assert (value(parsed, "rc_store_seconds_sum", operation="compare_and_set") or 0) > 0
    assert value(parsed, "rc_coordinator_active") == 1
