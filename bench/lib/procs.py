"""CPU time and file handles from /proc and rabbitmqctl, and the child processes a benchmark starts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from bench.lib.basics import REPO, say

# ---------------------------------------------------------------------- /proc


#: A process, or the threads of a process whose names start with a prefix (the embedded store's).
Measured = int | tuple[int, str]
#: The names the embedded store gives its threads (see ``coordinator/store/sqlite.py``).
STORE_THREADS = "rc-store"


def cpu_seconds(what: Measured) -> float:
    """User + system CPU seconds of a process, or of some of its threads, so far (0 if gone)."""
    if isinstance(what, int):
        return _stat_cpu(Path(f"/proc/{what}/stat"))
    pid, prefix = what
    total = 0.0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                if (task / "comm").read_text().startswith(prefix):
                    total += _stat_cpu(task / "stat")
    return total


def _stat_cpu(stat: Path) -> float:
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` (``VmRSS``, KiB; 0 if it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def file_handles() -> tuple[int, int] | None:
    """``(limit, used)`` of the local RabbitMQ node's file-handle budget; None if ``rabbitmqctl`` cannot tell.

    RabbitMQ reserves about 3 handles per quorum queue; when the budget runs out, the node stops setting
    up new connections without an error (see scripts/ensure-rabbitmq.sh).
    """
    try:
        done = subprocess.run(
            ["rabbitmqctl", "-q", "eval", "file_handle_cache:info([total_limit, total_used])."],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    numbers = [int(n) for n in re.findall(r"\d+", done.stdout)]
    if done.returncode != 0 or len(numbers) != 2:
        return None
    return numbers[0], numbers[1]


def check_file_handles(queues: int) -> None:
    """Refuse to start when the local node's file-handle budget cannot hold ``queues`` more quorum queues."""
    budget = file_handles()
    if budget is None:
        return
    limit, used = budget
    if limit - used < 3 * queues + 100:
        raise SystemExit(
            f"RabbitMQ's file-handle budget ({used} of {limit} used) cannot hold {queues} more quorum "
            "queues: the node would stop accepting connections. Run scripts/ensure-rabbitmq.sh (it raises "
            "the budget of a local node) or give the node a higher ulimit -n."
        )


def rabbitmq_pid(url: str) -> int | None:
    """The process listening on the broker's port of ``url`` on this machine (to account its CPU), if any."""
    import urllib.parse

    port = urllib.parse.urlsplit(url).port or 5672
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(entry.name)
    return None


class CpuMeter:
    """CPU seconds used by named processes between :meth:`start` and :meth:`stop`."""

    def __init__(self, pids: Mapping[str, Measured | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid}
        self._before: dict[str, float] = {}
        self._started = 0.0
        self.result: dict[str, float] = {}

    def start(self) -> CpuMeter:
        self._before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._started = time.monotonic()
        return self

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self._started
        self.result = {
            name: round(cpu_seconds(pid) - self._before[name], 3) for name, pid in self.pids.items()
        }
        self.result["wall"] = round(wall, 3)
        return self.result


# ---------------------------------------------------------------------- child processes


class Child:
    """A process the benchmark started: first stdout lines read for readiness, stderr kept in a temp file.

    With ``profile`` the command runs under ``py-spy record`` (speedscope output at that path); the
    measured process is then py-spy's child (:attr:`pid`).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        profile: Path | None = None,
        profile_rate: int = 200,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = {**os.environ, **(env or {})}
        self.profile = profile
        self.profile_rate = profile_rate
        self.process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._pid: int | None = None

    def start(self) -> Child:
        argv = self.argv
        if self.profile is not None:
            pyspy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
            if pyspy is None:
                raise RuntimeError("py-spy is not installed: pip install py-spy (into the virtualenv)")
            self.profile.parent.mkdir(parents=True, exist_ok=True)
            argv = [
                pyspy,
                "record",
                "--output",
                str(self.profile),
                "--format",
                "speedscope",
                "--rate",
                str(self.profile_rate),
                "--nonblocking",
                "--idle",
                "--",
                *argv,
            ]
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - open while the child runs
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=self.env,
            cwd=REPO,
        )
        threading.Thread(target=self._read_stdout, name=f"{self.name}-stdout", daemon=True).start()
        return self

    def _read_stdout(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self._lines.put(raw.decode(errors="replace").rstrip("\n"))
        self._lines.put(None)

    @property
    def pid(self) -> int:
        """The measured process (under py-spy: py-spy's child)."""
        assert self.process is not None
        if self.profile is None:
            return self.process.pid
        if self._pid is None:
            deadline = time.monotonic() + 10
            while self._pid is None and time.monotonic() < deadline:
                self._pid = _first_child(self.process.pid)
                if self._pid is None:
                    time.sleep(0.05)
            if self._pid is None:
                raise RuntimeError(f"{self.name}: py-spy started no child")
        return self._pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def expect(self, prefix: str, within: float) -> str:
        """The next stdout line starting with ``prefix`` (others are echoed); fails if the child exits."""
        deadline = time.monotonic() + within
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no {prefix!r} line within {within:g}s{self.tail()}")
            try:
                line = await asyncio.to_thread(self._lines.get, True, min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:
                code = self.process.wait(5) if self.process else None
                raise RuntimeError(f"{self.name} exited (status {code}) before {prefix!r}{self.tail()}")
            if line.startswith(prefix):
                return line
            say(f"{self.name}: {line}")

    def send(self, line: str) -> None:
        assert self.process is not None
        assert self.process.stdin is not None
        self.process.stdin.write((line + "\n").encode())
        self.process.stdin.flush()

    def tail(self, chars: int = 3000) -> str:
        if self._stderr is None:
            return ""
        with contextlib.suppress(Exception):
            self._stderr.seek(0)
            text = self._stderr.read().decode(errors="replace").strip()
            if text:
                return f"\n--- {self.name} stderr (end) ---\n{text[-chars:]}"
        return ""

    async def stop(self, within: float = 20) -> int | None:
        """SIGTERM (the measured process), wait, then SIGKILL. Idempotent."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            target = self._pid or (self.pid if self.profile is None else _first_child(process.pid))
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.kill(target or process.pid, signal.SIGTERM)
            with contextlib.suppress(OSError):
                assert process.stdin is not None
                process.stdin.close()
            try:
                await asyncio.to_thread(process.wait, within)
            except subprocess.TimeoutExpired:
                say(f"{self.name} did not stop within {within:g}s: killing it")
                if self.profile is not None and (child := _first_child(process.pid)):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)
                process.kill()
                await asyncio.to_thread(process.wait, 10)
        return process.returncode

    def close(self) -> None:
        """Kill if still running (synchronous last resort) and release the log file."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            with contextlib.suppress(Exception):
                self.process.wait(10)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


def _first_child(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            children = (task / "children").read_text().split()
            if children:
                return int(children[0])
    return None


class Children:
    """Every child of one run: stopped in reverse order on exit, whatever happened; then the clean-ups."""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self.cleanups: list[Callable[[], None]] = []

    def add(self, child: Child) -> Child:
        self.children.append(child.start())
        return child

    async def stop(self, child: Child) -> None:
        try:
            await child.stop()
        finally:
            child.close()
            if child in self.children:
                self.children.remove(child)

    async def __aenter__(self) -> Children:
        return self

    async def __aexit__(self, *_: object) -> None:
        for child in reversed(list(self.children)):
            try:
                await asyncio.shield(self.stop(child))
            except BaseException:
                child.close()
        for cleanup in reversed(self.cleanups):
            cleanup()
