"""A tiny ops HTTP server for services that are not FastAPI apps (scorer, workers, gpu-agent):
``GET /health`` (alive), ``GET /ready`` (every check passes) and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[bool]]


class CheckRunner:
    """Runs readiness checks: one that raises or times out counts as not ready.

    A check is a request boundary, so any exception is caught; the first failure of each kind
    (check name and exception type) is logged once with its traceback, repeats are not, so a
    bug in a check shows in the logs while a Redis outage polled every few seconds does not
    flood them.
    """

    def __init__(self, timeout_s: float = 2.0) -> None:
        self.timeout_s = timeout_s
        self._seen: set[tuple[str, type[BaseException]]] = set()

    async def run(self, name: str, check: Callable[[], Awaitable[bool]]) -> bool:
        """``check()``'s answer, or False when it raised or ran past the timeout."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return bool(await check())
        except Exception as exc:
            if (name, type(exc)) not in self._seen:
                self._seen.add((name, type(exc)))
                log.warning("readiness check %s failed: %s: %s", name, type(exc).__name__, exc, exc_info=True)
            return False


def build_ops_app(
    service: str,
    checks: Mapping[str, Check],
    *,
    registry: CollectorRegistry = REGISTRY,
    extra_routes: list[web.RouteDef] | None = None,
    tasks: Callable[[], Mapping[str, Any]] | None = None,
    refresh: Sequence[Callable[[], Awaitable[None]]] = (),
) -> web.Application:
    """The ops app: ``/health``, ``/ready`` (every check in ``checks``) and ``/metrics``.

    ``tasks``: the state of the service's supervised background tasks, shown in ``/ready``'s
    body (:meth:`turnout.common.supervise.Supervisor.state`). ``refresh``: coroutines run before
    each ``/metrics`` answer (each bounded to 2 s), for gauges read from elsewhere on demand, such
    as :class:`turnout.common.metrics.QueueDepths`."""

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "service": service})

    runner = CheckRunner()

    async def ready(_: web.Request) -> web.Response:
        results: dict[str, bool] = {}
        for name, check in checks.items():
            results[name] = await runner.run(name, check)
        ok = all(results.values())
        body: dict[str, Any] = {"status": "ok" if ok else "unavailable", "checks": results}
        if tasks is not None:
            body["tasks"] = tasks()
        return web.json_response(body, status=200 if ok else 503)

    async def metrics(_: web.Request) -> web.Response:
        for fn in refresh:
            try:
                async with asyncio.timeout(2.0):
                    await fn()
            except Exception:
                log.warning("a metrics refresh failed; serving the last values", exc_info=True)
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.add_routes([web.get("/health", health), web.get("/ready", ready), web.get("/metrics", metrics)])
    if extra_routes:
        app.add_routes(extra_routes)
    return app


@asynccontextmanager
async def ops_server(app: web.Application, host: str, port: int) -> AsyncIterator[web.AppRunner]:
    """Serve ``app`` on ``host:port`` for the duration of the context."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("ops endpoints on http://%s:%d (/health /ready /metrics)", host, port)
    try:
        yield runner
    finally:
        await runner.cleanup()
