"""The root ``turnout`` command: global options, then one module per command group.

Each module in :data:`turnout.cli.commands.COMMAND_MODULES` exposes ``register(app)``, which adds
its commands (``app.command()``) or its group (``app.add_typer(group, name=…)``). Adding a group
is one line: its module name in that tuple.
"""

from __future__ import annotations

import importlib
from typing import Annotated

import typer

from turnout.cli.client import DEFAULT_PORT, Gateway
from turnout.cli.commands import COMMAND_MODULES


def build_app() -> typer.Typer:
    app = typer.Typer(
        help="Turnout operator commands: they talk to a running gateway's HTTP API.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode="rich",
    )

    @app.callback()
    def root(
        ctx: typer.Context,
        url: Annotated[
            str | None,
            typer.Option(
                envvar="TURNOUT_GATEWAY_URL", help="Gateway URL (default: http://127.0.0.1:$TURNOUT_GATEWAY__PORT)"
            ),
        ] = None,
        port: Annotated[
            int, typer.Option(envvar="TURNOUT_GATEWAY__PORT", min=1, max=65535, help="Gateway port, without --url")
        ] = DEFAULT_PORT,
        admin_key: Annotated[
            str | None, typer.Option(envvar="TURNOUT_ADMIN_KEY", help="Admin key, for the /admin API")
        ] = None,
        api_key: Annotated[
            str | None, typer.Option(envvar="TURNOUT_API_KEY", help="Client key, when the gateway requires one")
        ] = None,
        timeout: Annotated[float, typer.Option(min=0.1, help="Seconds per HTTP call")] = 10.0,
    ) -> None:
        """Where the gateway is and which keys to use; every command shares them."""
        ctx.obj = Gateway(url or f"http://127.0.0.1:{port}", admin_key=admin_key, api_key=api_key, timeout_s=timeout)

    for name in COMMAND_MODULES:
        importlib.import_module(f"turnout.cli.commands.{name}").register(app)
    return app
