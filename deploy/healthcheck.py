"""Container health checks (docker compose ``healthcheck``), exit 0 when healthy, 1 when not.

    python -m deploy.healthcheck http http://127.0.0.1:9464/metrics   # the coordinator's metrics answer
    python -m deploy.healthcheck task portal --health-file /tmp/rc-task-health   # this instance is well
    python -m deploy.healthcheck task portal                          # rc.task.portal has a consumer

``task --health-file`` (or ``RC_TASK_HEALTH_FILE`` set, as for the service itself) reads the file the
instance rewrites at every heartbeat: healthy means it wrote one recently and said it was healthy (an
instance whose process slots are all busy is healthy, though it consumes nothing then). Without it,
``task`` connects with ``RC_AMQP_URL`` and declares the service's queue *passively* (which needs no
permission) to read its consumer count: healthy means some instance of the service consumes commands.
Only the standard library and aio-pika are used; nothing secret is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from schemas.broker_url import split_urls
from schemas.topology import Topology

TIMEOUT = 5.0


def check_http(url: str, timeout: float = TIMEOUT) -> str | None:
    """``None`` if ``url`` answers 2xx, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status = int(response.status)
    except OSError as error:
        return f"{url}: {error}"
    return None if 200 <= status < 300 else f"{url}: HTTP {status}"


def check_health_file(path: Path, max_age: float, now: datetime | None = None) -> str | None:
    """``None`` if the instance wrote ``path`` within ``max_age`` seconds and said it was healthy."""
    try:
        told = json.loads(path.read_text(encoding="utf-8"))
        at = datetime.fromisoformat(told["at"])
        healthy = told["healthy"] is True
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"{path}: {type(error).__name__}: {error}"
    age = ((now or datetime.now(UTC)) - at).total_seconds()
    if age > max_age:
        return f"no heartbeat for {age:.0f}s (more than {max_age:g}s)"
    return None if healthy else f"unhealthy: {str(told.get('detail') or 'no detail')[:300]}"


async def check_consumer(amqp_url: str, queue: str) -> str | None:
    """``None`` if ``queue`` exists and has at least one consumer, else why not. With several broker URLs
    (a cluster's nodes), the first node that answers is asked."""
    import aio_pika

    timeout = TIMEOUT
    connection, problem = None, "no broker URL"
    for url in split_urls(amqp_url):
        try:
            connection = await asyncio.wait_for(aio_pika.connect(url, timeout=timeout), timeout + 1)
            break
        except Exception as error:
            problem = f"cannot connect to the broker: {type(error).__name__}"
    if connection is None:
        return problem
    try:
        channel = await connection.channel()
        declared = await asyncio.wait_for(channel.declare_queue(queue, passive=True), timeout)
        result = declared.declaration_result
        if not result.consumer_count:
            return f"{queue}: no consumer"
        return None
    except Exception as error:
        return f"{queue}: {type(error).__name__}: {error}"
    finally:
        await connection.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.healthcheck", description="container health checks"
    )
    sub = parser.add_subparsers(dest="kind", required=True)
    http = sub.add_parser("http", help="an HTTP endpoint answers 2xx")
    http.add_argument("url")
    task = sub.add_parser("task", help="the service's queue has a consumer")
    task.add_argument("service")
    task.add_argument("--namespace", default=os.environ.get("RC_NAMESPACE", "rc"))
    task.add_argument(
        "--health-file",
        type=Path,
        default=os.environ.get("RC_TASK_HEALTH_FILE") or None,
        help="the file the instance rewrites at every heartbeat [RC_TASK_HEALTH_FILE]",
    )
    task.add_argument(
        "--max-age",
        type=float,
        default=3 * float(os.environ.get("RC_HEARTBEAT_SECONDS") or 5),
        help="seconds the file may be old (default: three heartbeat periods)",
    )
    args = parser.parse_args(argv)
    if args.kind == "http":
        problem = check_http(args.url)
    elif args.health_file is not None:
        problem = check_health_file(Path(args.health_file), args.max_age)
    else:
        amqp_url = os.environ.get("RC_AMQP_URL")
        if not amqp_url:
            print("unhealthy: RC_AMQP_URL is not set", file=sys.stderr)
            return 1
        problem = asyncio.run(check_consumer(amqp_url, Topology(args.namespace).task_queue(args.service)))
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
