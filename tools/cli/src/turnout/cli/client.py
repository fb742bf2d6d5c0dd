"""The gateway's HTTP API as the commands use it, with errors an operator can act on."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape

DEFAULT_PORT = 8080
PIPE_WIDTH = 240
"""Width of output that goes to a pipe or a file (``turnout models | less``) unless ``COLUMNS``
says otherwise: rich's default there is 80 columns, which squeezes the wide tables to ``Qw…``."""


def console() -> Console:
    """A console on the current stdout (made per use: the width and the stream are read when made)."""
    out = Console()
    if not out.is_terminal and not os.environ.get("COLUMNS"):
        return Console(width=PIPE_WIDTH)
    return out


def err_console() -> Console:
    return Console(stderr=True)


class CliError(typer.Exit):
    """A failure the operator can act on, already reported on stderr (message, then the hint);
    the command exits 1. Make it with :meth:`report`."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(1)
        self.message = message
        self.hint = hint

    @classmethod
    def report(cls, message: str, hint: str = "") -> CliError:
        err = err_console()
        err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
        if hint:
            err.print(f"[yellow]hint:[/yellow] {escape(hint)}", highlight=False)
        return cls(message, hint)


def gateway_of(ctx: typer.Context) -> Gateway:
    gw = ctx.find_root().obj
    assert isinstance(gw, Gateway)
    return gw


class Gateway:
    def __init__(
        self, url: str, *, admin_key: str | None = None, api_key: str | None = None, timeout_s: float = 10.0
    ) -> None:
        self.url = url.rstrip("/")
        self.admin_key = admin_key
        self.api_key = api_key
        self.timeout_s = timeout_s

    def _headers(self, path: str) -> dict[str, str]:
        key = self.admin_key if path.startswith("/admin") else self.api_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    def unreachable(self, exc: Exception) -> tuple[str, str]:
        return (
            f"cannot reach the gateway at {self.url} ({type(exc).__name__}: {exc})",
            "start it (`make run`), or point --url / TURNOUT_GATEWAY_URL / TURNOUT_GATEWAY__PORT at it",
        )

    def health(self) -> tuple[str, str] | None:
        """``None`` when ``/health`` answers, else what went wrong and what to do."""
        try:
            resp = httpx.get(self.url + "/health", timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            return self.unreachable(exc)
        if resp.status_code != 200:
            return f"GET /health: HTTP {resp.status_code}", f"is {self.url} a Turnout gateway?"
        return None

    def _failed(self, method: str, path: str, resp: httpx.Response) -> CliError:
        try:
            detail = resp.json().get("error", {}).get("message") or resp.text
        except (ValueError, AttributeError):
            detail = resp.text
        hint = ""
        if resp.status_code == 401 and path.startswith("/admin"):
            hint = "pass the admin key: --admin-key or TURNOUT_ADMIN_KEY"
        elif resp.status_code == 401:
            hint = "pass a client key: --api-key or TURNOUT_API_KEY"
        return CliError.report(f"{method} {path}: HTTP {resp.status_code}: {str(detail)[:300]}", hint)

    def call(self, method: str, path: str, params: dict[str, Any] | None = None, json_body: Any = None) -> Any:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        if json_body is None and method != "GET":
            json_body = {}  # the gateway takes only JSON bodies (415 otherwise), even empty ones
        try:
            resp = httpx.request(
                method,
                self.url + path,
                params=params,
                json=json_body,
                headers=self._headers(path),
                timeout=self.timeout_s,
            )
        except httpx.HTTPError as exc:
            raise CliError.report(*self.unreachable(exc)) from exc
        if resp.status_code >= 400:
            raise self._failed(method, path, resp)
        return resp.json() if resp.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params)

    def events(self, path: str, **params: Any) -> Iterator[tuple[str, Any]]:
        """Server-Sent Events from ``path``: ``(event, parsed data)`` until the server ends."""
        timeout = httpx.Timeout(self.timeout_s, read=max(self.timeout_s, 30.0))
        try:
            with httpx.stream(
                "GET", self.url + path, params=params, headers=self._headers(path), timeout=timeout
            ) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise self._failed("GET", path, resp)
                event, data = "message", list[str]()
                for line in resp.iter_lines():
                    if not line:
                        if data:
                            yield event, json.loads("\n".join(data))
                        event, data = "message", list[str]()
                    elif line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].lstrip())
        except httpx.HTTPError as exc:
            raise CliError.report(*self.unreachable(exc)) from exc
