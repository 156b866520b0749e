"""An in-memory MongoDB-protocol server (mongoeco) that requires a user name and a password.

``python -m tests.coordinator.secured_store`` reads the user and password from ``RC_TEST_STORE_USER`` and
``RC_TEST_STORE_PASSWORD`` (never from the command line), prints ``READY <host>:<port>`` once it listens
and serves until its stdin is closed. Clients authenticate with SCRAM-SHA-256 (``authMechanism=SCRAM-SHA-256``
in the URL: mongoeco does not advertise its mechanisms, and the driver's fallback, SCRAM-SHA-1, is refused).
"""

from __future__ import annotations

import asyncio
import os
import sys

from mongoeco.wire import AsyncMongoEcoProxyServer
from mongoeco.wire.auth import WireAuthUser


async def serve(user: str, password: str) -> None:
    async with AsyncMongoEcoProxyServer(auth_users=(WireAuthUser(user, password),)) as server:
        address = server.address.uri.split("//", 1)[1].split("/", 1)[0]
        print(f"READY {address}", flush=True)
        await asyncio.to_thread(sys.stdin.buffer.read)  # returns at EOF: the parent closed the pipe or died


if __name__ == "__main__":
    asyncio.run(serve(os.environ["RC_TEST_STORE_USER"], os.environ["RC_TEST_STORE_PASSWORD"]))
