"""What the parts of the chaos run share: the fault kinds, the run's settings and report, its processes,
and the local broker's administration (``rabbitmqctl``, the management API)."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import signal
import subprocess
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from schemas.enums import ReleaseState

FAULTS = (
    "kill_coordinator",
    "kill_service",
    "broker_outage",
    "duplicate",
    "reordered",
    "stale",
    "malformed",
    "oversize",
    "spoofed",
    "redeclare_queue",
)
TERMINAL = {ReleaseState.PUBLISHED, ReleaseState.CANCELED, ReleaseState.FAILED}
BROKER_PORT = 5672
#: Used to set the installation up and tear it down (the local broker's administrator).
ADMIN_AMQP_URL = os.environ.get("RC_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
TIMEOUTS = {
    "RC_INITIALIZE_TIMEOUT": "10",
    "RC_PROCESS_TIMEOUT": "15",
    "RC_PUBLISH_TIMEOUT": "20",
    "RC_CANCEL_TIMEOUT": "10",
    "RC_HEARTBEAT_TIMEOUT": "8",
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Config:
    releases: int = 20
    services: int = 5
    seed: int = field(default_factory=lambda: secrets.randbelow(1_000_000))
    time_limit: float = 900.0
    broker_fault: str = "proxy"
    coordinator_module: str = "coordinator"
    #: The pause after each disruptive fault before the next may start (seeded per fault, in the plan).
    fault_gap: tuple[float, float] = (1.5, 4.0)
    concurrency: int = 3
    #: Processes per task service (competing for its work; a kill takes one of them).
    instances: int = 1
    #: Seconds a service spends processing one release (spread +-50 %): long enough for faults to
    #: meet releases in flight.
    work_seconds: float = 4.0
    workdir: Path | None = None
    json_path: Path | None = None


@dataclass
class Report:
    figures: dict[str, int | str | float] = field(default_factory=dict)
    violations: dict[str, int] = field(default_factory=dict)
    #: Faults applied, by kind.
    faults: Counter[str] = field(default_factory=Counter)
    #: Every planned fault the run tried: kind, release (number), step, the release's id and the state it
    #: was seen in, and whether the fault found something to act on (``applied``).
    injected: list[dict[str, Any]] = field(default_factory=list)
    #: Differences between the plan and ``injected`` (``bench.chaos_plan.faults_off_plan``).
    off_plan: list[str] = field(default_factory=list)
    #: Driven releases that did not end as planned, each with how and why.
    unplanned: list[str] = field(default_factory=list)
    #: Every driven release: its number in the plan, id, planned and actual end, the coordinator's reason,
    #: and when it ended (seconds since the epoch, as the store has it; None if it did not end).
    releases: list[dict[str, Any]] = field(default_factory=list)
    #: Faults that did not land where the plan put them (``bench.chaos_plan.misplaced_faults``).
    misplaced: list[str] = field(default_factory=list)
    #: Releases that ended off plan with no fault to explain it (``bench.chaos_plan.unexplained_endings``).
    unexplained: list[str] = field(default_factory=list)

    @property
    def total_violations(self) -> int:
        return sum(self.violations.values())


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    injected_kills: int = 0
    uncaused_exits: list[int] = field(default_factory=list)

    def start(self) -> None:
        with self.log_path.open("ab") as sink:
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )

    def check(self) -> None:
        """Notice an exit we did not cause, and restart."""
        if self.process is not None and self.process.poll() is not None:
            self.uncaused_exits.append(self.process.returncode)
            log(f"{self.name} exited by itself with {self.process.returncode}: restarting")
            self.start()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.injected_kills += 1

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


def delete_user(user: str, management: str | None) -> None:
    if management:
        request = urllib.request.Request(
            f"{management}/api/users/{quote(user, safe='')}", method="DELETE", headers=_GUEST_AUTH
        )
        with contextlib.suppress(OSError), urllib.request.urlopen(request, timeout=30) as response:
            response.read()
    else:
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_user", user], capture_output=True, timeout=120, check=False
        )


_GUEST_AUTH = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}


def management_url() -> str | None:
    """The management API of the local broker if it answers (much faster than rabbitmqctl)."""
    url = os.environ.get("RC_MANAGEMENT_URL", "http://127.0.0.1:15672")
    request = urllib.request.Request(f"{url}/api/overview", headers=_GUEST_AUTH)
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            response.read()
        return url
    except OSError:
        return None
