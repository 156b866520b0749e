"""Settings from the environment, credentials kept out of logs, and the rc-task command."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.broker_url import broker_user, mask_url
from task_sdk import Settings, TaskHandler
from task_sdk._settings import ENVIRONMENT
from task_sdk.cli import load_handler, main, parser
from tests.sdk.handlers import Slow


def test_settings_come_from_the_environment_and_arguments_win() -> None:
    environment = {
        "RC_AMQP_URL": "amqp://svc:secret@broker:5672/prod",
        "RC_NAMESPACE": "staging",
        "RC_TASK_CONCURRENCY": "2",
        "RC_HEARTBEAT_SECONDS": "1.5",
        "RC_TASK_STATE_DIR": "state",
    }

    settings = Settings.from_env(environment, namespace="override", concurrency=None)

    assert (settings.namespace, settings.concurrency, settings.heartbeat_seconds) == ("override", 2, 1.5)
    assert settings.state_dir == Path("state")
    assert settings.broker_user == "svc"
    assert settings.loggable()["amqp_url"] == "amqp://svc:***@broker:5672/prod"


def test_defaults_and_invalid_values() -> None:
    assert Settings.from_env({}) == Settings()
    with pytest.raises(ValueError, match="RC_TASK_CONCURRENCY='many'"):
        Settings.from_env({"RC_TASK_CONCURRENCY": "many"})
    with pytest.raises(ValueError, match="heartbeat_seconds must be positive"):
        Settings(heartbeat_seconds=0)


def test_urls_are_masked_and_the_broker_user_is_parsed() -> None:
    assert mask_url("amqp://guest:guest@127.0.0.1:5672/") == "amqp://guest:***@127.0.0.1:5672/"
    assert mask_url("amqp://127.0.0.1/") == "amqp://127.0.0.1/"
    assert broker_user("amqp://team%40x:pw@host/") == "team@x"
    assert broker_user("amqp://host/") == "guest"


def test_the_help_documents_every_setting() -> None:
    text = parser().format_help()
    for variable in ENVIRONMENT:
        assert variable in text
    for option in ("--amqp-url", "--namespace", "--concurrency", "--heartbeat-seconds", "--state-dir"):
        assert option in text


def test_the_handler_is_imported_from_module_and_class() -> None:
    assert isinstance(load_handler("tests.sdk.handlers:Slow"), Slow)


def test_a_wrong_handler_is_a_clear_error() -> None:
    with pytest.raises(SystemExit, match="not a TaskHandler"):
        main(["tests.sdk.handlers:SERVICE"])
    with pytest.raises(SystemExit, match="expected module:Class"):
        main(["tests.sdk.handlers"])


def test_the_settings_repr_never_shows_the_password() -> None:
    settings = Settings(amqp_url="amqp://svc:s3cret@broker:5672/prod")
    assert "s3cret" not in repr(settings)
    assert "amqp://svc:***@broker:5672/prod" in repr(settings)


def test_a_state_dir_given_as_a_string_becomes_a_path() -> None:
    assert Settings(state_dir="state").state_dir == Path("state")  # type: ignore[arg-type]
    assert Settings.from_env({}, state_dir="state").state_dir == Path("state")


def test_every_option_reaches_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in [*ENVIRONMENT, "RC_LOG_LEVEL"]:
        monkeypatch.delenv(variable, raising=False)
    calls: list[tuple[TaskHandler, Settings, str]] = []
    monkeypatch.setattr(
        "task_sdk.cli.run",
        lambda handler, settings, *, log_level: calls.append((handler, settings, log_level)),
    )

    options = ["--amqp-url", "amqp://svc:pw@broker/", "--namespace", "staging", "--concurrency", "3"]
    options += ["--heartbeat-seconds", "0.5", "--state-dir", "state", "--shutdown-timeout", "7"]
    options += ["--publish-timeout", "4", "--reconnect-seconds", "0.5", "--log-level", "debug"]
    main(["tests.sdk.handlers:Slow", *options])

    handler, settings, log_level = calls[0]
    assert isinstance(handler, Slow)
    assert settings == Settings(
        amqp_url="amqp://svc:pw@broker/",
        namespace="staging",
        concurrency=3,
        heartbeat_seconds=0.5,
        state_dir=Path("state"),
        shutdown_timeout=7.0,
        publish_timeout=4.0,
        reconnect_seconds=0.5,
    )
    assert isinstance(settings.state_dir, Path)
    assert log_level == "DEBUG"

    monkeypatch.setenv("RC_LOG_LEVEL", "warning")
    main(["tests.sdk.handlers:Slow"])
    assert calls[1][2] == "WARNING"


def test_a_wrong_log_level_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("task_sdk.cli.run", lambda *_, **__: pytest.fail("the service was started"))
    with pytest.raises(SystemExit):
        main(["tests.sdk.handlers:Slow", "--log-level", "chatty"])
    assert "'chatty' is not one of DEBUG, INFO, WARNING, ERROR" in capsys.readouterr().err
