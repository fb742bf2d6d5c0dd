"""``turnout check``: is everything set up? Configuration, Redis, Postgres, the scorer and every
backend, as the gateway sees them (``GET /admin/check``), each with what to fix. Exits 1 when
something needs fixing."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from turnout.cli.client import console, gateway_of


def check(ctx: typer.Context) -> None:
    """Check the configuration, Redis, Postgres, the scorer and every backend; say what to fix."""
    gw = gateway_of(ctx)
    with console().status(f"checking through {gw.url} …"):
        problem = gw.health()
        if problem is not None:
            console().print(f"[red]✗[/red] gateway at {escape(gw.url)}: {escape(problem[0])}", highlight=False)
            console().print(f"  [yellow]fix:[/yellow] {escape(problem[1])}", highlight=False)
            raise typer.Exit(1)
        report = gw.get("/admin/check")
    table = Table(title=f"Turnout at {gw.url}")
    table.add_column("", width=1)
    table.add_column("check")
    table.add_column("state")
    table.add_column("fix")
    table.add_row("[green]✓[/green]", "gateway", "answers /health", "")
    for item in report["items"]:
        mark = "[green]✓[/green]" if item["ok"] else "[red]✗[/red]"
        table.add_row(mark, escape(item["name"]), escape(item["detail"]), f"[yellow]{escape(item['fix'])}[/yellow]")
    console().print(table)
    bad = [i for i in report["items"] if not i["ok"]]
    if bad:
        console().print(f"[red]{len(bad)} problem(s)[/red]: " + ", ".join(escape(i["name"]) for i in bad))
        raise typer.Exit(1)
    console().print("[green]all good[/green]")


def register(app: typer.Typer) -> None:
    app.command()(check)
