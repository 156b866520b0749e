"""Refuse the example secrets of ``.env.example`` ("change-me-..."): they are public, so a broker or a
database set up with them has a password everyone knows.

``rc-admin-setup`` checks every password it is given and every secret variable in its environment; the
compose file runs it before the broker and the database start, so ``docker compose up`` with an
unchanged ``.env`` stops with its one-line error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

#: "change-me", "change_me", "changeme", "ChangeMe...": the marker of every example secret.
_PLACEHOLDER = re.compile(r"change[-_ ]?me", re.IGNORECASE)
#: How to make a real secret (hex: safe inside amqp:// and mongodb:// URLs, unlike base64's '/' and '+').
HOW_TO_GENERATE = "generate one with `openssl rand -hex 24`, or let `rc-admin-setup --generate` make them"
#: Secrets the deployment reads from ``.env`` besides the broker users' ``RC_PASSWORD_<USER>``.
OTHER_SECRETS = ("RC_MONGODB_PASSWORD", "RC_DASHBOARD_TOKEN", "RC_ERLANG_COOKIE", "RC_MONGODB_KEYFILE")


def is_placeholder(value: str) -> bool:
    """Whether ``value`` is (or contains) an example secret's marker."""
    return bool(_PLACEHOLDER.search(value))


def refuse_placeholder(where: str, value: str) -> None:
    """``ValueError`` (one line, naming ``where`` but not the value) if ``value`` is an example secret."""
    if is_placeholder(value):
        raise ValueError(f"{where} is still an example value of .env.example (change-me): {HOW_TO_GENERATE}")


def refuse_placeholders_in(environ: Mapping[str, str]) -> None:
    """Refuse an example value in any ``RC_PASSWORD_*`` or other secret variable set in ``environ``."""
    for name in sorted(environ):
        if name.startswith("RC_PASSWORD_") or name in OTHER_SECRETS:
            refuse_placeholder(name, environ[name])
