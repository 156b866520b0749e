"""The JSON Schema files in ``schemas/json`` match the pydantic models."""

from __future__ import annotations

import json
from pathlib import Path

from schemas import export


def test_schema_files_are_up_to_date() -> None:
    problems = export.check()
    assert not problems, "JSON Schemas are out of date; run `make schemas`:\n" + "\n".join(problems)


def test_check_reports_stale_missing_and_extra(tmp_path: Path) -> None:
    assert export.write(tmp_path)
    assert export.check(tmp_path) == []
    assert export.write(tmp_path) == []  # deterministic: a second run changes nothing

    (tmp_path / "Command.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "Heartbeat.json").unlink()
    (tmp_path / "Obsolete.json").write_text("{}\n", encoding="utf-8")
    problems = export.check(tmp_path)
    assert any(line.startswith("stale:") and "Command.json" in line for line in problems)
    assert any(line.startswith("missing:") and "Heartbeat.json" in line for line in problems)
    assert any(line.startswith("extra:") and "Obsolete.json" in line for line in problems)
    assert export.main(["--check", "--dir", str(tmp_path)]) == 1

    export.write(tmp_path)
    assert export.main(["--check", "--dir", str(tmp_path)]) == 0
    assert not (tmp_path / "Obsolete.json").exists()


def test_every_model_has_a_file_that_is_a_json_schema() -> None:
    for model in export.MODELS:
        text = (export.JSON_DIR / f"{model.__name__}.json").read_text(encoding="utf-8")
        assert text.endswith("}\n")
        schema = json.loads(text)
        assert schema["title"] == model.__name__
        assert schema["type"] == "object"
