"""Bad input is refused before anything is sent (exit 2, one line), checked in-process with the Typer app.

The broker URL points at a closed port: a command that tried to connect would exit 3, not 2.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rc_cli.main import EXIT_BAD_INPUT, app

UNREACHABLE = {"RC_AMQP_URL": "amqp://ops:secret@127.0.0.1:1/", "RC_NAMESPACE": "rc", "RC_TIMEOUT": "1"}


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env=UNREACHABLE)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("release", "show", "re_12345678"), "invalid release id 're_12345678'"),
        (("release", "hold", "RE_123"), "invalid release id 'RE_123'"),
        (("release", "unhold", "RE_1234567890"), "invalid release id 'RE_1234567890'"),
        (("release", "publish", "RE_abcdefgh"), "invalid release id 'RE_abcdefgh'"),
        (("release", "watch", "XX_12345678"), "invalid release id 'XX_12345678'"),
        (("release", "cancel", "RE_lower123", "--reason", "x"), "invalid release id"),
        (("release", "cancel", "RE_12345678", "--reason", "  "), "--reason must not be empty"),
        (("service", "require", "Bad_Name"), "invalid service name 'Bad_Name'"),
        (("service", "unrequire", "9lives"), "invalid service name '9lives'"),
        (("release", "create", "--name", "x", "--study", "bad study!"), "invalid input: --study #1"),
        (("release", "create", "--name", "x", "--study", "S", "--study", "?"), "invalid input: --study #2"),
        (("release", "create", "--name", "  ", "--study", "SD_1"), "invalid input: --name"),
        (("release", "create", "--name", "x", "--study", "S", "--tag", ""), "invalid input: --tag #1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    code, stdout, stderr = invoke(*args)
    assert code == EXIT_BAD_INPUT
    assert stdout == ""
    assert stderr.startswith("rc: ")
    assert message in stderr
    assert stderr.count("\n") == 1

    code, stdout, stderr = invoke(*args, "--json")
    assert code == EXIT_BAD_INPUT
    assert message in json.loads(stdout)["error"]


@pytest.mark.parametrize(
    "args",
    [
        ("release", "list", "--limit", "0"),
        ("release", "list", "--limit", "501"),
        ("release", "list", "--state", "nonsense"),
        ("release", "create", "--name", "no studies"),
        ("release", "create", "--study", "SD_1"),
        ("release", "cancel", "RE_12345678"),
        ("release", "show"),
        ("release", "frobnicate"),
        ("--timeout", "0", "service", "list"),
        ("service", "list", "--timeout", "-1"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    code, _, stderr = invoke(*args)
    assert code == 2, stderr
    assert "secret" not in stderr


def test_help_never_shows_a_password() -> None:
    for args in (("--help",), ("release", "list", "--help"), ("service", "list", "--help")):
        result = CliRunner().invoke(app, list(args), env=UNREACHABLE)
        assert result.exit_code == 0
        assert "secret" not in result.stdout
        assert "guest:guest" not in result.stdout
