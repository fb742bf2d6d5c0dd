"""``turnout router``: the learned router prior, through the gateway's admin API.

    turnout router list                 # stored versions, the active one marked
    turnout router train                # a scorer replica fits a new version on this deployment's
                                        # grades and feedback, in the background, and activates it
    turnout router activate VERSION     # or 'shipped' for the packaged prior
    turnout router rollback             # back to the version active before
    turnout router evaluate             # APGR by call share, shipped vs active (vs --version), on
                                        # the held-out grades, then a replay of the recorded decisions

``evaluate`` reads the recorded grades and routing decisions from Postgres and needs the
scorer's package where it runs (``python -m turnout.scorer.router_train evaluate`` is the
same); the others only need the gateway (``GET /admin/router``, ``POST /admin/router/train|activate|rollback``).
"""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from turnout.cli.client import CliError, console, gateway_of

router_app = typer.Typer(
    help="The learned router prior: list, train, activate, roll back, evaluate.", no_args_is_help=True
)


@router_app.command("list")
def list_versions(ctx: typer.Context) -> None:
    """Stored router prior versions; the active one is marked."""
    doc = gateway_of(ctx).get("/admin/router")
    table = Table(title=f"Router prior (active: {doc['active']})")
    for col in ("", "version", "created", "trained on", "prompts"):
        table.add_column(col)
    for v in doc["versions"]:
        created = datetime.fromtimestamp(float(v["created"]), UTC).strftime("%Y-%m-%d %H:%M") if v["created"] else ""
        notes = v.get("notes") or {}
        table.add_row(
            "[green]●[/green]" if v["active"] else "",
            escape(v["version"]),
            created,
            escape(", ".join(v.get("trained_on") or [])),
            str(notes.get("prompts", "")),
        )
    console().print(table)


@router_app.command()
def train(ctx: typer.Context) -> None:
    """Ask a scorer replica to fit a new version on this deployment's data and activate it."""
    out = gateway_of(ctx).call("POST", "/admin/router/train")
    console().print(
        f"training requested ({out['scorer_replicas_notified']} scorer replica(s) notified); "
        "`turnout router list` shows the new version when it is done"
    )


@router_app.command()
def activate(
    ctx: typer.Context, version: Annotated[str, typer.Argument(help="a stored version, or 'shipped'")]
) -> None:
    """Make a stored version active on every scorer (hot-reloaded)."""
    out = gateway_of(ctx).call("POST", "/admin/router/activate", json_body={"version": version})
    console().print(f"active router prior: {escape(out['active'])}")


@router_app.command()
def rollback(ctx: typer.Context) -> None:
    """Go back to the version active before the current one."""
    out = gateway_of(ctx).call("POST", "/admin/router/rollback")
    console().print(f"active router prior: {escape(out['active'])}")


@router_app.command()
def evaluate(
    version: Annotated[str | None, typer.Option(help="a stored candidate version to compare")] = None,
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples for the band")] = 200,
    replay: Annotated[
        bool, typer.Option(help="replay the recorded routing decisions and their grades against each prior")
    ] = True,
) -> None:
    """APGR by call share on the held-out quarter of the recorded grades, and a replay of the
    recorded decisions (the deployment's own router beside each prior; needs the scorer package)."""
    try:
        module = importlib.import_module("turnout.scorer.router_train")
    except ImportError as exc:
        raise CliError.report(
            "evaluate needs the scorer's package (turnout-scorer) and its settings",
            "run it where the scorer is installed: python -m turnout.scorer.router_train evaluate",
        ) from exc
    args = [
        "evaluate",
        "--bootstrap",
        str(bootstrap),
        "--replay" if replay else "--no-replay",
        *(["--version", version] if version else []),
    ]
    code = int(module.main(args))
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.add_typer(router_app, name="router")
