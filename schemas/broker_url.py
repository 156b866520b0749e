"""Broker (and store) URLs as every component handles them: one way to mask the password in logs and
errors, one way to read the user a connection logs in as, one check and one URL form for a TLS CA bundle."""

from __future__ import annotations

import ssl
import urllib.parse


def check_ca_file(path: str) -> str:
    """``path`` if it is a readable PEM CA bundle; else a ValueError naming ``RC_AMQP_CA_FILE``, so a
    missing or unreadable bundle is a clear error at start-up, not a connection retried forever."""
    try:
        ssl.create_default_context(cafile=path)
    except FileNotFoundError:
        raise ValueError(f"RC_AMQP_CA_FILE {path!r} does not exist") from None
    except (OSError, ssl.SSLError) as error:
        raise ValueError(f"RC_AMQP_CA_FILE {path!r} is not a readable PEM CA bundle: {error}") from None
    return path


def with_ca_file(url: str, ca_file: str | None) -> str:
    """The broker URL with ``ca_file`` passed to aio-pika (``amqps://...?cafile=``); other URLs as given."""
    if not ca_file or not url.startswith("amqps://"):
        return url
    joiner = "&" if "?" in url else "?"
    # Quoted: aio-pika reads the query with yarl, which cuts a path at '&' or '#' and makes '+' a space.
    return f"{url}{joiner}cafile={urllib.parse.quote(ca_file, safe='/')}"


#: AMQP's user when a URL names none (RabbitMQ's local development account).
DEFAULT_BROKER_USER = "guest"


def mask_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: safe to log or print.

    The user name is kept (it says who connects); a URL too malformed to parse is shown as
    ``<invalid URL>`` rather than as it is, since where its password starts cannot be known.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return "<invalid URL>"
    if password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def broker_user(url: str) -> str:
    """The user a connection to ``url`` logs in as (RabbitMQ checks every ``user_id`` against it)."""
    try:
        username = urllib.parse.urlsplit(url).username
    except ValueError:
        username = None
    return urllib.parse.unquote(username) if username else DEFAULT_BROKER_USER
