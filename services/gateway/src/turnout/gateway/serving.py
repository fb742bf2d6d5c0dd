"""How the gateway process serves (``python -m turnout.gateway`` calls :func:`serve` once its
``--help`` has passed): wait for the schema, tune the garbage collector, run uvicorn + uvloop
with one worker (draining on SIGTERM) or several (Prometheus multi-process mode), and /metrics
on its own port when asked."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import tempfile

import uvicorn
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

from turnout.common.cli import load_settings
from turnout.common.db.migrate import wait_for_head
from turnout.common.db.session import DB_UNAVAILABLE
from turnout.gateway.app import create_app
from turnout.gateway.drain import Drain, DrainingServer
from turnout.gateway.header_guard import PROTOCOL, guarded_protocol
from turnout.gateway.settings import GatewaySettings

log = logging.getLogger("turnout.gateway")


GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """The gateway process's garbage-collector settings: a process-wide choice, made here and
    only here (never in the app's lifespan, which tests and embedders run in their own process).

    * ``gc.freeze()`` after the app is built: what exists now (modules, schemas, routes) lives as
      long as the process, so a full collection only walks per-request garbage (it walked ~1M
      startup objects: ~80 ms p99 stalls).
    * The young generation is collected every 10,000 net container allocations instead of 700:
      each collection walks every object of the requests in flight, so at 16 concurrent requests
      the default spent ~35 µs of CPU per request (~7 %) re-walking them; garbage cycles (rare
      here: reference counting frees the rest) live a little longer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def worker_app() -> object:
    """App factory for ``workers > 1``: each worker process builds its settings from the same
    environment as the parent (uvicorn imports the app by name in each worker)."""
    settings = load_settings(GatewaySettings, "gateway")
    app = create_app(settings, registry=REGISTRY, multiprocess=True)
    tune_gc()
    return app


_NOT_READY: tuple[type[BaseException], ...] = (*DB_UNAVAILABLE, RuntimeError)  # RuntimeError: schema behind


async def _wait_schema(settings: GatewaySettings) -> None:
    if settings.gateway.schema_wait_s <= 0:
        return
    try:
        await wait_for_head(settings.database_url, timeout_s=settings.gateway.schema_wait_s)
    except _NOT_READY as exc:  # Postgres down, slow or behind: serve anyway
        log.warning("database schema not ready yet (%s); serving anyway, /ready reports it", exc)


def serve(settings: GatewaySettings) -> None:
    """Serve the gateway with ``settings`` until SIGTERM/SIGINT (one worker drains first)."""
    opts = settings.gateway
    asyncio.run(_wait_schema(settings))
    drain = Drain(prestop_delay_s=opts.prestop_delay_s, grace_s=opts.drain_grace_s)
    common = {
        "host": opts.host,
        "port": opts.port,
        "loop": "uvloop",
        "http": PROTOCOL,  # uvicorn's httptools protocol with header size/time bounds (header_guard.py)
        "lifespan": "on",
        "access_log": opts.access_log,
        "log_config": None,
        "timeout_graceful_shutdown": drain.server_timeout_s,
        "server_header": False,
    }
    log.info("gateway listening on http://%s:%d (%d worker(s))", opts.host, opts.port, opts.workers)
    if opts.workers == 1:
        if opts.metrics_port is not None:
            _serve_metrics(opts.host, opts.metrics_port, multiprocess=False)
        app = create_app(settings, registry=REGISTRY, drain=drain)
        tune_gc()
        common["http"] = guarded_protocol(opts.max_header_bytes, opts.header_timeout_s)
        DrainingServer(uvicorn.Config(app, **common), drain).run()  # type: ignore[arg-type]
        return
    # several workers: Prometheus multi-process mode, one shared directory per run. uvicorn's own
    # supervisor runs them, so SIGTERM stops them at once (no pre-stop phase): run one worker per
    # pod and scale pods instead where draining matters.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="turnout-gateway-metrics-"))
    if opts.metrics_port is not None:
        _serve_metrics(opts.host, opts.metrics_port, multiprocess=True)
    uvicorn.run("turnout.gateway.serving:worker_app", factory=True, workers=opts.workers, **common)  # type: ignore[arg-type]


def _serve_metrics(host: str, port: int, *, multiprocess: bool) -> None:
    """/metrics on its own port (a daemon thread of prometheus_client's server)."""
    registry = REGISTRY
    if multiprocess:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    start_http_server(port, addr=host, registry=registry)
    log.info("metrics on http://%s:%d/metrics", host, port)
