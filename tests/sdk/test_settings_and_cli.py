"""Settings from the environment, credentials kept out of logs, and the rc-task command."""

from __future__ import annotations

from pathlib import Path

import pytest

from task_sdk import Settings
from task_sdk._settings import ENVIRONMENT, broker_user, mask_url
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
    for option in ("--amqp-url", "--namespace", "--concurrency", "--heartbeat-seconds"):
        assert option in text


def test_the_handler_is_imported_from_module_and_class() -> None:
    assert isinstance(load_handler("tests.sdk.handlers:Slow"), Slow)


def test_a_wrong_handler_is_a_clear_error() -> None:
    with pytest.raises(SystemExit, match="not a TaskHandler"):
        main(["tests.sdk.handlers:SERVICE"])
    with pytest.raises(SystemExit, match="expected module:Class"):
        main(["tests.sdk.handlers"])
