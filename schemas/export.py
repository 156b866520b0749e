"""Write the JSON Schema of every message and document model into ``schemas/json/<Name>.json``.

    python -m schemas.export           # (re)write the files (``make schemas``)
    python -m schemas.export --check   # exit 1, listing what is stale, missing or extra

The files are for teams that do not use Python; the pydantic models stay the source of truth. The output
is deterministic (sorted keys, two-space indent, trailing newline) so that ``--check`` can compare text.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import BaseModel

from schemas.documents import AuditEvent, Release, ServiceRecord
from schemas.messages import (
    AdminAnswer,
    AdminRequest,
    Announcement,
    Command,
    Heartbeat,
    Progress,
    TaskReply,
)

#: Where the files live (inside the package, so that they ship with it).
JSON_DIR = Path(__file__).resolve().parent / "json"

#: Every exported model, in a stable order.
MODELS: tuple[type[BaseModel], ...] = (
    Command,
    TaskReply,
    Progress,
    Heartbeat,
    AdminRequest,
    AdminAnswer,
    Announcement,
    Release,
    AuditEvent,
    ServiceRecord,
)


def render(model: type[BaseModel]) -> str:
    """The JSON Schema text of ``model`` as it is stored."""
    schema = model.model_json_schema(mode="validation")
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def expected_files() -> dict[str, str]:
    """File name -> content of every schema file."""
    return {f"{model.__name__}.json": render(model) for model in MODELS}


def _show(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (shorter messages)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def check(directory: Path = JSON_DIR) -> list[str]:
    """What is wrong with ``directory``: one line per stale, missing or extra file (empty when up to date)."""
    expected = expected_files()
    present = {path.name for path in directory.glob("*.json")} if directory.is_dir() else set()
    problems: list[str] = []
    for name, content in expected.items():
        path = directory / name
        if name not in present:
            problems.append(f"missing: {_show(path)}")
        elif path.read_text(encoding="utf-8") != content:
            problems.append(f"stale: {_show(path)}")
    problems.extend(f"extra: {_show(directory / name)}" for name in sorted(present - expected.keys()))
    return problems


def write(directory: Path = JSON_DIR) -> list[str]:
    """Bring ``directory`` up to date; return what changed, one line per file."""
    directory.mkdir(parents=True, exist_ok=True)
    expected = expected_files()
    changes: list[str] = []
    for name, content in expected.items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != content:
            path.write_text(content, encoding="utf-8", newline="\n")
            changes.append(f"wrote: {_show(path)}")
    for path in sorted(directory.glob("*.json")):
        if path.name not in expected:
            path.unlink()
            changes.append(f"removed: {_show(path)}")
    return changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m schemas.export", description="Write or check the JSON Schema files."
    )
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if any file is out of date")
    parser.add_argument("--dir", type=Path, default=JSON_DIR, help="output directory (default: schemas/json)")
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.dir)
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            print("JSON Schemas are out of date: run `make schemas`", file=sys.stderr)
            return 1
        return 0
    for line in write(args.dir):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
