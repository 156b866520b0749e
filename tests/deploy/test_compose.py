"""The docker compose file, the Dockerfile and the broker config hold together (structure only: no engine)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TASK_SERVICES = {
    "portal": "examples.portal:Portal",
    "search-index": "examples.search_index:SearchIndex",
    "file-service": "examples.file_service:FileService",
}
APP_SERVICES = ("coordinator", "dashboard", *TASK_SERVICES)
SECRET = re.compile(r"\$\{(RC_PASSWORD_[A-Z_]+|RC_MONGODB_PASSWORD):\?[^}]*\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    """The default deployment (the `cluster` profile has tests of its own: test_compose_cluster.py)."""
    found = compose["services"]
    assert isinstance(found, dict)
    return {name: service for name, service in found.items() if "cluster" not in service.get("profiles", ())}


def _env(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    assert isinstance(environment, dict)
    return {str(k): str(v) for k, v in environment.items()}


def test_every_service_is_there(services: dict[str, Any]) -> None:
    assert set(services) == {"broker-definitions", "rabbitmq", "mongodb", *APP_SERVICES}
    assert services["rabbitmq"]["image"] == "rabbitmq:3.13-management"
    assert services["mongodb"]["image"] == "mongo:7"
    images = {services[name]["image"] for name in APP_SERVICES}
    assert len(images) == 1, "coordinator and services share one image"
    for name in (*APP_SERVICES, "broker-definitions"):
        assert services[name]["build"] == "."


def test_commands(services: dict[str, Any]) -> None:
    assert services["coordinator"]["command"] == ["rc-coordinator"]
    assert services["dashboard"]["command"] == ["rc-dashboard"]
    for name, handler in TASK_SERVICES.items():
        assert services[name]["command"] == ["rc-task", handler]


def test_broker_loads_the_definitions(services: dict[str, Any]) -> None:
    """Generated at deploy time by rc-admin-setup (from .env), into a volume the broker loads at boot."""
    volumes = services["rabbitmq"]["volumes"]
    assert "broker-definitions:/etc/rabbitmq/definitions:ro" in volumes
    assert "./deploy/rabbitmq/rabbitmq.conf:/etc/rabbitmq/rabbitmq.conf:ro" in volumes
    config = (ROOT / "deploy/rabbitmq/rabbitmq.conf").read_text(encoding="utf-8")
    assert re.search(
        r"^load_definitions\s*=\s*/etc/rabbitmq/definitions/definitions\.json$", config, re.MULTILINE
    )
    setup = services["broker-definitions"]
    assert setup["command"][0] == "rc-admin-setup"
    assert setup["command"][-2:] == ["--output", "/var/lib/rc/definitions.json"]
    assert "broker-definitions:/var/lib/rc" in setup["volumes"]
    for name in ("rabbitmq", "mongodb"):
        assert services[name]["depends_on"]["broker-definitions"] == {
            "condition": "service_completed_successfully"
        }
    assert (ROOT / "deploy/rabbitmq/definitions.json").is_file()


def test_healthchecks_and_restart(services: dict[str, Any]) -> None:
    assert services["rabbitmq"]["healthcheck"]["test"] == ["CMD", "rabbitmq-diagnostics", "-q", "ping"]
    mongo_check = services["mongodb"]["healthcheck"]["test"]
    assert mongo_check[:2] == ["CMD", "mongosh"]
    assert any("ping" in part for part in mongo_check)
    for name, service in services.items():
        if name == "broker-definitions":  # runs once per `up`
            assert service["restart"] == "no"
            continue
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"], name
        assert service["healthcheck"]["interval"], name


def test_health_means_doing_the_job(services: dict[str, Any]) -> None:
    """The coordinator's metrics answer; a task service's queue has a consumer (deploy.healthcheck)."""
    check = ["CMD", "python", "-m", "deploy.healthcheck"]
    assert services["coordinator"]["healthcheck"]["test"] == [*check, "http", "http://127.0.0.1:9464/metrics"]
    assert services["dashboard"]["healthcheck"]["test"] == [*check, "http", "http://127.0.0.1:8780/healthz"]
    for name in TASK_SERVICES:
        assert services[name]["healthcheck"]["test"] == [*check, "task", name]
        assert _env(services[name])["RC_TASK_STATE_DIR"] == "/var/lib/rc"
        # the check reads this instance's own health file: busy (consuming nothing) is still healthy
        assert _env(services[name])["RC_TASK_HEALTH_FILE"] == "/tmp/rc-task-health"
        assert f"{name}-state:/var/lib/rc" in services[name]["volumes"]


def test_dependencies_wait_for_health(services: dict[str, Any]) -> None:
    assert services["coordinator"]["depends_on"] == {
        "rabbitmq": {"condition": "service_healthy"},
        "mongodb": {"condition": "service_healthy"},
    }
    for name in TASK_SERVICES:
        assert services[name]["depends_on"]["rabbitmq"] == {"condition": "service_healthy"}
        assert "mongodb" not in services[name]["depends_on"], "task services never touch MongoDB"


def test_each_process_connects_as_its_own_user(services: dict[str, Any]) -> None:
    users = {"coordinator": "rc-coordinator", "dashboard": "rc-operator", **{n: n for n in TASK_SERVICES}}
    for name, user in users.items():
        env = _env(services[name])
        assert env["RC_NAMESPACE"] == "rc"
        url = env["RC_AMQP_URL"]
        assert url.startswith(f"amqp://{user}:${{RC_PASSWORD_"), url
        assert url.endswith("@rabbitmq:5672/rc")
        assert SECRET.search(url), "the password comes from the environment and is required"
    coordinator = _env(services["coordinator"])
    assert coordinator["RC_MONGODB_URL"].startswith("mongodb://")
    assert "@mongodb:27017/" in coordinator["RC_MONGODB_URL"]
    for name in (*TASK_SERVICES, "dashboard"):
        assert "RC_MONGODB_URL" not in _env(services[name])


def test_ports(services: dict[str, Any]) -> None:
    assert services["coordinator"]["ports"] == ["127.0.0.1:9464:9464"]  # the host's loopback only
    assert any(port.endswith(":5672:5672") or port == "5672:5672" for port in services["rabbitmq"]["ports"])
    for name in TASK_SERVICES:
        assert "ports" not in services[name]
    assert services["dashboard"]["ports"] == ["127.0.0.1:8780:8780"]


def test_the_dashboard(services: dict[str, Any]) -> None:
    """It waits for the broker, talks to the coordinator only over it, is read-only without a token."""
    dashboard = services["dashboard"]
    assert dashboard["depends_on"]["rabbitmq"] == {"condition": "service_healthy"}
    assert "mongodb" not in dashboard["depends_on"]
    env = _env(dashboard)
    assert env["RC_DASHBOARD_LISTEN"] == "0.0.0.0:8780"
    assert env["RC_DASHBOARD_TOKEN"] == "${RC_DASHBOARD_TOKEN:-}"
    assert env["RC_DASHBOARD_PUBLIC_URL"] == "${RC_DASHBOARD_PUBLIC_URL:-}"


def test_no_credentials_in_clear() -> None:
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    assert "change-me" not in text
    assert not re.search(r"(PASSWORD|_URL)\s*[:=]\s*[^$\s{]*:[^$@\s]+@", text), "a literal password"
    for value in re.findall(r"amqp://[^\s]+", text):
        assert "${RC_PASSWORD_" in value
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    for variable in set(re.findall(r"\$\{([A-Z_]+):\?", text)):
        assert re.search(rf"^{variable}=", example, re.MULTILINE), f"{variable} missing from .env.example"


def test_dockerfile() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    instructions = [
        line.strip() for line in dockerfile.splitlines() if line.strip() and not line.startswith("#")
    ]
    froms = [line for line in instructions if line.upper().startswith("FROM ")]
    assert all(line.split()[1] == "python:3.13-slim" for line in froms)
    assert any('".[all]"' in line for line in instructions if "pip install" in line), (
        "the image has every part: coordinator, rc, bridge and dashboard (the extras of the light SDK)"
    )
    users = [line.split(None, 1)[1] for line in instructions if line.upper().startswith("USER ")]
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert any(line.upper().startswith("CMD ") for line in instructions)
    assert "9464" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for entry in (".env", ".venv", ".git", "deploy/secrets"):
        assert entry in ignored
