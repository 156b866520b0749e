"""The ``HOST:PORT`` address a server of the product listens on (the dashboard, the HTTP bridge)."""

from __future__ import annotations


def split_listen(listen: str, example: str | None = None) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as a (host, port) pair; port 0 picks a free one.
    ValueError names the setting's form (with ``example``, if given) and the value refused."""
    host, sep, port = listen.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        form = f"HOST:PORT (e.g. {example})" if example else "HOST:PORT"
        raise ValueError(f"listen must be {form}, not {listen!r}")
    return host, int(port)
