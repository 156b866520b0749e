"""The demo's child processes: each started in a process group of its own and recorded in ``pids.json``
before a stop signal can interrupt the demo; stopped with SIGTERM, a grace period, then SIGKILL to each
group. On Linux the children also get SIGTERM if the demo itself is killed."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GRACE_SECONDS = 10.0


def _load_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def _in_child() -> None:
    """Runs in each child between fork and exec: undo the blocked signals; die with the demo (Linux)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """Hold Ctrl-C and friends while a child is started and recorded: none can escape the record."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
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
