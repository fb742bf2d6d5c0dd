"""Running an arq worker service so that it never stays dead.

* :func:`run_worker` runs a worker until SIGTERM/SIGINT. Its main loop is supervised
  (:class:`~turnout.common.supervise.Supervisor`): when Redis goes away arq's poll loop raises,
  and instead of the process exiting that is logged, counted in
  ``turnout_<svc>_task_restarts_total{task="arq-worker"}`` and restarted with jittered back-off
  (``on_startup`` runs once, see :func:`turnout.common.arq.worker_kwargs`; jobs already running
  go on; the pool reconnects by itself).
* :func:`prepare_schema` waits for Postgres with back-off instead of exiting when it is not up.
* :func:`worker_checks` are the ``/ready`` checks of a worker.
* :func:`serve_worker_service` is the whole life of a worker service (the profiler, sync):
  schema, ops endpoints with the queue depth, the supervised worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import warnings
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from arq import Worker
from prometheus_client import REGISTRY, CollectorRegistry, Gauge
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from turnout.common.arq import CTX_KEY, WorkerContext, WorkerOptions
from turnout.common.db.migrate import upgrade, wait_for_head
from turnout.common.links import Backoff
from turnout.common.metrics import QueueDepths
from turnout.common.ops import Check, build_ops_app, ops_server
from turnout.common.settings import CommonSettings
from turnout.common.supervise import Supervisor

log = logging.getLogger(__name__)


async def prepare_schema(settings: CommonSettings, *, wait_s: float) -> None:
    """Workers migrate at start (advisory-locked, so replicas may race) unless
    ``migrate_on_start`` is off; then they wait for someone else to have migrated. A Postgres
    that does not answer yet is waited for with back-off (logged), not a reason to exit."""
    backoff = Backoff(0.5, 10.0)
    while True:
        try:
            if settings.migrate_on_start:
                log.info("migrating the database to head")
                await upgrade(settings.database_url)
            else:
                await wait_for_head(settings.database_url, timeout_s=wait_s)
            return
        except (OSError, SQLAlchemyError) as exc:
            delay = backoff.next()
            log.warning("Postgres is not reachable (%s: %s); trying again in %.1fs", type(exc).__name__, exc, delay)
            await asyncio.sleep(delay)


def worker_checks(worker: Worker) -> dict[str, Callable[[], Awaitable[bool]]]:
    """``/ready`` checks for a worker: its context is built, Redis and Postgres answer."""

    def wctx() -> WorkerContext[Any] | None:
        w = worker.ctx.get(CTX_KEY)
        return w if isinstance(w, WorkerContext) else None

    async def redis_ok() -> bool:
        w = wctx()
        return w is not None and bool(await w.redis.ping())

    async def postgres_ok() -> bool:
        w = wctx()
        if w is None:
            return False
        async with w.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True

    return {"redis": redis_ok, "postgres": postgres_ok}


async def close_worker(worker: Worker) -> None:
    """``worker.close()`` (cancels running jobs, runs ``on_shutdown``, closes the pool), minus the
    redis-py deprecation warning arq triggers by calling ``close()`` instead of ``aclose()``.

    The running jobs are cancelled and waited for here first: arq's ``close()`` gathers them
    without ``return_exceptions``, so a job cancelled outside its own function (in ``on_job_end``
    or while its result is written) made ``close()`` raise ``CancelledError`` before
    ``on_shutdown`` and the pool's close — a SIGTERM'd worker then left its engine and Redis
    connections open and ended in an error (``test_arq_close.py``). A job's own error is logged,
    as arq's poll loop would have raised it."""
    jobs = [t for t in worker.tasks.values() if not t.done()]
    for t in jobs:
        t.cancel()
    for job_id, outcome in zip(
        list(worker.tasks), await asyncio.gather(*worker.tasks.values(), return_exceptions=True), strict=True
    ):
        if isinstance(outcome, Exception):
            log.error("arq job %s ended with %s: %s", job_id, type(outcome).__name__, outcome)
    worker.tasks.clear()  # all done: close() has nothing left to gather
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Call to deprecated close", category=DeprecationWarning)
        await worker.close()


async def run_worker(
    worker: Worker,
    *,
    stop: asyncio.Event | None = None,
    service: str = "worker",
    registry: CollectorRegistry = REGISTRY,
    supervisor: Supervisor | None = None,
) -> None:
    """Run ``worker`` (built with ``handle_signals=False``, ``on_startup`` from
    :func:`worker_kwargs`) until SIGTERM/SIGINT or ``stop``, then close it (in-flight jobs are
    cancelled and retried later; ``on_shutdown`` runs). Its main loop is supervised: losing Redis
    restarts it with back-off instead of ending the process (see the module docstring)."""
    stop = stop or asyncio.Event()
    sup = supervisor or Supervisor(service, registry)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    main = sup.start("arq-worker", worker.async_run)
    stopper = asyncio.create_task(stop.wait(), name="stop-signal")
    try:
        done, _ = await asyncio.wait({main, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if main in done:
            main.result()  # a burst worker that finished
    finally:
        stopper.cancel()
        await close_worker(worker)  # cancels the main task and running jobs, then on_shutdown
        main.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await main
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


async def serve_worker_service(
    service: str,
    settings: CommonSettings,
    opts: WorkerOptions,
    build: Callable[[Supervisor], Worker],
    *,
    queue: str,
    queue_gauge: Gauge,
    checks: Callable[[Worker], Mapping[str, Check]] | None = None,
) -> None:
    """Run a worker service until SIGTERM/SIGINT: get the schema ready (:func:`prepare_schema`),
    build its worker with ``build(supervisor)``, serve ``/health``, ``/ready`` (the
    :func:`worker_checks` plus ``checks(worker)``) and ``/metrics`` (with ``queue``'s depth in
    ``queue_gauge``) on ``opts.ops_host:ops_port``, and run the worker supervised."""
    await prepare_schema(settings, wait_s=opts.schema_wait_s)
    sup = Supervisor(service)
    worker = build(sup)
    depths = QueueDepths(queue_gauge, lambda: worker.pool, arq={service: queue})
    ready = {**worker_checks(worker), **(checks(worker) if checks else {})}
    ops = build_ops_app(service, ready, tasks=sup.state, refresh=[depths.refresh])
    async with ops_server(ops, opts.ops_host, opts.ops_port):
        await run_worker(worker, supervisor=sup)


__all__ = ["close_worker", "prepare_schema", "run_worker", "serve_worker_service", "worker_checks"]
