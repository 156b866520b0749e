"""What a task team imports: ``from task_sdk import ...``, and the README's example, run as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import task_sdk
from schemas.messages import ReleaseInfo
from task_sdk import TaskHandler
from task_sdk.testing import Harness

README = Path(__file__).resolve().parents[2] / "README.md"

#: What a team writing a service needs, besides ``task_sdk.testing``.
NEEDED = {
    "TaskHandler",
    "Reject",
    "run",
    "serve",
    "Settings",
    "ReleaseInfo",
    "ProgressReporter",
    "StepCancelled",
    "HealthStatus",
}


def test_the_package_exports_what_a_task_team_needs() -> None:
    assert set(task_sdk.__all__) >= NEEDED
    assert len(task_sdk.__all__) == len(set(task_sdk.__all__))
    assert [name for name in task_sdk.__all__ if not hasattr(task_sdk, name)] == []
    assert task_sdk.ReleaseInfo is ReleaseInfo  # the type steps receive, importable from the SDK


def test_a_star_import_gives_exactly_the_public_names() -> None:
    namespace: dict[str, Any] = {}
    exec("from task_sdk import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(task_sdk.__all__)


def readme_blocks(section: str) -> list[str]:
    """The ```python blocks of the README section titled ``section``."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end >= 0 else len(text)]
    return re.findall(r"```python\n(.*?)```", body, flags=re.DOTALL)


async def test_the_readme_task_service_runs_as_written() -> None:
    service, *_, test = readme_blocks("Write a task service")
    namespace: dict[str, Any] = {"__name__": "readme_example"}  # not __main__: run() is not called
    exec(compile(service, f"{README.name} (task service)", "exec"), namespace)
    handler_class = namespace["SearchIndex"]
    assert issubclass(handler_class, TaskHandler)

    exec(compile(test, f"{README.name} (test)", "exec"), namespace)
    await namespace["test_search_index"]()  # the README's own test: Harness, no broker

    result = await Harness(handler_class()).run_release(studies=["SD_1", "SD_2"])
    assert [p.note for p in result.progress][-2:] == ["indexed SD_1", "indexed SD_2"]
