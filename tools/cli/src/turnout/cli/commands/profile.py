"""``turnout profile``: start profiling and follow it, through the gateway's admin API.

    turnout profile --watch                     # progress bars until the queue is empty
    turnout profile llama3.1:8b --force --watch # profile one model again, and follow it
    turnout profile --all --force               # every model again (e.g. after a suite change)
    turnout profile                             # the state once, as a table

Progress comes from ``GET /admin/profiling``: the models queued, and per running model the
prompts done out of the suite's total, the prompt being asked and an ETA.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from turnout.cli.client import Gateway, console, gateway_of


def status_table(doc: dict[str, Any]) -> Table:
    table = Table(title="Profiling")
    for col in ("model", "backend", "phase", "prompts", "current", "ETA"):
        table.add_column(col)
    for r in doc.get("running") or []:
        eta = f"{r['eta_s']:.0f}s" if r.get("eta_s") is not None else "-"
        table.add_row(
            escape(r["model"]),
            escape(r.get("backend", "")),
            r.get("phase", ""),
            f"{r['done']}/{r['total']}",
            escape(r.get("current") or ""),
            eta,
        )
    for m in doc.get("queue") or []:
        table.add_row(escape(m), "", "queued", "", "", "")
    if not table.rows:
        table.add_row("[dim]nothing queued or running[/dim]", "", "", "", "", "")
    return table


def watch(gw: Gateway, interval_s: float) -> None:
    """Progress bars, one per running model, until nothing is queued or running."""
    tasks: dict[str, TaskID] = {}
    columns = (
        TextColumn("[bold]{task.fields[model]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[phase]} {task.fields[current]}"),
    )
    with Progress(*columns, console=console(), transient=False) as progress:
        queued = progress.add_task("queue", total=None, model="queue", phase="", current="")
        while True:
            doc = gw.get("/admin/profiling")
            running = {r["model"]: r for r in doc.get("running") or []}
            for model, r in running.items():
                if model not in tasks:
                    tasks[model] = progress.add_task(
                        model, total=r.get("total") or None, model=escape(model), phase="", current=""
                    )
                progress.update(
                    tasks[model],
                    completed=r.get("done") or 0,
                    total=r.get("total") or None,
                    phase=r.get("phase") or "",
                    current=escape((r.get("current") or "")[:40]),
                )
            for model, task in tasks.items():
                if model not in running and not progress.tasks[task].finished:
                    progress.update(task, completed=progress.tasks[task].total or 0, phase="done", current="")
            waiting = doc.get("queue") or []
            progress.update(queued, phase=f"{len(waiting)} waiting", current=escape(", ".join(waiting[:5])))
            if not running and not waiting:
                break
            time.sleep(interval_s)


def profile(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="Profile this model (see `turnout models`)")] = None,
    all_models: Annotated[
        bool, typer.Option("--all", help="Profile every due model (with --force: every model)")
    ] = False,
    force: Annotated[bool, typer.Option(help="Profile even if profiled with the current suite version")] = False,
    watch_: Annotated[bool, typer.Option("--watch", "-w", help="Follow progress with progress bars")] = False,
    interval: Annotated[float, typer.Option(min=0.05, help="Seconds between polls with --watch")] = 1.0,
) -> None:
    """Start profiling (a model, or all) and/or show its progress."""
    gw = gateway_of(ctx)
    if model is not None or all_models:
        params = {"force": "true" if force else "false", "model": model}
        res = gw.call("POST", "/admin/reprofile", params)
        what = model or "every due model"
        console().print(
            f"[green]enqueued[/green] {escape(what)}" if res.get("enqueued") else f"{escape(what)}: already queued"
        )
    if watch_:
        try:
            watch(gw, interval)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        console().print("profiling queue is empty")
    elif model is None and not all_models:
        console().print(status_table(gw.get("/admin/profiling")))


def register(app: typer.Typer) -> None:
    app.command()(profile)
