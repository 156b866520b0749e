"""Issue 21, item 9: a password never shows, however oddly it is spelled; metrics stay on the loopback.

* ``mask_url`` printed a URL in clear when it could not parse it: a password holding ``#``, ``/`` or
  ``?`` ends the URL's authority early, so the password was not found, and the URL was shown as it was.
* The metrics endpoint listened on every interface, and the compose file published 9464 on all of them.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator import metrics
from coordinator.settings import Settings
from schemas.broker_url import mask_url

ROOT = Path(__file__).resolve().parents[2]
#: Characters a generated password is made of: the URL delimiters first, then ordinary ones.
DELIMITERS = "#/?@:[]%"
ALPHABET = DELIMITERS + "abcXYZ019-_.~!$&'()*+,;="
#: Every generated password starts with it, so it cannot hide inside the host or the scheme.
MARK = "Zq9"


@settings(max_examples=500, deadline=None)
@given(
    rest=st.text(alphabet=ALPHABET, min_size=1, max_size=20),
    scheme=st.sampled_from(["amqp", "amqps", "http", "https", "mongodb"]),
)
def test_no_password_survives_masking(rest: str, scheme: str) -> None:
    password = MARK + rest
    url = f"{scheme}://someone:{password}@broker.example:5672/rc"
    shown = mask_url(url)
    assert password not in shown
    assert "***" in shown


def test_passwords_with_delimiters_are_masked_and_the_rest_stays_readable() -> None:
    for password in ("pa#ss", "pa/ss", "pa?ss", "p[ss", "p@ss"):
        assert mask_url(f"amqp://ops:{password}@broker:5672/rc") == "amqp://ops:***@broker:5672/rc"


async def test_rc_never_prints_such_a_password() -> None:
    """The operator's command line, given a broker URL it cannot use, says so with the password masked."""
    url = "amqp://ops:pa#ss/word@127.0.0.1:1/rc"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rc_cli",
        "--amqp-url",
        url,
        "--timeout",
        "2",
        "release",
        "list",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 3
    text = (out + err).decode()
    assert "amqp://ops:***@127.0.0.1:1/rc" in text
    assert "pa#ss" not in text
    assert "word" not in text


def test_metrics_listen_on_the_loopback_by_default() -> None:
    configured = Settings.from_env({})
    assert configured.metrics_address == "127.0.0.1"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = metrics.serve(port, configured.metrics_address)
    assert server is not None
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.shutdown()
        server.server_close()
    assert Settings.from_env({"RC_METRICS_ADDRESS": "0.0.0.0"}).metrics_address == "0.0.0.0"


def test_compose_publishes_metrics_on_the_host_loopback_only() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            if str(port).endswith(":9464"):
                assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
