"""The profiler's arq worker: settings → ``WorkerSettings``, the typed context, and the jobs.

Jobs (queue ``keys.profiler_queue``, JSON payloads):

* ``profile_model(model: str, force: bool = False)`` — one model's runtime profile
  (:mod:`turnout.profiler.profiling`): enqueued after every discovery for each model that is
  new, changed (digest/size) or not yet profiled with the current suite version, and on demand;
  job id ``profile:<model>``, its own retry policy (``profiler.profiling.*``).
* ``enqueue_profiles(model: str | None = None, force: bool = False)`` — enqueue ``profile_model``
  for every due model (or one); ``force`` profiles again even with the current suite version.
* ``discover_models(backend: str | None = None)`` — on a schedule (``profiler.discover_every_s``,
  default every minute, and once at start-up) and on demand. On demand, enqueue with
  ``turnout.common.arq.enqueue_once(pool, keys.profiler_queue, DISCOVER_MODELS,
  job_id="discover_models")`` (or ``job_id=f"discover_models:{backend}"``) so that a run already
  queued is not queued twice.

A backend that does not answer is an expected state: it is recorded (``backends.last_error``)
and the job still succeeds; the schedule tries it again. Failures of the job itself (Postgres or
Redis down) retry with back-off and end in ``dead_letters`` after ``profiler.max_tries``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from arq import Retry, Worker
from arq.worker import func
from prometheus_client import REGISTRY, CollectorRegistry
from redis.exceptions import RedisError

from turnout.common.arq import (
    CTX_KEY,
    DISCOVER_MODELS,
    ENQUEUE_PROFILES,
    PROFILE_MODEL,
    WorkerContext,
    context_of,
    enqueue_once,
    job,
    scheduled,
    worker_kwargs,
)
from turnout.common.backends.clients import BackendClient, client_for
from turnout.common.db.session import make_engine, make_sessionmaker
from turnout.common.errors import BackendError
from turnout.common.http import make_session
from turnout.common.keys import Keys
from turnout.profiler.discovery import (
    BackendDiscovery,
    DiscoveryResult,
    describe_models,
    known_models,
    publish_catalog_changed,
    record_backend_error,
    sweep,
    upsert_backend_models,
)
from turnout.profiler.grading import Grader
from turnout.profiler.metrics import ProfilerMetrics
from turnout.profiler.profiling import (
    ProfilingOptions,
    enqueue_profiles_job,
    make_judge,
    profile_model_job,
)
from turnout.profiler.settings import ProfilerSettings
from turnout.profiler.suite import Suite

log = logging.getLogger(__name__)


@dataclass(slots=True, kw_only=True)
class ProfilerContext(WorkerContext[ProfilerSettings]):
    """What the profiler's jobs share: backend clients, metrics, the suite and the grader."""

    clients: dict[str, BackendClient] = field(default_factory=dict)
    metrics: ProfilerMetrics
    suite: Suite
    grader: Grader

    @property
    def keys(self) -> Keys:
        """The run's Redis keys."""
        return self.settings.keys

    @property
    def profiling(self) -> ProfilingOptions:
        """The profiling options."""
        return self.settings.profiler.profiling


async def build_context(
    settings: ProfilerSettings, redis: Any, *, registry: CollectorRegistry = REGISTRY
) -> ProfilerContext:
    """Everything jobs share; close it with ``await ctx.exit_stack.aclose()``."""
    engine = make_engine(settings.database_url, connect_timeout_s=settings.db_connect_timeout_s, pool_size=4)
    http = make_session(connect_timeout_s=5.0)
    opts = settings.profiler
    wctx = ProfilerContext(
        settings=settings,
        queue=settings.keys.profiler_queue,
        engine=engine,
        sessionmaker=make_sessionmaker(engine),
        redis=redis,
        http=http,
        policy=opts.retry_policy(),
        clients={b.name: client_for(b, http, timeout_s=opts.backend_timeout_s) for b in settings.backends},
        metrics=ProfilerMetrics.create([b.name for b in settings.backends], registry),
        suite=opts.profiling.suite(),
        grader=Grader(judge=make_judge(opts.profiling, http)),
    )
    wctx.exit_stack.push_async_callback(engine.dispose)
    wctx.exit_stack.push_async_callback(http.close)
    return wctx


async def discover(wctx: ProfilerContext, backend: str | None = None) -> DiscoveryResult:
    """List every backend's models (or one's), update the catalog, and publish a change."""
    started = time.perf_counter()
    settings = wctx.settings
    if backend is not None and backend not in wctx.clients:
        log.warning("discover_models: no backend named %r is configured", backend)
        return DiscoveryResult(backends={backend: BackendDiscovery(outcome="error", error="not configured")})
    names = [backend] if backend is not None else list(wctx.clients)
    result = DiscoveryResult()
    for name in names:
        client = wctx.clients[name]
        cfg = client.config
        try:
            listed = await client.list_models()
        except Exception as exc:  # per-backend boundary: recorded, not raised; a bug shows its traceback
            error = f"{type(exc).__name__}: {exc}"
            log.warning("%s: listing models failed: %s", name, error, exc_info=not isinstance(exc, BackendError))
            changed = await record_backend_error(wctx.sessionmaker, cfg, error)
            result.backends[name] = BackendDiscovery(outcome="error", error=error, changed=changed)
            wctx.metrics.discoveries.labels(name, "error").inc()
            continue
        async with wctx.sessionmaker() as session:
            known = await known_models(session, name)
        described = await describe_models(client, listed, known, concurrency=settings.profiler.describe_concurrency)
        changed = await upsert_backend_models(wctx.sessionmaker, cfg, described)
        result.backends[name] = BackendDiscovery(outcome="ok", models=len(listed), changed=changed)
        wctx.metrics.discoveries.labels(name, "ok").inc()
        wctx.metrics.models_discovered.labels(name).set(len(listed))
        log.info("%s: %d model(s)%s", name, len(listed), " (catalog changed)" if changed else "")
    dropped_backends, dropped_models = await sweep(
        wctx.sessionmaker, configured=[b.name for b in settings.backends] if backend is None else None
    )
    result.deactivated_models = dropped_models
    result.changed = dropped_backends > 0 or dropped_models > 0 or any(b.changed for b in result.backends.values())
    if result.changed:
        await publish_catalog_changed(wctx.redis, settings.keys, "profiler")
        wctx.metrics.catalog_changes.inc()
        result.published = True
    result.duration_s = round(time.perf_counter() - started, 4)
    wctx.metrics.discovery_duration.observe(result.duration_s)
    if settings.profiler.profiling.enabled and settings.profiler.profiling.after_discovery:
        try:
            await enqueue_profiles_job(wctx)
        except (RedisError, OSError) as exc:  # discovery stands; the next run enqueues again
            log.warning("could not enqueue profiles after discovery: %s", exc)
    return result


@job(DISCOVER_MODELS)
async def discover_models(ctx: dict[str, Any], backend: str | None = None) -> DiscoveryResult:
    """arq job: :func:`discover`."""
    return await discover(context_of(ctx, ProfilerContext), backend)


@job(ENQUEUE_PROFILES)
async def enqueue_profiles(ctx: dict[str, Any], model: str | None = None, force: bool = False) -> dict[str, Any]:
    """arq job: queue profiles for one model or every model due."""
    return await enqueue_profiles_job(context_of(ctx, ProfilerContext), model=model, force=force)


async def profile_model(ctx: dict[str, Any], model: str, force: bool = False) -> dict[str, Any]:
    """Not wrapped in :func:`job`: profiling has its own timeout and retry policy."""
    wctx = context_of(ctx, ProfilerContext)
    try:
        result = await profile_model_job(
            wctx, model=model, force=force, job_try=int(ctx.get("job_try") or 1), job_id=ctx.get("job_id")
        )
    except Retry:
        raise
    except Exception:
        wctx.metrics.profiles.labels("error").inc()
        raise
    wctx.metrics.profiles.labels(str(result.get("status") or "skipped")).inc()
    if "duration_s" in result:
        wctx.metrics.profile_duration.observe(float(result["duration_s"]))
    return result


def worker_settings(
    settings: ProfilerSettings, *, registry: CollectorRegistry = REGISTRY, **overrides: Any
) -> dict[str, Any]:
    """Keyword arguments for :class:`arq.Worker` (``overrides`` win, e.g. ``burst=True``)."""
    opts = settings.profiler

    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx[CTX_KEY] = await build_context(settings, ctx["redis"], registry=registry)
        log.info("profiler worker up: %d backend(s), queue %s", len(settings.backends), settings.keys.profiler_queue)
        if opts.discover_at_startup:
            await enqueue_once(ctx["redis"], settings.keys.profiler_queue, DISCOVER_MODELS, job_id=DISCOVER_MODELS)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        wctx = ctx.get(CTX_KEY)
        if isinstance(wctx, ProfilerContext):
            await wctx.exit_stack.aclose()

    cron_jobs = []
    if opts.discover_on_schedule:
        cron_jobs.append(scheduled(discover_models, DISCOVER_MODELS, opts, opts.discover_every_s))
    kwargs = worker_kwargs(
        queue=settings.keys.profiler_queue,
        redis_url=settings.redis_url,
        opts=opts,
        functions=[
            func(discover_models, name=DISCOVER_MODELS, keep_result=0, max_tries=opts.max_tries),
            func(enqueue_profiles, name=ENQUEUE_PROFILES, keep_result=0, max_tries=opts.max_tries),
            func(
                profile_model,
                name=PROFILE_MODEL,
                keep_result=0,
                max_tries=opts.profiling.max_tries,
                timeout=opts.profiling.job_timeout_s + 30,
            ),
        ],
        cron_jobs=cron_jobs,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
    )
    kwargs.update(overrides)
    return kwargs


def build_worker(settings: ProfilerSettings, *, registry: CollectorRegistry = REGISTRY, **overrides: Any) -> Worker:
    """The profiler's arq worker."""
    return Worker(**worker_settings(settings, registry=registry, **overrides))
