"""``deploy.setup`` without a broker: hashes, password sources, the document, the checked-in file."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import stat
from pathlib import Path

import pytest

from deploy.definitions import (
    HASHING_ALGORITHM,
    Installation,
    build_definitions,
    check_password,
    hash_password,
    regex_escape,
)
from deploy.passwords import password_env, resolve_passwords, write_env_file
from deploy.setup import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_SERVICES = ("portal", "search-index", "file-service")


def test_hash_is_rabbitmq_sha256_format() -> None:
    salt = bytes.fromhex("908d c60a".replace(" ", ""))
    digest = hash_password("test12", salt)
    raw = base64.b64decode(digest)
    assert raw[:4] == salt
    assert raw[4:] == hashlib.sha256(salt + b"test12").digest()
    assert check_password("test12", digest)
    assert not check_password("test13", digest)
    assert hash_password("x") != hash_password("x"), "salts are random"


def test_permission_regexes() -> None:
    setup = Installation(services=("search-index",), namespace="rc", vhost="rc")
    service = setup.service_permission("search-index")
    control = r"rc\.control\.search-index\..+"  # its instances' control queues (issue 19)
    assert service.configure == rf"^{control}$"  # not its task queue: rc-admin-setup makes it
    assert service.write == rf"^({control}|rc\.replies)$"  # not its queue (no binding to it), not rc.dlx
    assert service.read == rf"^(rc\.task\.search-index|{control}|rc\.commands)$"
    topics = {p.exchange: p for p in setup.service_topic_permissions("search-index")}
    assert topics["rc.replies"].write == r"^reply\.search-index\."
    assert topics["rc.commands"].read == r"^task\.search-index\."
    coordinator = setup.coordinator_permission()
    assert coordinator.write == r"^(rc\..*|amq\.default)$"
    operator = setup.operator_permission()
    assert re.match(operator.read, "rc.events")
    assert re.match(operator.read, "amq.gen-AbC_1")
    assert not re.match(operator.read, "rc.coordinator.replies")
    assert not re.match(operator.write, "rc.replies")
    assert re.match(operator.write, "rc.admin")
    # Python's re agrees with PCRE on these simple patterns: check that names do not leak into each other.
    assert not re.match(service.read, "rc.task.search-index-2")
    for granted in (service.configure, service.write, service.read):
        assert re.match(granted, "rc.control.search-index.vm-1234-abcdef")
        assert re.match(granted, "rc.control.search-index.vm-1234-abcdef.2")  # declared after a reconnection
        for other in ("rc.control.search-index-2.vm-1", "rc.control.portal.vm-1", "rc.control.search-index."):
            assert not re.match(granted, other)
    assert not re.match(service.configure, "rc.task.search-index")
    assert not re.match(topics["rc.replies"].write, "reply.search-index-2.reply")
    assert regex_escape("a.b-c*") == r"a\.b-c\*"


def test_definitions_document() -> None:
    setup = Installation(services=EXAMPLE_SERVICES, admin_user="rc-admin", listeners=("dashboard",))
    passwords = {user: f"pw-{user}" for user in setup.users()}
    definitions = build_definitions(setup, passwords)
    users = {u["name"]: u for u in definitions["users"]}
    assert set(users) == {*EXAMPLE_SERVICES, "rc-coordinator", "rc-operator", "rc-admin", "dashboard"}
    for name, user in users.items():
        assert user["hashing_algorithm"] == HASHING_ALGORITHM
        assert check_password(f"pw-{name}", user["password_hash"])
        assert "password" not in user
    assert users["rc-admin"]["tags"] == ["administrator"]
    assert users["portal"]["tags"] == []
    assert "pw-" not in json.dumps(definitions)
    assert {p["user"] for p in definitions["permissions"]} == set(users)
    assert {(p["user"], p["exchange"]) for p in definitions["topic_permissions"]} == {
        (s, x) for s in EXAMPLE_SERVICES for x in ("rc.replies", "rc.commands")
    }
    assert {e["name"]: e["type"] for e in definitions["exchanges"]} == setup.topology.exchanges()
    queues = {q["name"]: q["arguments"] for q in definitions["queues"]}
    assert queues["rc.coordinator.replies"]["x-single-active-consumer"] is True
    assert queues["rc.task.search-index"] == setup.topology.task_queue_arguments()
    bindings = {(b["source"], b["destination"], b["routing_key"]) for b in definitions["bindings"]}
    assert ("rc.commands", "rc.task.portal", "task.portal.*") in bindings
    assert ("rc.admin", "rc.coordinator.admin", "admin") in bindings
    without = build_definitions(setup, passwords, topology=False)
    assert without["exchanges"] == without["queues"] == without["bindings"] == []


def test_invalid_installations() -> None:
    with pytest.raises(ValueError, match="invalid service name"):
        Installation(services=("Bad_Name",))
    with pytest.raises(ValueError, match="used twice"):
        Installation(services=("rc-operator",))
    setup = Installation(services=("portal",))
    with pytest.raises(ValueError, match="no password for: rc-operator"):
        build_definitions(setup, {"portal": "a", "rc-coordinator": "b"})


def test_password_sources(tmp_path: Path) -> None:
    users = ["portal", "search-index", "rc-coordinator", "rc-operator"]
    (tmp_path / "portal.txt").write_text("from-file\n")
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "rc-operator").write_text("from-secrets-dir\n")
    found = resolve_passwords(
        users,
        password_files={"portal": tmp_path / "portal.txt"},
        environ={password_env("search-index"): "from-env", "RC_PASSWORD_PORTAL": "ignored"},
        secrets_dir=secrets_dir,
        generate=True,
    )
    assert found["portal"] == "from-file"
    assert found["search-index"] == "from-env"
    assert found["rc-operator"] == "from-secrets-dir"
    generated = secrets_dir / "rc-coordinator"
    assert generated.read_text().strip() == found["rc-coordinator"]
    assert len(found["rc-coordinator"]) >= 24
    assert stat.S_IMODE(generated.stat().st_mode) == 0o600
    # A second run reuses what was generated.
    again = resolve_passwords(
        users,
        password_files={"portal": tmp_path / "portal.txt"},
        environ={password_env("search-index"): "x"},
        secrets_dir=secrets_dir,
    )
    assert again["rc-coordinator"] == found["rc-coordinator"]
    with pytest.raises(ValueError, match="RC_PASSWORD_SEARCH_INDEX"):
        resolve_passwords(["search-index"], environ={})
    assert password_env("rc-coordinator") == "RC_PASSWORD_RC_COORDINATOR"


def test_command_line_never_prints_passwords(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RC_PASSWORD_PORTAL", "portal-secret-1")
    services_file = tmp_path / "services.txt"
    services_file.write_text("# the services\nsearch-index\n\nportal  # duplicate of the argument\n")
    output = tmp_path / "out" / "definitions.json"
    env_file = tmp_path / ".env"
    argv = ["portal", "--services-file", str(services_file), "--namespace", "ns", "--vhost", "vh"]
    argv += ["--secrets-dir", str(tmp_path / "secrets"), "--generate", "--output", str(output)]
    assert main([*argv, "--env-file", str(env_file)]) == 0
    printed = capsys.readouterr()
    definitions = json.loads(output.read_text())
    assert [u["name"] for u in definitions["users"]] == [
        "portal",
        "search-index",
        "rc-coordinator",
        "rc-operator",
    ]
    assert definitions["vhosts"] == [{"name": "vh"}]
    secrets = [(tmp_path / "secrets" / user).read_text().strip() for user in ("search-index", "rc-operator")]
    for secret in [*secrets, "portal-secret-1"]:
        assert secret not in printed.out + printed.err
        assert secret not in output.read_text()
        assert secret in env_file.read_text()
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    monkeypatch.delenv("RC_PASSWORD_PORTAL")
    assert main(["portal", "--output", str(output)]) == 2
    assert "RC_PASSWORD_PORTAL" in capsys.readouterr().err


def test_the_env_file_keeps_its_other_lines(tmp_path: Path) -> None:
    """``--env-file .env`` sets the password lines and keeps the rest of the file (compose reads it all)."""
    env_file = tmp_path / ".env"
    env_file.write_text("# compose settings\nRC_MONGODB_USER=rc\nRC_PASSWORD_PORTAL=old\nRC_NAMESPACE=rc\n")
    write_env_file(env_file, {"portal": "new-portal", "rc-operator": "new-operator"})
    assert env_file.read_text().splitlines() == [
        "# compose settings",
        "RC_MONGODB_USER=rc",
        "RC_PASSWORD_PORTAL=new-portal",
        "RC_NAMESPACE=rc",
        "RC_PASSWORD_RC_OPERATOR=new-operator",
    ]
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [".env"]


def test_checked_in_definitions_are_current() -> None:
    """The checked-in file is what the generator makes for the examples, without any password: users get
    theirs at deploy time (issue 21: it used to hold hashes of the public .env.example passwords)."""
    checked_in = json.loads((ROOT / "deploy/rabbitmq/definitions.json").read_text(encoding="utf-8"))
    setup = Installation(services=EXAMPLE_SERVICES, namespace="rc", vhost="rc", admin_user="rc-admin")
    expected = build_definitions(setup, None)
    assert all(user["password_hash"] == "" for user in checked_in["users"])
    assert checked_in == expected, (
        "regenerate deploy/rabbitmq/definitions.json: rc-admin-setup portal search-index file-service "
        "--namespace rc --vhost rc --admin-user rc-admin --without-passwords --output "
        "deploy/rabbitmq/definitions.json"
    )
