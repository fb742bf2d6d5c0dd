"""The fleet's HTTP servers: one aiohttp app per listener, all in one process and event loop.

Use it in-process (``async with Fleet(config) as fleet: fleet.url("ollama")``) or through
``python -m turnout.fakefleet``, which prints :meth:`Fleet.announcement` as its first
stdout line.
"""

from __future__ import annotations

import logging
import socket
from types import TracebackType
from typing import Any

from aiohttp import web

from turnout.fakefleet.admin import AdminApi
from turnout.fakefleet.config import Dialect, FleetConfig
from turnout.fakefleet.engine import apply_failure
from turnout.fakefleet.errors import Dropped, FleetError, render
from turnout.fakefleet.ollama_api import OllamaApi
from turnout.fakefleet.openai_api import OpenAIApi
from turnout.fakefleet.state import FleetState, ListenerState

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024  # base64 images are large


def build_app(fleet: FleetState, listener: ListenerState) -> web.Application:
    """One listener's app: its dialect's routes, the admin routes, failures and error rendering."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/_fleet/"):
            return await handler(request)  # type: ignore[no-any-return]
        listener.endpoints[request.path] += 1
        openai = not request.path.startswith("/api/")
        try:
            failure = fleet.failures.match_listener(listener.spec.name)
            if failure is not None:
                listener.errors["*"] += 1
                await apply_failure(failure, request, ollama=not openai)
            return await handler(request)  # type: ignore[no-any-return]
        except FleetError as err:
            return render(err, openai=openai)
        except (Dropped, ConnectionResetError):
            return web.Response(status=499)  # nobody reads it: the connection is gone

    app = web.Application(middlewares=[middleware], client_max_size=MAX_BODY_BYTES)
    if listener.spec.dialect is Dialect.OLLAMA:
        app.add_routes(OllamaApi(fleet, listener).routes())
    app.add_routes(OpenAIApi(fleet, listener).routes())
    app.add_routes(AdminApi(fleet).routes())
    return app


class Fleet:
    def __init__(self, config: FleetConfig, *, host: str = "127.0.0.1") -> None:
        self.config = config
        self.host = host
        self.state = FleetState(config)
        self._runners: list[web.AppRunner] = []

    @property
    def ports(self) -> dict[str, int]:
        return {name: li.port for name, li in self.state.listeners.items()}

    def url(self, name: str) -> str:
        """Base URL of a listener as a backend config wants it (``…/v1`` for OpenAI-dialect ones)."""
        li = self.state.listeners[name]
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        root = f"http://{host}:{li.port}"
        return f"{root}/v1" if li.spec.dialect is Dialect.OPENAI else root

    def root_url(self, name: str) -> str:
        return self.url(name).removesuffix("/v1")

    async def start(self) -> dict[str, int]:
        try:
            for li in self.state.listeners.values():
                sock = _bind(self.host, li.spec.port)
                li.port = sock.getsockname()[1]
                runner = web.AppRunner(build_app(self.state, li), access_log=None, handle_signals=False)
                await runner.setup()
                self._runners.append(runner)
                await web.SockSite(runner, sock, shutdown_timeout=1.0).start()
                log.info("listener %s (%s) on %s", li.spec.name, li.spec.dialect, self.url(li.spec.name))
        except BaseException:
            await self.stop()
            raise
        return self.ports

    async def stop(self) -> None:
        runners, self._runners = self._runners, []
        for runner in reversed(runners):
            await runner.cleanup()

    def announcement(self) -> dict[str, Any]:
        """The start-up line: where each listener is, and how to point Turnout at them.

        ``listeners``/``ports``: listener name -> port (``ports.admin`` too: any listener serves
        ``/_fleet/*``); ``urls``: name -> base URL (OpenAI-dialect ones end in ``/v1``);
        ``backends``: a ready ``TURNOUT_BACKENDS`` value (backend ``fleet-<listener>``).
        """
        names = list(self.state.listeners)
        first = names[0]
        kinds = {n: str(li.spec.dialect) for n, li in self.state.listeners.items()}
        return {
            "fakefleet": 1,
            "host": self.host,
            "listeners": self.ports,
            "ports": {**self.ports, "admin": self.ports[first]},
            "urls": {**{n: self.url(n) for n in names}, "admin": self.root_url(first)},
            "dialects": kinds,
            "host_labels": {n: li.spec.host_label for n, li in self.state.listeners.items()},
            "vram_total_bytes": {n: li.spec.vram_total_bytes for n, li in self.state.listeners.items()},
            "backends": ",".join(f"fleet-{n}:{kinds[n]}={self.url(n)}" for n in names),
        }

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(512)
    sock.setblocking(False)
    return sock
