"""An in-memory MongoDB-protocol server (mongoeco's wire server) run in a child process.

The MongoDB engine's tests and benchmarks use it where no real MongoDB is named (``RC_MONGODB_URL`` unset)
and no Docker engine runs: they talk to it with the ordinary ``pymongo`` driver, over the wire. It runs in
its own process so that it never competes with the caller's event loop, and so that it needs Python >= 3.13
(mongoeco's requirement) only in that process. The product itself never uses it.

Command line::

    python -m tests._mongoeco [--host 127.0.0.1] [--port 0]

prints exactly one line ``READY mongodb://HOST:PORT/?directConnection=true`` on stdout once it listens,
then serves until SIGTERM or SIGINT (exit status 0). With ``--exit-on-stdin-eof`` it also stops when its
stdin is closed, and with ``--parent-pid PID`` when that process goes away: :class:`MongoecoServer` passes
both, so the server never outlives the process that started it.

Python API::

    with MongoecoServer() as uri:
        client = pymongo.MongoClient(uri)

This module imports only the standard library at top level: mongoeco is optional, and the child runs this
very file by path, so the interpreter chosen for it needs mongoeco but not this project.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import IO

#: The interpreter to run the server with when the current one cannot import mongoeco.
PYTHON_ENV = "RC_MONGOECO_PYTHON"
#: Printed by the child, followed by the URI, once it listens.
READY = "READY"
#: Printed by the child, followed by the reason, when it cannot run the server at all.
UNAVAILABLE = "UNAVAILABLE"
#: Exit status of the child when mongoeco cannot be imported.
EXIT_UNAVAILABLE = 3

_INSTALL_HINT = (
    "the embedded MongoDB-protocol server needs the 'mongoeco[wire]' package, which needs Python >= 3.13: "
    "install it with `pip install 'mongoeco[wire]>=4.10'` (or `pip install -e '.[embedded]'`) into a "
    f"Python >= 3.13 environment and run with that interpreter, or set {PYTHON_ENV} to such an interpreter; "
    "alternatively set RC_MONGODB_URL to a real MongoDB"
)


class MongoecoUnavailable(RuntimeError):
    """mongoeco cannot be imported by the interpreter chosen for the server."""


def can_import_mongoeco() -> bool:
    """Whether the current interpreter can run the server itself."""
    if sys.version_info < (3, 13):
        return False
    try:
        return importlib.util.find_spec("mongoeco.wire") is not None
    except (ImportError, ValueError):
        return False


def choose_python() -> str:
    """The current interpreter if it can import mongoeco, else ``$RC_MONGOECO_PYTHON``.

    Raises :class:`MongoecoUnavailable` (a ``RuntimeError``) when neither is possible.
    """
    if can_import_mongoeco():
        return sys.executable
    configured = os.environ.get(PYTHON_ENV, "").strip()
    if configured:
        return configured
    raise MongoecoUnavailable(
        f"mongoeco is not importable by {sys.executable} (Python {sys.version.split()[0]}) and {PYTHON_ENV} "
        f"is not set; {_INSTALL_HINT}"
    )


class MongoecoServer:
    """Starts, and stops, the wire server in a child process; ``start()`` returns its MongoDB URI.

    The child exits when :meth:`stop` is called, when this process closes the pipe to its stdin
    (which the operating system does when this process dies), or when its parent process changes.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        python_executable: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._python = python_executable
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self.uri: str | None = None

    @property
    def python_executable(self) -> str:
        """The interpreter the server runs with (see :func:`choose_python`)."""
        if self._python is None:
            self._python = choose_python()
        return self._python

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 20) -> str:
        """Start the server and return its URI once it listens; raise ``RuntimeError`` if it cannot."""
        if self._process is not None:
            if self.running and self.uri is not None:
                return self.uri
            self.stop()
        python = self.python_executable
        command = [
            python,
            "-P",  # do not put this file's directory first on the child's sys.path
            str(Path(__file__).resolve()),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--exit-on-stdin-eof",
            "--parent-pid",
            str(os.getpid()),
        ]
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - kept open while the child runs
        try:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                start_new_session=False,
                close_fds=True,
            )
        except OSError as error:
            self._close_stderr()
            raise MongoecoUnavailable(f"cannot run {python!r}: {error}; {_INSTALL_HINT}") from error
        line = self._read_first_line(timeout)
        if line is not None and line.startswith(READY + " "):
            self.uri = line.removeprefix(READY + " ").strip()
            return self.uri
        # Not ready: find out why, and clean up.
        process = self._process
        self.stop()
        detail = self._stderr_text()
        self._close_stderr()
        if line is not None and line.startswith(UNAVAILABLE):
            reason = line.removeprefix(UNAVAILABLE).strip()
            raise MongoecoUnavailable(f"{python} cannot run the embedded store ({reason}); {_INSTALL_HINT}")
        if line is None and process.returncode is None:
            what = f"did not report {READY} within {timeout:g}s"
        else:
            what = f"exited with status {process.returncode} before it was ready"
        raise RuntimeError(f"the embedded store ({python}) {what}" + (f": {detail}" if detail else ""))

    def stop(self, timeout: float = 10) -> None:
        """Stop the server (idempotent)."""
        process, self._process = self._process, None
        self.uri = None
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        self._close_stderr()

    def __del__(self) -> None:
        if self._process is not None and self._process.poll() is None:
            with contextlib.suppress(Exception):
                self._process.kill()

    # ------------------------------------------------------------------ internals

    def _read_first_line(self, timeout: float) -> str | None:
        """The child's first stdout line, or ``None`` if it gave none in time (read in a thread: portable)."""
        assert self._process is not None
        assert self._process.stdout is not None
        stdout = self._process.stdout
        lines: queue.Queue[bytes] = queue.Queue(maxsize=1)
        reader = threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True)
        reader.start()
        try:
            raw = lines.get(timeout=timeout)
        except queue.Empty:
            return None
        if not raw:
            self._process.wait(5)
            return None
        return raw.decode(errors="replace")

    def _stderr_text(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace").strip()
        return text[-2000:]

    def _close_stderr(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


# ---------------------------------------------------------------------- the child


async def _serve(host: str, port: int, *, exit_on_stdin_eof: bool, parent_pid: int | None) -> int:
    if sys.version_info < (3, 13):
        print(
            f"{UNAVAILABLE} Python {sys.version.split()[0]} is too old (mongoeco needs >= 3.13)", flush=True
        )
        return EXIT_UNAVAILABLE
    try:
        from mongoeco.wire import AsyncMongoEcoProxyServer
    except ImportError as error:
        print(f"{UNAVAILABLE} cannot import mongoeco.wire: {error}", flush=True)
        return EXIT_UNAVAILABLE

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def request_stop() -> None:
        loop.call_soon_threadsafe(stop.set)

    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not POSIX
            signal.signal(signum, lambda _signum, _frame: request_stop())

    if exit_on_stdin_eof:

        def watch_stdin() -> None:
            # The raw descriptor, not sys.stdin: a daemon thread blocked in a buffered read would hold
            # the buffer's lock while the interpreter shuts down.
            with contextlib.suppress(OSError):
                while os.read(0, 4096):
                    pass
            request_stop()

        threading.Thread(target=watch_stdin, name="stdin-eof", daemon=True).start()

    async def watch_parent() -> None:
        while True:
            await asyncio.sleep(1)
            if os.getppid() != parent_pid:
                stop.set()
                return

    async with AsyncMongoEcoProxyServer(host=host, port=port) as server:
        watcher = asyncio.create_task(watch_parent()) if parent_pid is not None else None
        print(f"{READY} {server.address.uri}", flush=True)
        await stop.wait()
        if watcher is not None:
            watcher.cancel()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests._mongoeco",
        description="Serve an in-memory MongoDB-protocol server (mongoeco) until SIGTERM/SIGINT.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default 0: any free port)")
    parser.add_argument("--exit-on-stdin-eof", action="store_true", help="also stop when stdin is closed")
    parser.add_argument("--parent-pid", type=int, default=None, help="also stop when this parent goes away")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(
            _serve(args.host, args.port, exit_on_stdin_eof=args.exit_on_stdin_eof, parent_pid=args.parent_pid)
        )
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
