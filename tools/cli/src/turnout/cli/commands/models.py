"""``turnout models``: the catalog as the router sees it (``GET /admin/catalog``): replicas,
capabilities, profiled quality per category, speed and benchmark score."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from turnout.cli.client import console, gateway_of


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * float(v):.0f}%"


def models(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the catalog as JSON")] = False,
) -> None:
    """List the models: where they run, what they can do, how good and fast they are."""
    doc = gateway_of(ctx).get("/admin/catalog")
    data: list[dict[str, Any]] = sorted(doc["data"], key=lambda m: m["name"])
    if as_json:
        console().print_json(data=data)
        return
    categories = sorted({c for m in data for c in m.get("quality") or {}})
    table = Table(title=f"{len(data)} model(s)")
    for col in ("model", "params", "replicas", "can", *categories, "tok/s", "TTFT", "benchmark"):
        table.add_column(col, justify="right" if col in (*categories, "params", "tok/s", "TTFT") else "left")
    for m in data:
        caps = m.get("capabilities") or {}
        can = [c for c in ("vision", "tools", "embedding") if caps.get(c)] + (["code"] if m.get("coder") else [])
        quality = m.get("quality") or {}
        table.add_row(
            escape(m["name"]),
            f"{m['params_b']:g} B" if m.get("params_b") else "–",
            escape(", ".join(r["backend"] for r in m.get("replicas") or [])),
            " ".join(can),
            *(_pct(quality.get(c)) for c in categories),
            f"{m['tokens_per_s']:.0f}" if m.get("tokens_per_s") else "–",
            f"{m['ttft_ms']:.0f} ms" if m.get("ttft_ms") else "–",
            _pct(m.get("benchmark")),
        )
    console().print(table)


def register(app: typer.Typer) -> None:
    app.command()(models)
