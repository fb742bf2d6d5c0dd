"""``turnout models``: the catalog as the router sees it (``GET /admin/catalog``): replicas,
capabilities, profiled quality per category, speed and benchmark score.

One table when it fits the terminal (and always when the output goes to a pipe or a file:
``PIPE_WIDTH`` columns, see ``client.py``). In a narrower terminal (80 columns) it becomes two
tables that fit: the models (where, what they can do, speed) and their quality by category
and benchmark score in per cent, under short headers the caption spells out; a name too long
for its column folds onto a second line rather than being cut.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from turnout.cli.client import console, gateway_of

SHORT = 4
"""Characters a category keeps as a column header in the narrow layout."""


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * float(v):.0f}%"


def _num(v: Any) -> str:
    return "–" if v is None else f"{100 * float(v):.0f}"


def _can(m: dict[str, Any]) -> str:
    caps = m.get("capabilities") or {}
    return " ".join([c for c in ("vision", "tools", "embedding") if caps.get(c)] + (["code"] if m.get("coder") else []))


def _params(m: dict[str, Any]) -> str:
    return f"{m['params_b']:g} B" if m.get("params_b") else "–"


def _speed(m: dict[str, Any]) -> tuple[str, str]:
    tps = f"{m['tokens_per_s']:.0f}" if m.get("tokens_per_s") else "–"
    return tps, f"{m['ttft_ms']:.0f} ms" if m.get("ttft_ms") else "–"


def _replicas(m: dict[str, Any]) -> str:
    return escape(", ".join(r["backend"] for r in m.get("replicas") or []))


def wide_table(data: list[dict[str, Any]], categories: list[str]) -> Table:
    """Every column in one table (a wide terminal, a pipe, a file)."""
    table = Table(title=f"{len(data)} model(s)")
    for col in ("model", "params", "replicas", "can", *categories, "tok/s", "TTFT", "benchmark"):
        table.add_column(col, justify="right" if col in (*categories, "params", "tok/s", "TTFT") else "left")
    for m in data:
        quality = m.get("quality") or {}
        table.add_row(
            escape(m["name"]),
            _params(m),
            _replicas(m),
            _can(m),
            *(_pct(quality.get(c)) for c in categories),
            *_speed(m),
            _pct(m.get("benchmark")),
        )
    return table


def short_names(categories: list[str]) -> dict[str, str]:
    """Each category's header in the narrow layout: its first ``SHORT`` letters, more when two
    categories would otherwise read the same."""
    out: dict[str, str] = {}
    for c in categories:
        n = SHORT
        while any(o != c and o[:n] == c[:n] for o in categories) and n < len(c):
            n += 1
        out[c] = c[:n]
    return out


def narrow_tables(data: list[dict[str, Any]], categories: list[str]) -> list[Table]:
    """The same facts in two tables that fit 80 columns: the models, then quality by category and benchmark."""

    def compact(title: str) -> Table:
        return Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), show_edge=False, title_justify="left")

    models = compact(f"{len(data)} model(s)")
    models.add_column("model", overflow="fold")
    models.add_column("params", justify="right", no_wrap=True)
    models.add_column("replicas", overflow="fold")
    models.add_column("can", overflow="fold")
    models.add_column("tok/s", justify="right", no_wrap=True)
    models.add_column("TTFT", justify="right", no_wrap=True)
    for m in data:
        models.add_row(escape(m["name"]), _params(m), _replicas(m), _can(m), *_speed(m))
    tables = [models]
    if categories or any(m.get("benchmark") is not None for m in data):
        short = short_names(categories)
        quality = compact("quality by category and public benchmark, %")
        quality.caption = ", ".join(f"{s} = {c}" for c, s in short.items() if s != c) or None
        quality.caption_justify = "left"
        quality.add_column("model", overflow="fold")
        for c in categories:
            quality.add_column(short[c], justify="right", no_wrap=True)
        quality.add_column("bench", justify="right", no_wrap=True)
        for m in data:
            q = m.get("quality") or {}
            quality.add_row(escape(m["name"]), *(_num(q.get(c)) for c in categories), _num(m.get("benchmark")))
        tables.append(quality)
    return tables


def catalog_tables(data: list[dict[str, Any]], out: Console) -> list[Table]:
    """The table(s) for ``out``: the wide one when it fits its width, else the narrow layout."""
    categories = sorted({c for m in data for c in m.get("quality") or {}})
    wide = wide_table(data, categories)
    natural = out.measure(wide, options=out.options.update(max_width=100_000)).maximum  # not capped by the width
    if natural <= out.width:
        return [wide]
    return narrow_tables(data, categories)


def models(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the catalog as JSON")] = False,
) -> None:
    """List the models: where they run, what they can do, how good and fast they are."""
    doc = gateway_of(ctx).get("/admin/catalog")
    data: list[dict[str, Any]] = sorted(doc["data"], key=lambda m: m["name"])
    out = console()
    if as_json:
        out.print_json(data=data)
        return
    for i, table in enumerate(catalog_tables(data, out)):
        if i:
            out.print()
        out.print(table)


def register(app: typer.Typer) -> None:
    app.command()(models)
