"""The options ``rc`` shares: the connection options, declared once, and the paging and filter options.

The connection options (``--amqp-url``, ``--namespace``, ``--timeout``, ``--json``) may be given before the
command (the root callback) or after it. :func:`with_connection` adds them to a command and hands it the
resolved :class:`Settings`, so no command declares them itself.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from rc_cli.client import DEFAULT_AMQP_URL, DEFAULT_NAMESPACE, DEFAULT_TIMEOUT
from schemas.broker_url import mask_url

PANEL = "Connection and output"
MASKED_DEFAULT_URL = mask_url(DEFAULT_AMQP_URL)


@dataclass(frozen=True)
class Settings:
    amqp_url: str = DEFAULT_AMQP_URL
    namespace: str = DEFAULT_NAMESPACE
    timeout: float = DEFAULT_TIMEOUT
    json: bool = False


# ---------------------------------------------------------------------- before the command (the root)

RootUrlOption = Annotated[
    str,
    typer.Option(
        "--amqp-url",
        envvar="RC_AMQP_URL",
        help="Broker URL; a cluster's nodes as several URLs separated by commas.",
        show_default=MASKED_DEFAULT_URL,
        rich_help_panel=PANEL,
    ),
]
RootNamespaceOption = Annotated[
    str,
    typer.Option("--namespace", envvar="RC_NAMESPACE", help="Installation namespace.", rich_help_panel=PANEL),
]
RootTimeoutOption = Annotated[
    float,
    typer.Option(
        "--timeout",
        envvar="RC_TIMEOUT",
        min=0.001,
        help="Seconds to wait for the coordinator's answer.",
        rich_help_panel=PANEL,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON.", rich_help_panel=PANEL)
]

# ---------------------------------------------------------------------- after the command (overrides)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--amqp-url",
        help=(
            "Broker URL, or a cluster's nodes comma-separated "
            f"(env RC_AMQP_URL; default {MASKED_DEFAULT_URL})."
        ),
        show_default=False,
        rich_help_panel=PANEL,
    ),
]
NamespaceOption = Annotated[
    str | None,
    typer.Option(
        "--namespace",
        help=f"Installation namespace (env RC_NAMESPACE; default {DEFAULT_NAMESPACE}).",
        show_default=False,
        rich_help_panel=PANEL,
    ),
]
TimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        min=0.001,
        help=f"Seconds to wait for the coordinator (env RC_TIMEOUT; default {DEFAULT_TIMEOUT:g}).",
        show_default=False,
        rich_help_panel=PANEL,
    ),
]

_KEYWORD = inspect.Parameter.KEYWORD_ONLY
#: The parameters every command gets after its own, with their defaults.
_CONNECTION_PARAMETERS = (
    inspect.Parameter("amqp_url", _KEYWORD, default=None, annotation=UrlOption),
    inspect.Parameter("namespace", _KEYWORD, default=None, annotation=NamespaceOption),
    inspect.Parameter("timeout", _KEYWORD, default=None, annotation=TimeoutOption),
    inspect.Parameter("json_output", _KEYWORD, default=False, annotation=JsonOption),
)
_CONTEXT_PARAMETER = inspect.Parameter(
    "ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context
)


def resolve_settings(
    ctx: typer.Context, amqp_url: str | None, namespace: str | None, timeout: float | None, json_output: bool
) -> Settings:
    """The root options, overridden by the same options given after the command."""
    base = ctx.find_object(Settings) or Settings()
    return Settings(
        amqp_url=amqp_url if amqp_url is not None else base.amqp_url,
        namespace=namespace if namespace is not None else base.namespace,
        timeout=timeout if timeout is not None else base.timeout,
        json=json_output or base.json,
    )


def with_connection(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command(settings, ...)`` the connection options after its own, resolved into ``settings``.

    Typer reads the wrapper's signature: the command's own parameters (without ``settings``), then the
    connection options, so every command's help lists them the same way, in the same panel.
    """
    own = list(inspect.signature(command, eval_str=True).parameters.values())[1:]

    @functools.wraps(command)
    def wrapper(
        ctx: typer.Context,
        *,
        amqp_url: str | None = None,
        namespace: str | None = None,
        timeout: float | None = None,
        json_output: bool = False,
        **values: Any,
    ) -> None:
        command(resolve_settings(ctx, amqp_url, namespace, timeout, json_output), **values)

    parameters = [_CONTEXT_PARAMETER, *own, *_CONNECTION_PARAMETERS]
    wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    return wrapper


# ---------------------------------------------------------------------- arguments, paging and filters

ReleaseIdArgument = Annotated[str, typer.Argument(metavar="ID", help="Release id, e.g. RE_0A1B2C3D.")]
LimitOption = Annotated[int, typer.Option("--limit", min=1, max=500, help="Page size.")]
CursorOption = Annotated[str | None, typer.Option("--cursor", help="next_cursor of the previous page.")]
SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since",
        help="Only since this moment: an ISO date or time (UTC if no zone), or an age like 7d, 12h, 30m.",
    ),
]
