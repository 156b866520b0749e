"""The SDK's version, as sent in replies and heartbeats and in the ``app_id`` of every message."""

from __future__ import annotations

from importlib import metadata


def _installed_version() -> str:
    try:
        return metadata.version("release-coordinator")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


SDK_VERSION = _installed_version()
APP_ID = f"task_sdk/{SDK_VERSION}"
