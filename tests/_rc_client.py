"""Runs ``rc`` commands for the tests, each in a process of its own: forked from a pre-loaded ``rc``
(``tests/_rc_fork.py``), or, with ``RC_TESTS_FRESH_RC=1`` or ``fresh=True``, a new interpreter."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


@dataclass
class Finished:
    code: int
    stdout: str
    stderr: str


async def run_fresh(args: tuple[str, ...], env: dict[str, str], limit: float) -> Finished:
    """``python -m rc_cli ARGS`` in a new interpreter."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rc_cli",
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), limit)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Finished(process.returncode, out.decode(), err.decode())


@dataclass
class _Forker:
    """The client of one ``tests._rc_fork`` server, bound to the event loop that started it."""

    process: asyncio.subprocess.Process
    folder: Path
    ids: itertools.count[int] = field(default_factory=itertools.count)
    started: dict[int, asyncio.Future[int]] = field(default_factory=dict)
    exited: dict[int, asyncio.Future[int]] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None

    async def run(self, args: tuple[str, ...], env: dict[str, str], limit: float) -> Finished:
        request_id = next(self.ids)
        out, err = self.folder / f"{request_id}.out", self.folder / f"{request_id}.err"
        loop = asyncio.get_running_loop()
        self.started[request_id], self.exited[request_id] = loop.create_future(), loop.create_future()
        request = {"id": request_id, "args": args, "env": env, "stdout": str(out), "stderr": str(err)}
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        await self.process.stdin.drain()
        try:
            pid = await self.started[request_id]
        finally:
            self.started.pop(request_id, None)
        try:
            code = await asyncio.wait_for(asyncio.shield(self.exited[request_id]), limit)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            await self.exited[request_id]
            raise
        finally:
            self.exited.pop(request_id, None)
        finished = Finished(code, out.read_text(), err.read_text())
        out.unlink()
        err.unlink()
        return finished

    async def read_answers(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            answer = json.loads(line)
            waiting = self.started if "pid" in answer else self.exited
            future = waiting.get(answer["id"])
            if future is not None and not future.done():
                future.set_result(answer["pid"] if "pid" in answer else answer["code"])
        for future in (*self.started.values(), *self.exited.values()):
            if not future.done():
                future.set_exception(RuntimeError("the rc fork server stopped"))


_forkers: dict[asyncio.AbstractEventLoop, _Forker] = {}


async def _forker() -> _Forker:
    loop = asyncio.get_running_loop()
    forker = _forkers.get(loop)
    if forker is None or forker.process.returncode is not None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RC_")}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests._rc_fork",
            env=env,
            cwd=REPOSITORY,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        forker = _Forker(process, Path(tempfile.mkdtemp(prefix="rc-fork-")))
        forker.reader = loop.create_task(forker.read_answers())
        _forkers[loop] = forker
    return forker


async def run(args: tuple[str, ...], env: dict[str, str], limit: float, *, fresh: bool = False) -> Finished:
    if fresh or os.environ.get("RC_TESTS_FRESH_RC") == "1":
        return await run_fresh(args, env, limit)
    return await (await _forker()).run(args, env, limit)


async def close() -> None:
    """Stop this event loop's fork server (its children are killed if any are left)."""
    forker = _forkers.pop(asyncio.get_running_loop(), None)
    if forker is None:
        return
    assert forker.process.stdin is not None
    forker.process.stdin.close()
    await forker.process.wait()
    if forker.reader is not None:
        await forker.reader
    for leftover in forker.folder.iterdir():
        leftover.unlink()
    forker.folder.rmdir()
