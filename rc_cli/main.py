"""``rc``: the operators' command line. It talks to the coordinator only through the broker (request/reply).

Exit codes: 0 success; 1 the coordinator refused (or ``watch`` ended canceled/failed); 2 bad input;
3 no coordinator answering or broker unreachable; 130 interrupted.

The commands live in :mod:`rc_cli.commands`, one module per group; this module mounts them under the root,
which takes the connection options (:mod:`rc_cli.options`) before any command.
"""

from __future__ import annotations

import logging

import typer

from rc_cli.checks import parse_since
from rc_cli.client import DEFAULT_AMQP_URL, DEFAULT_NAMESPACE, DEFAULT_TIMEOUT
from rc_cli.commands import note, release, service, study
from rc_cli.options import (
    JsonOption,
    RootNamespaceOption,
    RootTimeoutOption,
    RootUrlOption,
    Settings,
)
from rc_cli.output import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_REFUSED, EXIT_UNAVAILABLE

app = typer.Typer(
    name="rc",
    help="Release Coordinator: create, follow, hold, publish and cancel data releases.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals hold the broker URL and its password
)
app.add_typer(release.app, name="release")
app.add_typer(note.app, name="note")
app.add_typer(study.app, name="study")
app.add_typer(service.app, name="service")


@app.callback()
def root(
    ctx: typer.Context,
    amqp_url: RootUrlOption = DEFAULT_AMQP_URL,
    namespace: RootNamespaceOption = DEFAULT_NAMESPACE,
    timeout: RootTimeoutOption = DEFAULT_TIMEOUT,
    json_output: JsonOption = False,
) -> None:
    """Release Coordinator: create, follow, hold, publish and cancel data releases.

    Connection options may be given here or after any command.
    """
    ctx.obj = Settings(amqp_url=amqp_url, namespace=namespace, timeout=timeout, json=json_output)


def main() -> None:
    # The AMQP libraries log connection failures through logging's last-resort handler; the command reports
    # them itself, in one line and without credentials.
    logging.getLogger().addHandler(logging.NullHandler())
    app()


__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_UNAVAILABLE",
    "app",
    "main",
    "parse_since",
]

if __name__ == "__main__":
    main()
