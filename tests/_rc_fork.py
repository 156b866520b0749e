"""A pre-loaded ``rc`` for the tests: one process imports ``rc_cli`` once, then forks a child per command.

    python -m tests._rc_fork

Each ``rc`` command the suite runs is a new process that runs the real entry point (``rc_cli.main.main``)
with its own arguments, environment, standard streams and exit status, exactly as ``python -m rc_cli``
would. Only the interpreter's start and the imports (about a second per command, most of the suite's
operator tests) are done once. ``tests/cli/conftest.py::run_rc`` is the client; set
``RC_TESTS_FRESH_RC=1`` to start a new interpreter for every command instead.

Protocol: one JSON object per line. Request on standard input: ``{"id", "args", "env", "stdout",
"stderr"}`` (the two files the child writes its streams to). Answers on standard output: ``{"id", "pid"}``
once forked, ``{"id", "code"}`` once it exited. The server is single-threaded (fork and threads do not
mix) and ends when its standard input closes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import select
import sys
import traceback
from typing import Any, BinaryIO


def _child(request: dict[str, Any]) -> None:
    """In the forked child: become ``rc ARGS`` with the request's environment and streams, then exit."""
    code = 1
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["rc", *request["args"]]
        _look_like_python_m_rc_cli()
        from rc_cli.main import main

        main()
        code = 0
    except SystemExit as stop:
        code = _exit_code(stop.code)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # nothing left to report it on
                stream.flush()
        os._exit(code)


def _look_like_python_m_rc_cli() -> None:
    """Usage lines name the program as ``python -m rc_cli`` would (click reads ``__main__``'s spec)."""
    main_module = sys.modules["__main__"]
    main_module.__spec__ = importlib.util.find_spec("rc_cli.__main__")
    main_module.__package__ = "rc_cli"


def _exit_code(code: object) -> int:
    """What the interpreter does with ``SystemExit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _answer(channel: BinaryIO, **fields: object) -> None:
    channel.write(json.dumps(fields).encode() + b"\n")
    channel.flush()


def _reap(children: dict[int, int], channel: BinaryIO) -> None:
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        request_id = children.pop(pid, None)
        if request_id is not None:
            _answer(channel, id=request_id, code=os.waitstatus_to_exitcode(status))


def serve() -> None:
    import rc_cli.main  # noqa: F401 - the point: imported once, before any fork

    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed by mistake goes to stderr, not into the answers
    requests = sys.stdin.buffer
    children: dict[int, int] = {}
    pending = b""
    while True:
        readable, _, _ = select.select([requests], [], [], 0.01)
        if readable:
            chunk = os.read(requests.fileno(), 65536)
            if not chunk:
                break
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    _child(request)
                children[pid] = request["id"]
                _answer(channel, id=request["id"], pid=pid)
        _reap(children, channel)
    for pid in children:
        os.kill(pid, 9)


if __name__ == "__main__":
    serve()
