"""``rc service``: the registry of task services and which of them a release needs."""

from __future__ import annotations

from typing import Annotated

import typer

from rc_cli.calls import request
from rc_cli.checks import check_service
from rc_cli.options import Settings, with_connection
from rc_cli.output import show_result
from schemas.messages import ListServices, RequireService, UnrequireService

app = typer.Typer(
    help="The registry of task services and which of them a release needs.", no_args_is_help=True
)

ServiceArgument = Annotated[str, typer.Argument(help="Service name, e.g. search-index.")]


@app.command("list")
@with_connection
def service_list(settings: Settings) -> None:
    """List the registered task services: required or not, health, last heartbeat."""
    show_result(settings, request(settings, ListServices()))


@app.command("require")
@with_connection
def service_require(settings: Settings, name: ServiceArgument) -> None:
    """Require a service: releases created from now on wait for it."""
    service = check_service(settings, name)
    show_result(settings, request(settings, RequireService(service=service)), f"{service} is now required")


@app.command("unrequire")
@with_connection
def service_unrequire(settings: Settings, name: ServiceArgument) -> None:
    """Stop requiring a service: releases created from now on do without it."""
    service = check_service(settings, name)
    show_result(
        settings, request(settings, UnrequireService(service=service)), f"{service} is no longer required"
    )
