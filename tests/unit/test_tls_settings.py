"""TLS to the broker: ``amqps://`` URLs and a CA bundle become the SSL options the connection is opened with.

There is no TLS broker here, so each test catches the URL a component hands to aio-pika (or uses the real
aio-pika where it fails before the network) and asks aiormq, the library under aio-pika, what it makes of
it: the transport, the CA file and the ``ssl.SSLContext`` it would open the socket with.

Where it stands (issue 8 asks for "TLS settings (amqps://, CA file) accepted and documented"):

- coordinator: ``RC_AMQP_URL=amqps://...`` and ``RC_AMQP_CA_FILE``; a missing or unreadable bundle stops it
  at start-up with the variable's name.
- rc: ``amqps://`` works; a CA bundle only as ``?cafile=`` in the URL (no setting of its own).
- task_sdk (and rc-http-bridge, which uses its settings): ``amqps://`` works; a CA bundle only as ``?cafile=``
  in the URL; ``RC_AMQP_CA_FILE`` is ignored (the strict xfail below), and a missing bundle is only noticed
  at connection time, retried forever.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.parse
from pathlib import Path
from typing import Any, cast

import aio_pika
import aiormq
import pytest
from aiormq.connection import SSLContextProvider

from coordinator import __main__ as coordinator_main
from coordinator.__main__ import broker_of
from coordinator.service import Coordinator
from coordinator.settings import Settings
from coordinator.store import Store
from rc_cli.client import AdminClient, BrokerUnreachable
from rc_http_bridge.__main__ import configuration
from rc_http_bridge.__main__ import parser as bridge_parser
from schemas.broker_url import mask_url
from task_sdk._amqp import AmqpTransport
from task_sdk._settings import Settings as SdkSettings

#: A self-signed CA certificate (EC P-256, valid until 2126), only ever loaded as a trust anchor.
CA_PEM = """\
-----BEGIN CERTIFICATE-----
MIIBojCCAUmgAwIBAgIUWZWOsrAZMtTMrZWEbU4tkrMiurEwCgYIKoZIzj0EAwIw
JjEkMCIGA1UEAwwbUmVsZWFzZSBDb29yZGluYXRvciB0ZXN0IENBMCAXDTI2MTEy
MzEzMDAyNloYDzIxMjYxMDMwMTMwMDI2WjAmMSQwIgYDVQQDDBtSZWxlYXNlIENv
b3JkaW5hdG9yIHRlc3QgQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQjTFG+
YMRT0TcJNNaHbpIaWxk/epUJXET1cqR4wp9n7XVlfBt+OJtxAlD93VbgJChfPz3o
9FG54at9HvV1FSMDo1MwUTAdBgNVHQ4EFgQU1fF4rDulXrfJr0KcOxlxKPh3Qiww
HwYDVR0jBBgwFoAU1fF4rDulXrfJr0KcOxlxKPh3QiwwDwYDVR0TAQH/BAUwAwEB
/zAKBggqhkjOPQQDAgNHADBEAiByvFy+QFV8oYlgNny/zhevZ0udmtGN/yqBYpMb
0Y4snAIgeoUg+uEhMd/1GnQWRasZMxMpLlKFHl8l8h5Rhi0u2WE=
-----END CERTIFICATE-----
"""
CA_NAME = "Release Coordinator test CA"
BROKER = "amqps://someone:s3cret@broker.example/rc"


class Captured(Exception):
    """Raised by a stand-in for aio-pika's connect once it has recorded its arguments."""


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    """The CA bundle, in a directory whose name a URL query would mangle if it were not quoted."""
    directory = tmp_path / "tls a+b&c#d"
    directory.mkdir()
    path = directory / "ca.pem"
    path.write_text(CA_PEM)
    return path


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The URLs handed to ``aio_pika.connect`` / ``connect_robust`` (which then raise :class:`Captured`)."""
    urls: list[str] = []

    async def connect(url: str, *args: Any, **kwargs: Any) -> Any:
        assert "ssl_context" not in kwargs  # all TLS options are in the URL
        assert "context" not in kwargs
        urls.append(str(url))
        raise Captured(url)

    monkeypatch.setattr(aio_pika, "connect", connect)
    monkeypatch.setattr(aio_pika, "connect_robust", connect)
    return urls


async def tls_of(url: str) -> tuple[aiormq.Connection, ssl.SSLContext]:
    """How aiormq would open ``url``: the (unopened) connection and the SSL context of its socket."""
    connection = aiormq.Connection(url)
    assert connection.url.scheme == "amqps"
    provider = SSLContextProvider(
        ssl_context=connection.ssl_context, ssl_certs=connection.ssl_certs, loop=asyncio.get_running_loop()
    )
    return connection, await provider.get_context()


def trusts_only_the_test_ca(context: ssl.SSLContext) -> bool:
    return [cert["subject"] for cert in context.get_ca_certs()] == [((("commonName", CA_NAME),),)]


async def assert_verifies_with(url: str, ca_file: Path) -> None:
    connection, context = await tls_of(url)
    assert connection.url.host == "broker.example"
    assert connection.url.port == 5671  # amqps' port when the URL names none
    assert connection.ssl_certs.cafile == str(ca_file)
    assert connection.ssl_certs.verify
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert trusts_only_the_test_ca(context)


# ---------------------------------------------------------------------- coordinator


async def test_coordinator_settings_accept_amqps_and_a_ca_file(ca_file: Path) -> None:
    settings = Settings.from_env({"RC_AMQP_URL": BROKER, "RC_AMQP_CA_FILE": str(ca_file)})
    assert (settings.amqp_url, settings.amqp_ca_file) == (BROKER, str(ca_file))
    await assert_verifies_with(settings.amqp_url_with_tls(), ca_file)
    # A URL that already has a query keeps it.
    with_query = Settings.from_env({"RC_AMQP_URL": BROKER + "?heartbeat=30", "RC_AMQP_CA_FILE": str(ca_file)})
    connection, _ = await tls_of(with_query.amqp_url_with_tls())
    assert (connection.heartbeat_timeout, connection.ssl_certs.cafile) == (30, str(ca_file))


async def test_the_coordinator_opens_its_connection_with_the_ca_file(
    ca_file: Path, captured: list[str]
) -> None:
    """Through the real path: ``Coordinator.run`` -> ``RabbitBroker.connect`` -> ``aio_pika.connect``."""

    class NoStore:
        pass

    settings = Settings.from_env(
        {"RC_AMQP_URL": BROKER, "RC_AMQP_CA_FILE": str(ca_file), "RC_NAMESPACE": "tls-test"}
    )
    coordinator = Coordinator(settings, cast(Store, NoStore()), broker_of(settings))
    # Not a connection error: the stand-in's own, so the run ends instead of retrying.
    with pytest.raises(Captured):
        await asyncio.wait_for(coordinator.run(asyncio.Event()), 10)
    await assert_verifies_with(captured[0], ca_file)


def test_a_ca_file_does_not_turn_plain_amqp_into_tls(ca_file: Path) -> None:
    settings = Settings.from_env(
        {"RC_AMQP_URL": "amqp://u:p@broker.example/", "RC_AMQP_CA_FILE": str(ca_file)}
    )
    assert settings.amqp_url_with_tls() == "amqp://u:p@broker.example/"


@pytest.mark.parametrize("kind", ["missing", "directory", "not a certificate"])
def test_an_unusable_ca_file_is_a_clear_error(tmp_path: Path, kind: str) -> None:
    path = {
        "missing": tmp_path / "nowhere" / "ca.pem",
        "directory": tmp_path,
        "not a certificate": tmp_path / "notes.txt",
    }[kind]
    if kind == "not a certificate":
        path.write_text("not a certificate\n")
    with pytest.raises(ValueError, match=r"^RC_AMQP_CA_FILE ") as raised:
        Settings.from_env({"RC_AMQP_URL": BROKER, "RC_AMQP_CA_FILE": str(path)})
    assert str(path) in str(raised.value)
    assert ("does not exist" in str(raised.value)) is (kind == "missing")


def test_rc_coordinator_refuses_to_start_without_its_ca_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "ca.pem"
    monkeypatch.setenv("RC_AMQP_URL", BROKER)
    monkeypatch.setenv("RC_AMQP_CA_FILE", str(missing))
    assert coordinator_main.main([]) == 2
    assert capsys.readouterr().err == f"rc-coordinator: RC_AMQP_CA_FILE {str(missing)!r} does not exist\n"


# ---------------------------------------------------------------------- task_sdk and rc-http-bridge


def _with_cafile(url: str, ca_file: Path) -> str:
    return f"{url}?cafile={urllib.parse.quote(str(ca_file), safe='/')}"


async def test_task_sdk_connects_with_amqps_and_a_cafile_in_the_url(
    ca_file: Path, captured: list[str]
) -> None:
    url = _with_cafile(BROKER, ca_file)
    settings = SdkSettings.from_env({"RC_AMQP_URL": url})
    assert settings.broker_user == "someone"
    assert mask_url(settings.amqp_url) == _with_cafile("amqps://someone:***@broker.example/rc", ca_file)

    async def ignore(delivery: object) -> None:
        return None

    with pytest.raises(Captured):
        await AmqpTransport(settings).open("portal", "portal-1", ignore)
    await assert_verifies_with(captured[0], ca_file)


def test_task_sdk_names_a_missing_ca_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"RC_AMQP_CA_FILE .* does not exist"):
        SdkSettings.from_env({"RC_AMQP_URL": BROKER, "RC_AMQP_CA_FILE": str(tmp_path / "missing.pem")})


def test_rc_http_bridge_hands_an_amqps_url_to_the_sdk(ca_file: Path) -> None:
    url = _with_cafile(BROKER, ca_file)
    arguments = bridge_parser().parse_args(
        ["--service", "portal", "--url", "http://portal.example:8080", "--amqp-url", url]
    )
    _, settings = configuration(arguments)
    assert settings.amqp_url == url


async def test_task_sdk_honours_rc_amqp_ca_file(ca_file: Path, captured: list[str]) -> None:
    settings = SdkSettings.from_env({"RC_AMQP_URL": BROKER, "RC_AMQP_CA_FILE": str(ca_file)})

    async def ignore(delivery: object) -> None:
        return None

    with pytest.raises(Captured):
        await AmqpTransport(settings).open("portal", "portal-1", ignore)
    await assert_verifies_with(captured[0], ca_file)


# ---------------------------------------------------------------------- rc


async def test_rc_connects_with_amqps_and_a_cafile_in_the_url(ca_file: Path, captured: list[str]) -> None:
    client = AdminClient(_with_cafile(BROKER, ca_file), "rc", timeout=2, operator="tester")
    with pytest.raises(BrokerUnreachable, match=r"amqps://someone:\*\*\*@broker\.example/rc\?cafile="):
        await client.connect()
    await assert_verifies_with(captured[0], ca_file)


async def test_rc_names_a_missing_ca_file(tmp_path: Path) -> None:
    """The real aio-pika: the SSL context is made before any connection, so no broker is needed."""
    missing = tmp_path / "ca.pem"
    url = _with_cafile("amqps://someone:s3cret@127.0.0.1:1/rc", missing)
    with pytest.raises(BrokerUnreachable) as raised:
        async with AdminClient(url, "rc", timeout=2, operator="tester"):
            pass
    message = str(raised.value)
    assert "FileNotFoundError" in message
    assert f"cafile={missing}" in message
    assert "s3cret" not in message
