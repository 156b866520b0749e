"""``scripts/demo.py`` (what ``make demo`` runs), end to end on the real broker, and how it stops.

Every test checks that no process of the demo survives it: each child the demo started is the
leader of its own process group (recorded in ``pids.json``), and no process is left in any of
those groups (which also covers what the children started, such as the embedded store).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests._harness import delete_namespace

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scripts" / "demo.py"
#: Environment the demo chooses itself, or that would change what it does.
OWN = re.compile(r"^(RC_NAMESPACE|RC_MONGODB_DATABASE|RC_TRUSTED_USERS|RC_METRICS_PORT|RC_SHUTDOWN_TIMEOUT)$")
INJECTED = re.compile(r"^(PORTAL|SEARCH_INDEX|FILE_SERVICE)_")


class Demo:
    """One run of the demo, its output in a file, its logs and ``pids.json`` under ``log_dir``."""

    def __init__(self, amqp_url: str, tmp_path: Path, **env: str) -> None:
        self.namespace = f"demo-{uuid.uuid4().hex[:8]}"
        self.log_dir = tmp_path / "logs"
        self.output = tmp_path / "output.txt"
        base = {k: v for k, v in os.environ.items() if not OWN.match(k) and not INJECTED.match(k)}
        with open(self.output, "wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, str(DEMO), "--log-dir", str(self.log_dir), "--namespace", self.namespace],
                cwd=ROOT,
                env=base | {"RC_AMQP_URL": amqp_url, "COLUMNS": "120"} | env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our SIGINT goes to the demo alone, as Ctrl-C in its terminal would
            )

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait(self, within: float = 90) -> int:
        return self.process.wait(within)

    def wait_for_output(self, pattern: str, within: float = 60) -> None:
        deadline = time.monotonic() + within
        while not re.search(pattern, self.text()):
            assert self.process.poll() is None, f"the demo ended before {pattern!r}:\n{self.text()}"
            assert time.monotonic() < deadline, f"no {pattern!r} within {within}s:\n{self.text()}"
            time.sleep(0.1)

    def recorded(self) -> dict[str, int]:
        """``{name: pid}`` of every child the demo started, from its ``pids.json``."""
        files = list(self.log_dir.glob("*/pids.json"))
        if not files:
            return {}
        assert len(files) == 1
        return {entry["name"]: entry["pid"] for entry in json.loads(files[0].read_text())["processes"]}

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def group_members(groups: set[int]) -> list[str]:
    """``pid pgid command`` of every live process in one of ``groups``."""
    listing = subprocess.run(
        ["ps", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True, check=True
    )
    found = []
    for line in listing.stdout.splitlines():
        fields = line.split(None, 3)
        if len(fields) >= 3 and int(fields[1]) in groups and not fields[2].startswith("Z"):
            found.append(line.strip())
    return found


def assert_nothing_left(demo: Demo) -> None:
    groups = set(demo.recorded().values())
    deadline = time.monotonic() + 5  # an orphan being reaped by init
    while (left := group_members(groups)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"left behind: {left}"


@pytest.fixture
def start_demo(amqp_url: str, tmp_path: Path) -> Iterator[Callable[..., Demo]]:
    demos: list[Demo] = []

    def start(**env: str) -> Demo:
        demo = Demo(amqp_url, tmp_path, **env)
        demos.append(demo)
        return demo

    yield start
    for demo in demos:  # only if a test failed half way: never leave anything behind
        demo.kill()
        for pid in demo.recorded().values():
            for signum in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(pid, signum)
                except ProcessLookupError:
                    break
                time.sleep(0.5)
        # A demo killed with SIGKILL cannot delete its queues: do it for it.
        asyncio.run(delete_namespace(amqp_url, demo.namespace))


def test_the_demo_publishes_a_release_and_stops_everything(start_demo: Callable[..., Demo]) -> None:
    demo = start_demo()
    assert demo.wait() == 0, demo.text()
    text = demo.text()

    assert set(demo.recorded()) == {"coordinator", "portal", "search-index", "file-service"}
    assert re.search(r"RE_[0-9A-Z]{8} published as version \d+\.\d+\.0 \(tentative \d+\.\d+\.\d+\)", text)
    assert re.search(r"service\s+initialize\s+process\s+review\s+publish\s+total\s+state", text)
    for service in ("portal", "search-index", "file-service"):
        assert re.search(rf"{service}\s+\d+\.\ds\s+\d+\.\ds\s+\d+\.\ds\s+\d+\.\ds\s+published", text), text
        assert re.search(rf"{service}\s+running\s+\d+%\s+\S", text), "no progress was shown while running"
    assert re.search(r"release\s+(\d+\.\ds\s+){5}published", text)
    assert "stopped coordinator, portal, search-index, file-service" in text
    logs = {path.name for path in demo.log_dir.glob("*/*.log")}
    assert logs == {"coordinator.log", "portal.log", "search-index.log", "file-service.log"}
    assert_nothing_left(demo)


def test_an_injected_failure_ends_the_demo_with_status_1(start_demo: Callable[..., Demo]) -> None:
    demo = start_demo(FILE_SERVICE_FAIL="checksum mismatch", FILE_SERVICE_SECONDS="1")
    assert demo.wait() == 1, demo.text()
    text = demo.text()
    assert re.search(r"ended failed: .*file-service", text), text
    assert_nothing_left(demo)


@pytest.mark.parametrize(
    "moment",
    [r"starting file-service", r"required: ", r"\d+\.\ds\s+\S+\s+running\s+[1-9]\d*%"],
    ids=["while starting", "before creating", "while processing"],
)
def test_ctrl_c_at_any_point_leaves_no_process_behind(start_demo: Callable[..., Demo], moment: str) -> None:
    demo = start_demo(PORTAL_SECONDS="20", SEARCH_INDEX_SECONDS="20", FILE_SERVICE_SECONDS="20")
    demo.wait_for_output(moment)
    demo.process.send_signal(signal.SIGINT)
    assert demo.wait(within=60) == 130, demo.text()  # stop: 10 s grace, then a cleanup of up to 10 s
    assert "demo: interrupted, stopping everything" in demo.text()
    assert demo.recorded()
    assert_nothing_left(demo)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_even_a_killed_demo_leaves_no_process_behind(start_demo: Callable[..., Demo]) -> None:
    demo = start_demo(PORTAL_SECONDS="20", SEARCH_INDEX_SECONDS="20", FILE_SERVICE_SECONDS="20")
    demo.wait_for_output(r"\d+\.\ds\s+\S+\s+running\s+[1-9]\d*%")
    demo.process.kill()  # no cleanup runs: the children are told by the kernel that their parent died
    assert demo.wait() == -signal.SIGKILL
    groups = set(demo.recorded().values())
    deadline = time.monotonic() + 20
    while (left := group_members(groups)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"left behind: {left}"


def test_an_unreachable_broker_is_one_clear_line(tmp_path: Path) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(DEMO), "--log-dir", str(tmp_path)],
        cwd=ROOT,
        env=os.environ | {"RC_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert time.monotonic() - started < 15
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("demo: RabbitMQ is not reachable at amqp://guest:***@127.0.0.1:1/")
    assert not list(tmp_path.iterdir())  # nothing was started
