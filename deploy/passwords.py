"""Where each user's password comes from (a file, the environment, a secrets folder, or made up), and
the ``.env`` lines they go to. Passwords are never printed."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

from deploy.placeholders import refuse_placeholder

PASSWORD_ENV_PREFIX = "RC_PASSWORD_"


def password_env(user: str) -> str:
    """The environment variable a user's password is read from: ``RC_PASSWORD_SEARCH_INDEX``."""
    return PASSWORD_ENV_PREFIX + user.upper().replace("-", "_").replace(".", "_")


def _read_secret(path: Path) -> str:
    text = path.read_text(encoding="utf-8").strip("\r\n")
    if not text:
        raise ValueError(f"empty password file {path}")
    return text


def _write_secret(path: Path, password: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(password + "\n")


def resolve_passwords(
    users: Iterable[str],
    *,
    password_files: Mapping[str, Path] | None = None,
    environ: Mapping[str, str] | None = None,
    secrets_dir: Path | None = None,
    generate: bool = False,
) -> dict[str, str]:
    """Find every user's password (see the module docstring for the order); raise ``ValueError`` if one lacks.

    With ``generate``, a user without a password gets a random one, stored in ``secrets_dir/<user>`` (0600).
    """
    password_files = password_files or {}
    environ = os.environ if environ is None else environ
    users = list(users)
    unknown = sorted(set(password_files) - set(users))
    if unknown:
        raise ValueError(f"--password-file for unknown users: {', '.join(unknown)}")
    if generate and secrets_dir is None:
        raise ValueError("generating passwords needs a secrets directory to write them to")
    found: dict[str, str] = {}
    missing: list[str] = []
    for user in users:
        if user in password_files:
            found[user] = _read_secret(password_files[user])
        elif environ.get(password_env(user)):
            found[user] = environ[password_env(user)]
        elif secrets_dir is not None and (secrets_dir / user).is_file():
            found[user] = _read_secret(secrets_dir / user)
        elif generate and secrets_dir is not None:
            found[user] = secrets.token_urlsafe(24)
            _write_secret(secrets_dir / user, found[user])
        else:
            missing.append(user)
    if missing:
        hints = ", ".join(f"{user} ({password_env(user)})" for user in missing)
        raise ValueError(f"no password for {hints}; use --password-file, the environment, or --generate")
    for user, password in found.items():
        refuse_placeholder(f"the password of {user} ({password_env(user)} or its file)", password)
    return found


def write_env_file(path: Path, passwords: Mapping[str, str]) -> None:
    """Set ``RC_PASSWORD_<USER>=...`` lines in ``path`` (mode 0600), e.g. the ``.env`` docker compose reads.

    Every other line of an existing file is kept as it is, and a password line already there is replaced
    where it stands; the file is replaced at once (written beside it, then renamed), so a crash leaves the
    old one whole."""
    wanted = {password_env(user): password for user, password in passwords.items()}
    kept: list[str] = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            name = line.split("=", 1)[0].strip()
            kept.append(f"{name}={wanted.pop(name)}" if name in wanted else line)
    lines = kept + [f"{name}={password}" for name, password in wanted.items()]
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write("".join(f"{line}\n" for line in lines))
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)
