"""Where the coordinator keeps releases: one interface, two engines.

* ``sqlite:///PATH`` — :class:`SqliteStore`, the embedded default: one file, one machine. ``PATH`` is
  relative (``sqlite:///data/rc.db``) or absolute with a fourth slash (``sqlite:////var/lib/rc/rc.db``).
* ``mongodb://...`` or ``mongodb+srv://...`` — :class:`MongoStore`: several machines, replica sets.

:func:`store_for` turns a URL into an engine (not yet opened); :func:`default_store_url` is the file a
coordinator uses when no URL is configured.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import platformdirs

from coordinator.store._interface import (
    BadCursor,
    HeartbeatRecord,
    Page,
    ReleaseReader,
    ReleaseWriter,
    StaleRevision,
    Store,
    StoreCounts,
    StoreError,
    StoreUnavailable,
    VersionTaken,
)

#: The application's folder in the user's data directory (``~/.local/share`` on Linux).
APP_NAME = "release-coordinator"
_SQLITE_PREFIX = "sqlite:///"
_MONGODB_SCHEMES = ("mongodb://", "mongodb+srv://")


class UnknownStoreUrl(ValueError):
    """A store URL of no engine this coordinator has."""


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def default_store_url(namespace: str, data_dir: Path | None = None) -> str:
    """The SQLite file of a namespace: ``<data dir>/<namespace>.db``."""
    folder = (data_dir or default_data_dir()).expanduser().absolute()
    return f"{_SQLITE_PREFIX}{folder / f'{namespace}.db'}"


def check_store_url(url: str) -> str:
    """``url`` if an engine takes it, else :class:`UnknownStoreUrl` saying which forms there are."""
    if url.startswith(_SQLITE_PREFIX):
        if not url.removeprefix(_SQLITE_PREFIX).strip():
            raise UnknownStoreUrl(f"store URL {url!r} names no file: use sqlite:///PATH")
        return url
    if url.startswith(_MONGODB_SCHEMES):
        return url
    scheme = url.split(":", 1)[0] if ":" in url else url
    raise UnknownStoreUrl(
        f"unknown store URL scheme {scheme!r}: use sqlite:///PATH (one machine) or mongodb://HOST/ "
        "(several machines)"
    )


def sqlite_path(url: str) -> Path:
    return Path(unquote(url.removeprefix(_SQLITE_PREFIX))).expanduser()


def store_for(url: str, database: str) -> Store:
    """The engine for ``url``, not yet opened (``database`` names the MongoDB database)."""
    check_store_url(url)
    if url.startswith(_SQLITE_PREFIX):
        from coordinator.store.sqlite import SqliteStore

        return SqliteStore(sqlite_path(url))
    from coordinator.store.mongo import MongoStore

    return MongoStore(url, database)


__all__ = [
    "APP_NAME",
    "BadCursor",
    "HeartbeatRecord",
    "Page",
    "ReleaseReader",
    "ReleaseWriter",
    "StaleRevision",
    "Store",
    "StoreCounts",
    "StoreError",
    "StoreUnavailable",
    "UnknownStoreUrl",
    "VersionTaken",
    "check_store_url",
    "default_data_dir",
    "default_store_url",
    "sqlite_path",
    "store_for",
]
