"""Several broker URLs in one setting: parsing, validation, masking and the order they are tried in.

A single URL reads exactly as it always did (a comma inside it, in a password say, does not split it).
"""

from __future__ import annotations

import pytest

from coordinator.settings import Settings as CoordinatorSettings
from rc_http_bridge.__main__ import configuration as bridge_configuration
from rc_http_bridge.__main__ import parser as bridge_parser
from schemas.broker_url import Rotation, broker_user, mask_url, split_urls, with_ca_file
from task_sdk import Settings as SdkSettings
from task_sdk.cli import main as rc_task_main

A = "amqp://svc:s3cret@node-a:5672/rc"
B = "amqp://svc:s3cret@node-b:5672/rc"
C = "amqps://svc:s3cret@node-c/rc"


def test_one_url_is_read_as_it_always_was() -> None:
    for url in (A, "amqp://guest:guest@127.0.0.1:5672/", "amqp://u:pa,ss@host/", "amqp://localhost"):
        assert split_urls(url) == (url,)
        assert Rotation(split_urls(url)).order() == (url,)


def test_several_urls_are_split_at_the_commas_that_start_a_url() -> None:
    assert split_urls(f"{A},{B}") == (A, B)
    assert split_urls(f" {A} , {B},{C} ") == (A, B, C)
    assert split_urls("amqp://u:pa,ss@h1/,AMQP://u:pa,ss@h2/") == ("amqp://u:pa,ss@h1/", "AMQP://u:pa,ss@h2/")


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("", "RC_AMQP_URL: (empty) is not an amqp:// or amqps:// URL"),
        ("http://u:secret@h/", "RC_AMQP_URL: http://u:***@h/ is not an amqp:// or amqps:// URL"),
        (
            f"{A},http://svc:s3cret@node-b/",
            "RC_AMQP_URL: URL 2 of 2 http://svc:***@node-b/ is not an amqp://",
        ),
        (
            f"{A},amqp://other:pw@node-b/rc",
            "RC_AMQP_URL: every URL must log in as the same broker user, not other, svc",
        ),
        (
            f"{A},amqp://svc:s3cret@node-b/other",
            "RC_AMQP_URL: every URL must name the same vhost, not 'other', 'rc'",
        ),
        # A trailing comma belongs to the last URL's vhost (a comma may be part of a URL): another vhost.
        (f"{A},{B},", "RC_AMQP_URL: every URL must name the same vhost, not 'rc', 'rc,'"),
    ],
)
def test_a_bad_list_is_one_clear_line_without_passwords(value: str, error: str) -> None:
    with pytest.raises(ValueError, match=r"^RC_AMQP_URL: ") as raised:
        split_urls(value)
    assert str(raised.value).startswith(error)
    assert "secret" not in str(raised.value)
    assert "\n" not in str(raised.value)


def test_masking_the_user_and_a_ca_file_apply_to_every_url() -> None:
    assert mask_url(f"{A},{B}") == "amqp://svc:***@node-a:5672/rc,amqp://svc:***@node-b:5672/rc"
    assert broker_user(f"{A},{B}") == "svc"
    assert with_ca_file(f"{C},{A}", "/ca.pem") == f"{C}?cafile=/ca.pem,{A}"


def test_the_rotation_keeps_the_node_in_use_and_moves_on_when_it_is_lost() -> None:
    rotation = Rotation((A, B, C))
    assert rotation.order() == (A, B, C)
    assert rotation.connected(A) is True  # the first connection
    assert rotation.connected(A) is False  # the same node again
    rotation.lost(A)
    assert rotation.order() == (B, C, A)
    rotation.lost(A)  # a late report of the same loss: already moved on
    assert rotation.current == B
    rotation.lost(B)
    rotation.lost(C)
    assert rotation.order() == (A, B, C)  # wraps around
    rotation.connected(C)
    assert rotation.order() == (C, A, B)
    with pytest.raises(ValueError, match="no broker URL"):
        Rotation(())


def test_every_process_accepts_a_list_and_refuses_a_bad_one() -> None:
    both = f"{A},{B}"
    assert CoordinatorSettings.from_env({"RC_AMQP_URL": both}).amqp_url == both
    assert SdkSettings.from_env({"RC_AMQP_URL": both}).broker_user == "svc"
    with pytest.raises(ValueError, match="same broker user"):
        CoordinatorSettings.from_env({"RC_AMQP_URL": f"{A},amqp://x:y@node-b/rc"})
    with pytest.raises(ValueError, match="not an amqp"):
        SdkSettings.from_env({"RC_AMQP_URL": "https://node-a/"})


def test_rc_task_says_what_is_wrong_with_the_list() -> None:
    with pytest.raises(SystemExit) as exited:
        rc_task_main(["--amqp-url", f"{A},amqp://svc:s3cret@node-b/elsewhere", "examples.portal:Portal"])
    message = str(exited.value.code)
    assert message.startswith("rc-task: RC_AMQP_URL: every URL must name the same vhost")
    assert "s3cret" not in message


def test_rc_http_bridge_takes_a_list_too() -> None:
    def settings_of(urls: str) -> SdkSettings:
        options = ["--service", "svc", "--url", "http://svc:8080", "--amqp-url", urls]
        return bridge_configuration(bridge_parser().parse_args(options))[1]

    assert settings_of(f"{A},{B}").amqp_url == f"{A},{B}"
    with pytest.raises(ValueError, match="same vhost"):
        settings_of(f"{A},amqp://svc:s3cret@node-b/elsewhere")
