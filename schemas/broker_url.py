"""Broker (and store) URLs as every component handles them: one way to mask the password in logs and
errors, one way to read the user a connection logs in as, one check and one URL form for a TLS CA bundle,
and the broker nodes of a cluster: ``RC_AMQP_URL`` may list several URLs separated by commas
(:func:`split_urls`), tried in the order of a :class:`Rotation`."""

from __future__ import annotations

import re
import ssl
import urllib.parse
from collections.abc import Sequence


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
    """The broker URL with ``ca_file`` passed to aio-pika (``amqps://...?cafile=``); other URLs as given.
    Each URL of a comma-separated list gets it."""
    urls = _split(url)
    if len(urls) > 1:
        return ",".join(with_ca_file(one, ca_file) for one in urls)
    if not ca_file or not url.startswith("amqps://"):
        return url
    joiner = "&" if "?" in url else "?"
    # Quoted: aio-pika reads the query with yarl, which cuts a path at '&' or '#' and makes '+' a space.
    return f"{url}{joiner}cafile={urllib.parse.quote(ca_file, safe='/')}"


#: AMQP's user when a URL names none (RabbitMQ's local development account).
DEFAULT_BROKER_USER = "guest"


def mask_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: safe to log or print.

    The user name is kept (it says who connects). A URL whose parse cannot be trusted (a password holding
    ``#``, ``/``, ``?`` or ``[`` ends the authority early or breaks the parse) is masked the careful way:
    whatever lies between ``//`` and its last ``@``, but the user name, becomes ``***``. Each URL of a
    comma-separated list is masked.
    """
    urls = _split(url)
    if len(urls) > 1:
        return ",".join(mask_url(one) for one in urls)
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return _mask_unparsed(url)
    if "@" in parts.path + parts.query + parts.fragment:  # the parse cut the credentials short
        return _mask_unparsed(url)
    if password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def _mask_unparsed(url: str) -> str:
    """``scheme://user:***@rest``: what precedes the last ``@`` is credentials, whatever it holds."""
    scheme = _SCHEME.match(url)
    prefix = scheme.group(0) if scheme else ""
    rest = url[len(prefix) :]
    if "@" not in rest:
        return f"{prefix}***"
    credentials, _, host = rest.rpartition("@")
    return f"{prefix}{credentials.partition(':')[0]}:***@{host}"


def broker_user(url: str) -> str:
    """The user a connection to ``url`` logs in as (RabbitMQ checks every ``user_id`` against it); for
    a list, the first URL's (:func:`split_urls` checks that every URL names the same user)."""
    try:
        username = urllib.parse.urlsplit(_split(url)[0]).username
    except ValueError:
        username = None
    return urllib.parse.unquote(username) if username else DEFAULT_BROKER_USER


# ---------------------------------------------------------------------- several broker nodes

#: A comma that starts the next URL of a list (``scheme://`` follows). A comma elsewhere (a password
#: may hold one) is not a separator, so any single URL reads exactly as it always did.
_NEXT_URL = re.compile(r"\s*,\s*(?=[a-z][a-z0-9+.-]*://)", re.IGNORECASE)
_SCHEMES = ("amqp", "amqps")


def _split(value: str) -> list[str]:
    return _NEXT_URL.split(value.strip())


def split_urls(value: str, setting: str = "RC_AMQP_URL") -> tuple[str, ...]:
    """The broker URLs in ``value``: one URL, or the nodes of a cluster separated by commas.

    Raises ``ValueError`` (one line naming ``setting``, passwords masked) when a URL is not ``amqp://``
    or ``amqps://``, when two URLs log in as different users (every message carries the sender's user in
    ``user_id``, which must stay the connection's user on every node), or name different vhosts (the
    topology lives in one vhost).
    """
    urls = tuple(url for url in _split(value))
    for number, url in enumerate(urls, 1):
        where = f"URL {number} of {len(urls)} " if len(urls) > 1 else ""
        try:
            scheme = urllib.parse.urlsplit(url).scheme.lower()
        except ValueError:
            scheme = ""
        if scheme not in _SCHEMES:
            shown = mask_url(url) if url else "(empty)"
            raise ValueError(f"{setting}: {where}{shown} is not an amqp:// or amqps:// URL")
    if len(urls) > 1:
        users = {broker_user(url) for url in urls}
        if len(users) > 1:
            raise ValueError(
                f"{setting}: every URL must log in as the same broker user, not {', '.join(sorted(users))}"
            )
        vhosts = {_vhost(url) for url in urls}
        if len(vhosts) > 1:
            raise ValueError(
                f"{setting}: every URL must name the same vhost, not {', '.join(sorted(map(repr, vhosts)))}"
            )
    return urls


def _vhost(url: str) -> str:
    path = urllib.parse.urlsplit(url).path
    return urllib.parse.unquote(path[1:]) if len(path) > 1 else "/"


class Rotation:
    """Which broker URL to try first, and in what order to try the others.

    A process keeps using the node it reached; when that connection is lost (or an attempt to open it
    fails), the next attempt goes to the next URL of the list, wrapping around. With one URL, that URL is
    always first. Pure bookkeeping: the caller connects.
    """

    def __init__(self, urls: Sequence[str]) -> None:
        if not urls:
            raise ValueError("no broker URL")
        self.urls = tuple(urls)
        self._index = 0
        #: The URL of the last connection opened (None before the first).
        self.last_connected: str | None = None

    @property
    def current(self) -> str:
        """The URL to try first."""
        return self.urls[self._index]

    def order(self) -> tuple[str, ...]:
        """Every URL once, starting with :attr:`current`."""
        return self.urls[self._index :] + self.urls[: self._index]

    def connected(self, url: str) -> bool:
        """A connection to ``url`` was opened: it becomes the one to try first. True if the last
        connection went elsewhere (or there was none)."""
        self._index = self.urls.index(url)
        moved, self.last_connected = self.last_connected != url, url
        return moved

    def lost(self, url: str) -> None:
        """The connection to ``url`` was lost or could not be opened: the next URL becomes first (unless
        the rotation has already moved on from ``url``)."""
        if url == self.current:
            self._index = (self._index + 1) % len(self.urls)
