"""``turnout explain "prompt" [--quality 0.8]``: where would this prompt go, and why? Asks the
scorer through ``GET /admin/explain``; nothing is sent to a model."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from turnout.cli.client import console, gateway_of


def explain(
    ctx: typer.Context,
    prompt: Annotated[str, typer.Argument(help="The prompt to route")],
    quality: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="0 = fastest … 1 = best (X-Turnout-Quality)")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Ask for this model or alias instead of routing")] = None,
    images: Annotated[bool, typer.Option(help="As if the prompt carried an image")] = False,
    tools: Annotated[bool, typer.Option(help="As if the request offered tools")] = False,
    top: Annotated[int, typer.Option(min=1, help="Candidates shown")] = 5,
) -> None:
    """Show the routing decision for a prompt: its analysis and the ranked candidates with reasons."""
    doc: dict[str, Any] = gateway_of(ctx).get(
        "/admin/explain",
        prompt=prompt,
        quality=quality,
        model=model,
        images="true" if images else None,
        tools="true" if tools else None,
    )
    a = doc.get("analysis") or {}
    console().print(
        f"category [bold]{escape(str(a.get('category')))}[/bold], complexity {a.get('complexity', 0):.2f}"
        f" ({escape(str(a.get('level')))})"
        + (f"; signals: {escape(', '.join(a['signals']))}" if a.get("signals") else "")
    )
    if doc.get("unservable"):
        console().print(f"[red]unservable:[/red] {escape(doc['unservable'])}")
        raise typer.Exit(1)
    table = Table(show_lines=True)
    for col in ("#", "model", "backend", "score", "reasons"):
        table.add_column(col)
    for i, c in enumerate((doc.get("candidates") or [])[:top], 1):
        table.add_row(
            str(i),
            ("[bold green]" if i == 1 else "") + escape(c["model"]),
            escape(c["backend"]),
            f"{c.get('score', 0):.3f}",
            escape("\n".join(c.get("reasons") or [])),
        )
    console().print(table)
    for name, why in (doc.get("filtered") or {}).items():
        console().print(f"[dim]filtered {escape(name)}: {escape(why)}[/dim]")


def register(app: typer.Typer) -> None:
    app.command()(explain)
