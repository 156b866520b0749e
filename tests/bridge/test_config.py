"""Settings by option, environment and file; the command line's help."""

from __future__ import annotations

from pathlib import Path

import pytest

from rc_http_bridge.__main__ import configuration, main, parser
from rc_http_bridge.config import ENVIRONMENT, BridgeConfig, default_public_url
from schemas.listen import split_listen
from task_sdk._settings import ENVIRONMENT as SDK_ENVIRONMENT

REQUIRED = {"RC_BRIDGE_SERVICE": "portal", "RC_BRIDGE_URL": "http://portal:8080/"}


def test_settings_come_from_the_environment() -> None:
    config = BridgeConfig.from_env(
        REQUIRED
        | {
            "RC_BRIDGE_POLL_SECONDS": "2.5",
            "RC_BRIDGE_LISTEN": "127.0.0.1:9000",
            "RC_BRIDGE_PUBLIC_URL": "https://bridge.example.org/portal/",
            "RC_BRIDGE_OUTBOUND_TOKEN": "out",
            "RC_BRIDGE_CALLBACK_TOKEN": "in",
            "RC_BRIDGE_HTTP_TIMEOUT": "3",
            "RC_BRIDGE_STALL_SECONDS": "0",
        }
    )
    assert config == BridgeConfig(
        service="portal",
        url="http://portal:8080",
        public_url="https://bridge.example.org/portal",
        listen="127.0.0.1:9000",
        poll_seconds=2.5,
        http_timeout=3,
        stall_seconds=0,
        token="out",
        callback_token="in",
    )
    assert config.loggable()["token"] == "***"


def test_options_win_over_the_environment_and_tokens_come_from_files(tmp_path: Path) -> None:
    out, into = tmp_path / "out", tmp_path / "in"
    out.write_text("from-file\n")
    into.write_text("  callback-file ")
    environ = REQUIRED | {"RC_BRIDGE_OUTBOUND_TOKEN": "from-env", "RC_BRIDGE_CALLBACK_TOKEN": "env-cb"}
    config = BridgeConfig.from_env(
        environ, service="search-index", token_file=str(out), callback_token_file=str(into), poll_seconds=None
    )
    assert (config.service, config.token, config.callback_token) == (
        "search-index",
        "from-file",
        "callback-file",
    )
    assert config.poll_seconds == 10
    assert BridgeConfig.from_env(environ | {"RC_BRIDGE_TOKEN_FILE": str(out)}).token == "from-env"
    assert BridgeConfig.from_env(REQUIRED | {"RC_BRIDGE_TOKEN_FILE": str(out)}).token == "from-file"


@pytest.mark.parametrize(
    ("environ", "error"),
    [
        ({"RC_BRIDGE_URL": "http://x"}, "--service (or RC_BRIDGE_SERVICE) is required"),
        ({"RC_BRIDGE_SERVICE": "portal"}, "--url (or RC_BRIDGE_URL) is required"),
        (REQUIRED | {"RC_BRIDGE_URL": "portal:8080"}, "url must be an http:// or https:// URL"),
        (REQUIRED | {"RC_BRIDGE_SERVICE": "Portal!"}, "service"),
        (REQUIRED | {"RC_BRIDGE_LISTEN": "8080"}, "listen must be HOST:PORT"),
        (REQUIRED | {"RC_BRIDGE_POLL_SECONDS": "0"}, "poll_seconds must be positive"),
        (REQUIRED | {"RC_BRIDGE_POLL_SECONDS": "soon"}, "RC_BRIDGE_POLL_SECONDS='soon' is not a valid value"),
        (REQUIRED | {"RC_BRIDGE_TOKEN_FILE": "/nonexistent/token"}, "cannot read the token file"),
    ],
)
def test_bad_settings_are_refused_saying_why(environ: dict[str, str], error: str) -> None:
    with pytest.raises(ValueError, match=error.replace("(", r"\(").replace(")", r"\)")):
        BridgeConfig.from_env(environ)


def test_the_command_line_reads_options_and_sdk_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in [*ENVIRONMENT, *SDK_ENVIRONMENT]:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("RC_BRIDGE_CALLBACK_TOKEN", "in")
    arguments = parser().parse_args(
        ["--service", "portal", "--url", "http://portal", "--listen", "[::]:0", "--namespace", "rc-test"]
    )
    config, settings = configuration(arguments)
    assert config.listen_address == ("::", 0)
    assert config.callback_token == "in"
    assert settings.namespace == "rc-test"


def test_a_bad_setting_exits_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ENVIRONMENT:
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(SystemExit, match="rc-http-bridge: --url"):
        main(["--service", "portal"])


def test_help_documents_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for variable in [*ENVIRONMENT, *SDK_ENVIRONMENT]:
        assert variable in text
    for option in ("--service", "--url", "--public-url", "--listen", "--poll-seconds", "--token-file"):
        assert option in text
    assert "PATCH /tasks/{task_id}" in text


def test_listen_and_public_url() -> None:
    assert split_listen("0.0.0.0:8780") == ("0.0.0.0", 8780)
    assert split_listen("[::1]:80") == ("::1", 80)
    assert default_public_url("127.0.0.1", 81) == "http://127.0.0.1:81"
    assert default_public_url("::1", 81) == "http://[::1]:81"
    assert not default_public_url("0.0.0.0", 81).startswith("http://0.0.0.0")
