"""``turnout requests``: the request log.

turnout requests tail                  # requests as they finish (follows GET /admin/live)
turnout requests list --model qwen2.5:7b --status 500 --since 2026-12-06T10:00
turnout requests show <request id>     # prompt, reply, decision and attempts
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from turnout.cli.client import console, gateway_of

group = typer.Typer(help="The request log: follow, list and show requests.", no_args_is_help=True)


def _ms(v: Any) -> str:
    return "–" if v is None else f"{float(v):.0f} ms"


def line(r: dict[str, Any]) -> str:
    """One finished request, one line."""
    ts = dt.datetime.fromtimestamp(r["ts"], tz=dt.UTC).strftime("%H:%M:%S") if r.get("ts") else "--:--:--"
    status = r.get("status")
    color = "green" if status == 200 else "red"
    cat = r.get("category") or "-"
    if r.get("model") is None:  # nothing served it: say why, not a candidate's reasons
        outcome = escape(str(r.get("outcome") or "failed"))
        asked = f" (asked for {escape(str(r['requested_model']))})" if r.get("requested_model") else ""
        return (
            f"{ts} [{color}]{status}[/{color}] {escape(str(r.get('request_id')))} {escape(cat)} → "
            f"[{color}]{outcome}[/{color}]{asked} {_ms(r.get('latency_ms'))}"
        )
    why = "; ".join(r.get("reasons") or [])
    return (
        f"{ts} [{color}]{status}[/{color}] {escape(str(r.get('request_id')))} {escape(cat)} → "
        f"[bold]{escape(str(r.get('model')))}[/bold]@{escape(str(r.get('backend')))} "
        f"{_ms(r.get('latency_ms'))} (ttft {_ms(r.get('ttft_ms'))}) [dim]{escape(why)}[/dim]"
    )


@group.command()
def tail(
    ctx: typer.Context,
    count: Annotated[int, typer.Option("-n", "--count", min=0, help="Stop after this many (0: follow forever)")] = 0,
    history: Annotated[bool, typer.Option(help="Start with the last 20 finished requests")] = True,
    interval: Annotated[float, typer.Option(min=0.2, max=10.0, help="Seconds between updates")] = 1.0,
) -> None:
    """Print requests as they finish, with the model and backend chosen and why."""
    seen = 0
    shown: set[str] = set()
    first = True
    gw = gateway_of(ctx)
    try:
        while True:  # the server ends each stream after a while: follow the next one
            for event, snap in gw.events("/admin/live", interval=interval):
                if event != "snapshot":
                    continue
                finished = [r for r in snap.get("finished") or [] if r.get("entry_id") not in shown]
                shown.update(r.get("entry_id") for r in finished)
                if first and not history:
                    finished = []
                first = False
                for r in finished:
                    console().print(line(r), highlight=False)
                    seen += 1
                    if count and seen >= count:
                        return
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@group.command("list")
def list_(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(help="Served by this model")] = None,
    backend: Annotated[str | None, typer.Option(help="Served by this backend")] = None,
    client: Annotated[str | None, typer.Option(help="From this client (key id or address)")] = None,
    status: Annotated[int | None, typer.Option(help="With this HTTP status")] = None,
    since: Annotated[str | None, typer.Option(help="ISO 8601 time or Unix seconds")] = None,
    until: Annotated[str | None, typer.Option(help="ISO 8601 time or Unix seconds")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
) -> None:
    """List stored requests, newest first."""
    doc = gateway_of(ctx).get(
        "/admin/requests",
        model=model,
        backend=backend,
        client=client,
        status=status,
        since=since,
        until=until,
        limit=limit,
    )
    table = Table()
    for col in ("time", "request", "status", "category", "model", "backend", "latency", "TTFT", "why"):
        table.add_column(col)
    for r in doc["data"]:
        table.add_row(
            (r.get("requested_at") or "")[11:19],
            escape(r["request_id"]),
            f"{r['status']} {r['outcome'] if r['outcome'] != 'ok' else ''}",
            escape(r.get("category") or "–"),
            escape(r.get("model") or "–"),
            escape(r.get("backend") or "–"),
            _ms(r.get("latency_ms")),
            _ms(r.get("ttft_ms")),
            escape("; ".join(r.get("top_reasons") or [])),
        )
    console().print(table)


@group.command()
def show(ctx: typer.Context, request_id: Annotated[str, typer.Argument(help="The X-Request-ID")]) -> None:
    """One request: prompt, reply, the decision with reasons, every attempt."""
    r = gateway_of(ctx).get(f"/admin/requests/{request_id}")
    console().print(
        f"[bold]{escape(r['request_id'])}[/bold] {r['status']} {r['outcome']}: "
        f"{escape(str(r.get('model')))}@{escape(str(r.get('backend')))}, {_ms(r.get('latency_ms'))}"
    )
    a = (r.get("decision") or {}).get("analysis") or {}
    if a:
        console().print(f"category {escape(str(a.get('category')))}, complexity {a.get('complexity', 0):.2f}")
    table = Table(title="candidates")
    for col in ("model", "backend", "score", "reasons"):
        table.add_column(col)
    for c in r["decision"]["candidates"]:
        mark = "✓ " if c.get("chosen") else ""
        table.add_row(mark + escape(c["model"]), escape(c["backend"]), f"{c.get('score', 0):.3f}",
                      escape("\n".join(c.get("reasons") or [])))  # fmt: skip
    console().print(table)
    for t in r["attempts"]:
        console().print(
            f"attempt {t['n']}: {escape(t['model'])}@{escape(t['backend'])} {t['outcome']} {_ms(t.get('latency_ms'))}"
        )
    if r.get("prompt") is not None:
        console().print("[bold]prompt[/bold]", escape(r["prompt"]))
    if r.get("reply") is not None:
        console().print("[bold]reply[/bold]", escape(r["reply"]))


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="requests")
