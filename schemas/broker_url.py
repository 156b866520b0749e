"""How every component hands a TLS CA bundle to aio-pika: one check, one URL form."""

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
