"""``turnout profile``: start profiling and follow it, through the gateway's admin API.

    turnout profile --watch                     # progress bars until the queue is empty
    turnout profile llama3.1:8b --force --watch # profile one model again, and follow it
    turnout profile --all --force               # every model again (e.g. after a suite change)
    turnout profile                             # the state once, as a table

``--url`` (``TURNOUT_GATEWAY_URL``, default http://localhost:8080) and ``--admin-key``
(``TURNOUT_ADMIN_KEY``) say where the gateway is. Progress comes from ``GET
/admin/profiling``: the models queued, and per running model the prompts done out of the
suite's total, the prompt being asked and an ETA.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(help="Turnout operator commands (talk to the gateway's admin API).", no_args_is_help=True)
console = Console()


class AdminClient:
    def __init__(self, url: str, admin_key: str | None, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.admin_key = admin_key
        self.timeout_s = timeout_s

    def call(self, method: str, path: str, params: dict[str, str] | None = None) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        req = urllib.request.Request(f"{self.url}{path}{query}", method=method)
        if self.admin_key:
            req.add_header("Authorization", f"Bearer {self.admin_key}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:300]
            raise typer.BadParameter(f"{method} {path}: HTTP {exc.code}: {detail}") from exc
        except urllib.error.URLError as exc:
            raise typer.BadParameter(f"cannot reach the gateway at {self.url}: {exc.reason}") from exc


def status_table(doc: dict[str, Any]) -> Table:
    table = Table(title="Profiling")
    for col in ("model", "backend", "phase", "prompts", "current", "ETA"):
        table.add_column(col)
    for r in doc.get("running") or []:
        eta = f"{r['eta_s']:.0f}s" if r.get("eta_s") is not None else "-"
        table.add_row(
            r["model"],
            r.get("backend", ""),
            r.get("phase", ""),
            f"{r['done']}/{r['total']}",
            r.get("current") or "",
            eta,
        )
    for m in doc.get("queue") or []:
        table.add_row(m, "", "queued", "", "", "")
    return table


def watch(client: AdminClient, interval_s: float, idle_exit: bool) -> None:
    tasks: dict[str, TaskID] = {}
    seen_work = False
    columns = (
        TextColumn("[bold]{task.fields[model]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[phase]} {task.fields[current]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        queued = progress.add_task("queue", total=None, model="queue", phase="", current="")
        while True:
            doc = client.call("GET", "/admin/profiling")
            running = {r["model"]: r for r in doc.get("running") or []}
            for model, r in running.items():
                if model not in tasks:
                    tasks[model] = progress.add_task(
                        model, total=r.get("total") or None, model=model, phase="", current=""
                    )
                progress.update(
                    tasks[model],
                    completed=r.get("done") or 0,
                    total=r.get("total") or None,
                    phase=r.get("phase") or "",
                    current=r.get("current") or "",
                )
            for model, task in tasks.items():
                if model not in running and not progress.tasks[task].finished:
                    progress.update(task, completed=progress.tasks[task].total or 0, phase="done", current="")
            waiting = doc.get("queue") or []
            progress.update(queued, phase=f"{len(waiting)} waiting", current=", ".join(waiting[:5]))
            seen_work = seen_work or bool(running or waiting)
            if idle_exit and not running and not waiting and (seen_work or not tasks):
                break
            time.sleep(interval_s)


@app.command()
def profile(
    model: Annotated[str | None, typer.Argument(help="Profile this model (see GET /v1/models)")] = None,
    all_models: Annotated[
        bool, typer.Option("--all", help="Profile every due model (with --force: every model)")
    ] = False,
    force: Annotated[bool, typer.Option(help="Profile even if profiled with the current suite version")] = False,
    watch_: Annotated[bool, typer.Option("--watch", "-w", help="Follow progress with progress bars")] = False,
    url: Annotated[str, typer.Option(envvar="TURNOUT_GATEWAY_URL", help="Gateway URL")] = "http://localhost:8080",
    admin_key: Annotated[str | None, typer.Option(envvar="TURNOUT_ADMIN_KEY", help="Admin key")] = None,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between polls with --watch")] = 1.0,
) -> None:
    """Start profiling (a model, or all) and/or show its progress."""
    client = AdminClient(url, admin_key)
    if model is not None or all_models:
        params = {"force": "true" if force else "false"}
        if model is not None:
            params["model"] = model
        res = client.call("POST", "/admin/reprofile", params)
        what = model or "every due model"
        console.print(f"[green]enqueued[/green] {what}" if res.get("enqueued") else f"{what}: already queued")
    if watch_:
        try:
            watch(client, interval, idle_exit=True)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        console.print("profiling queue is empty")
    elif model is None and not all_models:
        console.print(status_table(client.call("GET", "/admin/profiling")))


@app.callback()
def _root() -> None:
    """Turnout operator commands."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
