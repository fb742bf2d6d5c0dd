"""The sync worker: benchmark import jobs and the event consumer, on one arq worker.

Jobs (queue ``keys.sync_queue``, JSON payloads):

* ``import_benchmarks_file(path: str | None = None)`` — the file from ``sync.benchmarks_file``
  (or ``path``), on a schedule (``sync.benchmarks_every_s``, default daily), once at start-up
  and on demand (``enqueue_once(pool, keys.sync_queue, IMPORT_BENCHMARKS_FILE,
  job_id="import_benchmarks_file")``). The file is read by the ``local`` source's parser
  (:mod:`turnout.sync.sources.local_files`) and stored by the same run as every public source
  (:func:`turnout.sync.public.sync_source`: one matcher, one transaction, ``catalog_changed``
  when a score changed, its status in Redis under source ``sync.benchmarks_source``). An
  unreadable file fails the job: it retries with back-off and ends in ``dead_letters`` after
  ``sync.max_tries``.

* ``sync_benchmarks(source: str)`` — one public benchmark source (:mod:`turnout.sync.public`):
  fetch, match names, upsert in one transaction; retries and dead-letters on its own.
* ``sync_all_benchmarks()`` — on ``sync.public.every_s`` (default daily) and on demand
  (``POST /admin/sync-benchmarks``): one ``sync_benchmarks`` job per enabled source.

The event consumer (:mod:`turnout.sync.events`) starts in ``on_startup`` and is cancelled in
``on_shutdown``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arq import Worker
from arq.worker import func
from prometheus_client import REGISTRY, CollectorRegistry

from turnout.common.aio import cancel_and_wait
from turnout.common.arq import (
    CTX_KEY,
    IMPORT_BENCHMARKS_FILE,
    PRUNE_REQUEST_LOG,
    SYNC_ALL_BENCHMARKS,
    SYNC_BENCHMARKS,
    WorkerContext,
    context_of,
    enqueue_once,
    job,
    scheduled,
    worker_kwargs,
)
from turnout.common.db.session import make_engine, make_sessionmaker
from turnout.common.http import make_session
from turnout.common.supervise import Supervisor
from turnout.sync.events import EventConsumer
from turnout.sync.metrics import SyncMetrics
from turnout.sync.public import (
    SourceSyncResult,
    enqueue_sources,
    sync_source,
)
from turnout.sync.retention import PruneResult, prune
from turnout.sync.settings import SyncSettings
from turnout.sync.sources import LocalFilesOptions, LocalFilesSource, Source

log = logging.getLogger(__name__)


@dataclass(slots=True, kw_only=True)
class SyncContext(WorkerContext[SyncSettings]):
    """What the sync worker's jobs share: metrics, the event consumer and the benchmark sources."""

    metrics: SyncMetrics
    consumer: EventConsumer
    consumer_task: asyncio.Task[None] | None = None
    sources: dict[str, Source] = field(default_factory=dict)

    async def run_source(self, source: Source) -> SourceSyncResult:
        """One source run with this worker's connections and matching options."""
        return await sync_source(
            source,
            http=self.http,
            sessionmaker=self.sessionmaker,
            redis=self.redis,
            keys=self.settings.keys,
            options=self.settings.sync.public,
        )


async def build_context(settings: SyncSettings, redis: Any, *, registry: CollectorRegistry = REGISTRY) -> SyncContext:
    """Everything jobs share; close it with ``await ctx.exit_stack.aclose()``."""
    opts = settings.sync
    engine = make_engine(settings.database_url, connect_timeout_s=settings.db_connect_timeout_s, pool_size=4)
    sessionmaker = make_sessionmaker(engine)
    http = make_session(connect_timeout_s=5.0)
    metrics = SyncMetrics.create(registry)
    wctx = SyncContext(
        settings=settings,
        queue=settings.keys.sync_queue,
        engine=engine,
        sessionmaker=sessionmaker,
        redis=redis,
        http=http,
        policy=opts.retry_policy(),
        metrics=metrics,
        consumer=EventConsumer(
            redis_url=settings.redis_url,
            keys=settings.keys,
            sessionmaker=sessionmaker,
            metrics=metrics,
            group=opts.consumer_group,
            batch_size=opts.batch_size,
            block_ms=opts.block_ms,
            claim_idle_s=opts.claim_idle_s,
        ),
        sources=opts.public.build(),
    )
    wctx.exit_stack.push_async_callback(engine.dispose)
    wctx.exit_stack.push_async_callback(http.close)
    return wctx


async def import_file(wctx: SyncContext, path: Path) -> SourceSyncResult:
    """One run of the ``local`` source over ``path``, stored under ``sync.benchmarks_source``."""
    source = LocalFilesSource(LocalFilesOptions(paths=(path,), source_name=wctx.settings.sync.benchmarks_source))
    result = await wctx.run_source(source)
    for line in result.skip_reasons:
        log.warning("%s: skipped %s", path.name, line)
    m = wctx.metrics.benchmark_rows
    for outcome in ("matched", "unmatched", "skipped"):
        m.labels(outcome).inc(getattr(result, outcome))
    return result


@job(IMPORT_BENCHMARKS_FILE)
async def import_benchmarks_file(ctx: dict[str, Any], path: str | None = None) -> SourceSyncResult:
    """arq job: import the configured (or given) benchmarks file."""
    wctx = context_of(ctx, SyncContext)
    target = Path(path) if path else wctx.settings.sync.benchmarks_file
    if target is None:
        log.info("no benchmarks file configured (TURNOUT_SYNC__BENCHMARKS_FILE); nothing to import")
        wctx.metrics.benchmark_imports.labels("skipped").inc()
        return SourceSyncResult(source=wctx.settings.sync.benchmarks_source, outcome="skipped", error="no file")
    try:
        result = await import_file(wctx, target)
    except Exception:
        wctx.metrics.benchmark_imports.labels("error").inc()
        raise
    wctx.metrics.benchmark_imports.labels("ok").inc()
    return result


@job(SYNC_BENCHMARKS)
async def sync_benchmarks(ctx: dict[str, Any], source: str) -> SourceSyncResult:
    """arq job: one public benchmark source's run."""
    wctx = context_of(ctx, SyncContext)
    src = wctx.sources.get(source)
    if src is None:
        log.warning("sync_benchmarks: no enabled benchmark source named %r", source)
        return SourceSyncResult(source=source, outcome="skipped", error="not enabled")
    return await wctx.run_source(src)


@job(SYNC_ALL_BENCHMARKS)
async def sync_all_benchmarks(ctx: dict[str, Any]) -> dict[str, Any]:
    """arq job: queue a run of every enabled source."""
    wctx = context_of(ctx, SyncContext)
    enqueued = await enqueue_sources(wctx.redis, wctx.queue, list(wctx.sources))
    return {"sources": list(wctx.sources), "enqueued": enqueued}


@job(PRUNE_REQUEST_LOG)
async def prune_request_log(ctx: dict[str, Any]) -> dict[str, int]:
    """arq job: apply the retention policy."""
    wctx = context_of(ctx, SyncContext)
    result: PruneResult = await prune(wctx.sessionmaker, wctx.settings.sync.retention)
    return {"by_age": result.by_age, "by_count": result.by_count, "audit": result.audit}


def worker_settings(
    settings: SyncSettings,
    *,
    registry: CollectorRegistry = REGISTRY,
    supervisor: Supervisor | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Keyword arguments for :class:`arq.Worker` (``overrides`` win, e.g. ``burst=True``). The
    event consumer runs under ``supervisor`` (one of its own by default)."""
    opts = settings.sync
    sup = supervisor or Supervisor("sync", registry)

    async def on_startup(ctx: dict[str, Any]) -> None:
        wctx = await build_context(settings, ctx["redis"], registry=registry)
        ctx[CTX_KEY] = wctx
        if opts.consume_events:
            wctx.consumer_task = sup.start("event-consumer", wctx.consumer.run)
        if opts.benchmarks_at_startup and opts.benchmarks_file is not None:
            await enqueue_once(
                ctx["redis"], settings.keys.sync_queue, IMPORT_BENCHMARKS_FILE, job_id=IMPORT_BENCHMARKS_FILE
            )
        if opts.public.at_startup:
            await enqueue_once(ctx["redis"], settings.keys.sync_queue, SYNC_ALL_BENCHMARKS, job_id=SYNC_ALL_BENCHMARKS)
        log.info(
            "sync worker up: queue %s, events %s", settings.keys.sync_queue, "on" if opts.consume_events else "off"
        )

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        wctx = ctx.get(CTX_KEY)
        if not isinstance(wctx, SyncContext):
            return
        if wctx.consumer_task is not None:
            await cancel_and_wait([wctx.consumer_task])
        await wctx.exit_stack.aclose()

    cron_jobs = []
    if opts.benchmarks_on_schedule:
        cron_jobs.append(scheduled(import_benchmarks_file, IMPORT_BENCHMARKS_FILE, opts, opts.benchmarks_every_s))
    if opts.public.on_schedule:
        cron_jobs.append(scheduled(sync_all_benchmarks, SYNC_ALL_BENCHMARKS, opts, opts.public.every_s))
    if opts.retention.enabled:
        cron_jobs.append(scheduled(prune_request_log, PRUNE_REQUEST_LOG, opts, opts.retention.every_s))
    kwargs = worker_kwargs(
        queue=settings.keys.sync_queue,
        redis_url=settings.redis_url,
        opts=opts,
        functions=[
            func(import_benchmarks_file, name=IMPORT_BENCHMARKS_FILE, keep_result=0, max_tries=opts.max_tries),
            func(sync_benchmarks, name=SYNC_BENCHMARKS, keep_result=0, max_tries=opts.max_tries),
            func(sync_all_benchmarks, name=SYNC_ALL_BENCHMARKS, keep_result=0, max_tries=opts.max_tries),
            func(prune_request_log, name=PRUNE_REQUEST_LOG, keep_result=0, max_tries=opts.max_tries),
        ],
        cron_jobs=cron_jobs,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
    )
    kwargs.update(overrides)
    return kwargs


def build_worker(
    settings: SyncSettings,
    *,
    registry: CollectorRegistry = REGISTRY,
    supervisor: Supervisor | None = None,
    **overrides: Any,
) -> Worker:
    """The sync service's arq worker (the event consumer runs under ``supervisor``)."""
    return Worker(**worker_settings(settings, registry=registry, supervisor=supervisor, **overrides))


def consumer_check(worker: Worker) -> Any:
    """The ``/ready`` check that the event consumer runs (when it should)."""

    async def consumer_ok() -> bool:
        wctx = worker.ctx.get(CTX_KEY)
        if not isinstance(wctx, SyncContext):
            return False
        return not wctx.settings.sync.consume_events or wctx.consumer.running

    return consumer_ok
