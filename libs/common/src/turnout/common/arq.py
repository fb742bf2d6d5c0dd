"""Shared arq plumbing for the worker services (profiler, sync).

* **JSON, not pickle.** :func:`dumps` / :func:`loads` are the job serializer and deserializer of
  every worker and every pool that enqueues to one. Pydantic models become their JSON dump,
  exceptions in job results become ``{"error": type, "message": str}``.
* **A typed context.** ``on_startup`` builds one :class:`WorkerContext` (or a subclass) and stores
  it under ``ctx[CTX_KEY]``; jobs read it back with :func:`context_of`, never by string keys.
* **Retries and dead letters.** :func:`job` wraps a job function: each try runs under a timeout;
  a failure raises ``arq.Retry`` with exponential back-off (:class:`RetryPolicy`) until the last
  try, which writes a ``dead_letters`` row and re-raises.
* **Schedules.** :func:`every` turns an interval in seconds into arq ``cron`` fields.
* **On demand.** :func:`enqueue_once` enqueues with a ``_job_id`` so that a job already queued or
  running is not queued twice (jobs run with ``keep_result=0``, so the id frees up once it ends).
* **Running** (supervised, reconnecting) is in :mod:`turnout.common.arq_running`.

Job names are declared here (:data:`DISCOVER_MODELS`, :data:`IMPORT_BENCHMARKS_FILE`) so that
other services can enqueue without importing a worker.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar, cast

import aiohttp
import orjson
from arq import ArqRedis, Retry, create_pool, cron
from arq.connections import RedisSettings
from arq.cron import CronJob
from arq.jobs import Job
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from turnout.common.db.models import DeadLetter
from turnout.common.links import DEFAULT_LINK, LinkOptions
from turnout.common.logging import request_id_var
from turnout.common.metrics import dead_letters
from turnout.common.settings import CommonSettings

log = logging.getLogger(__name__)

CTX_KEY = "turnout"
"""Where ``on_startup`` stores the typed :class:`WorkerContext` in arq's ``ctx`` dict."""

DISCOVER_MODELS = "discover_models"
"""Profiler job (queue ``keys.profiler_queue``): ``discover_models(backend: str | None = None)``."""
IMPORT_BENCHMARKS_FILE = "import_benchmarks_file"
"""Sync job (queue ``keys.sync_queue``): ``import_benchmarks_file(path: str | None = None)``."""
PROFILE_MODEL = "profile_model"
"""Profiler job: ``profile_model(model: str, force: bool = False)``; job id ``profile:<model>``."""
ENQUEUE_PROFILES = "enqueue_profiles"
"""Profiler job: ``enqueue_profiles(model: str | None = None, force: bool = False)``."""
SYNC_BENCHMARKS = "sync_benchmarks"
"""Sync job: ``sync_benchmarks(source: str)``, one public source; job id ``sync_benchmarks:<source>``."""
SYNC_ALL_BENCHMARKS = "sync_all_benchmarks"
"""Sync job: ``sync_all_benchmarks()`` enqueues ``sync_benchmarks`` for every enabled source."""
PRUNE_REQUEST_LOG = "prune_request_log"
"""Sync job: ``prune_request_log()`` applies the retention of routing decisions and the audit log."""


# --- serialisation ---------------------------------------------------------------------------


def _default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, BaseException):
        return {"error": type(obj).__name__, "message": str(obj)}
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, timedelta):
        return obj.total_seconds()
    raise TypeError(f"cannot serialise {type(obj).__name__} as JSON")


def dumps(obj: Any) -> bytes:
    """arq ``job_serializer``: JSON via orjson."""
    return orjson.dumps(obj, default=_default, option=orjson.OPT_NON_STR_KEYS)


def loads(raw: bytes) -> Any:
    """arq ``job_deserializer``."""
    return orjson.loads(raw)


def redis_settings(redis_url: str, *, conn_timeout_s: int = 2, conn_retries: int = 5) -> RedisSettings:
    """arq's connection settings for ``redis_url``, with a bounded connect timeout and retries."""
    settings = RedisSettings.from_dsn(redis_url)
    settings.conn_timeout = conn_timeout_s
    settings.conn_retries = conn_retries
    return settings


def harden_pool(pool: ArqRedis, opts: LinkOptions = DEFAULT_LINK) -> ArqRedis:
    """The bounds of :func:`turnout.common.links.make_redis` on a pool arq built: arq's
    ``RedisSettings`` has no socket timeout or keepalive, so they go into the pool's connection
    arguments (``ConnectionPool.connection_kwargs``, which every new connection is built from);
    connections already open are closed so that they reopen with them."""
    pool.connection_pool.connection_kwargs.update(
        socket_timeout=opts.command_timeout_s,
        socket_keepalive=True,
        socket_keepalive_options=opts.keepalive_options(),
        health_check_interval=opts.health_check_s,
    )
    if "path" in pool.connection_pool.connection_kwargs:  # a unix socket: no TCP options
        for key in ("socket_keepalive", "socket_keepalive_options"):
            pool.connection_pool.connection_kwargs.pop(key)
    return pool


async def create_job_pool(redis_url: str, queue_name: str) -> ArqRedis:
    """A pool that enqueues JSON jobs onto ``queue_name`` (close it with ``aclose()``)."""
    pool = await create_pool(
        redis_settings(redis_url), job_serializer=dumps, job_deserializer=loads, default_queue_name=queue_name
    )
    await pool.connection_pool.disconnect()
    return harden_pool(pool)


def queued_job_id(queue_name: str, job_id: str) -> str:
    """The id a job is queued under: ``<queue>:<job_id>``.

    arq keeps a job's keys under fixed prefixes whatever its queue (``arq:job:<id>``,
    ``arq:in-progress:<id>``, ``arq:retry:<id>``, ``arq:result:<id>``), so a bare id such as
    ``sync_all_benchmarks`` is one key for every stack on a Redis server: a job another stack left
    queued (or a stopped one never ran) made this stack's enqueue a silent duplicate for up to a
    day. The queue name starts with the stack's key prefix, so this id is the stack's own."""
    return f"{queue_name}:{job_id}"


async def enqueue_once(
    pool: ArqRedis, queue_name: str, function: str, *args: Any, job_id: str, **kwargs: Any
) -> Job | None:
    """Enqueue unless a job with ``job_id`` is already queued or running on this queue (then
    ``None``); the id arq sees is :func:`queued_job_id`."""
    return await pool.enqueue_job(
        function, *args, _job_id=queued_job_id(queue_name, job_id), _queue_name=queue_name, **kwargs
    )


# --- schedules -------------------------------------------------------------------------------


def every(seconds: int) -> dict[str, set[int]]:
    """arq ``cron`` fields for "every ``seconds``", aligned to the clock.

    Supported: divisors of a minute (``every(15)``), whole minutes dividing an hour
    (``every(300)``) and whole hours dividing a day (``every(86400)`` = daily at 00:00).
    """
    if seconds <= 0:
        raise ValueError("interval must be positive")
    if seconds < 60 and 60 % seconds == 0:
        return {"second": set(range(0, 60, seconds))}
    if seconds == 60:
        return {"second": {0}}
    if seconds % 60 == 0 and seconds < 3600 and 60 % (seconds // 60) == 0:
        return {"minute": set(range(0, 60, seconds // 60)), "second": {0}}
    if seconds % 3600 == 0 and 24 % (seconds // 3600) == 0:
        return {"hour": set(range(0, 24, seconds // 3600)), "minute": {0}, "second": {0}}
    raise ValueError(
        f"interval {seconds}s does not divide a minute, an hour or a day evenly "
        "(use e.g. 15, 30, 60, 300, 900, 3600, 21600, 86400)"
    )


def check_interval(seconds: int) -> int:
    """Fail at start-up (settings validation) on an interval :func:`every` cannot schedule."""
    every(seconds)
    return seconds


CronInterval = Annotated[int, Field(gt=0), AfterValidator(check_interval)]
"""An interval in seconds that :func:`every` can schedule, for settings fields."""


# --- options, context ------------------------------------------------------------------------


class WorkerOptions(BaseModel):
    """Options every worker service shares (nested under its own name, e.g. ``TURNOUT_SYNC__MAX_TRIES``)."""

    model_config = ConfigDict(extra="forbid")

    ops_host: str = "127.0.0.1"
    ops_port: int = Field(default=0, ge=0, le=65535)
    max_jobs: int = Field(default=4, ge=1, le=100, description="Jobs run concurrently by one worker")
    max_tries: int = Field(default=5, ge=1, le=50, description="Tries before a job ends in dead_letters")
    retry_base_s: float = Field(default=2.0, gt=0, description="Back-off before the 2nd try; doubles each try")
    retry_max_s: float = Field(default=300.0, gt=0, description="Back-off cap")
    job_timeout_s: float = Field(default=300.0, gt=0, description="One try of one job")
    poll_delay_s: float = Field(default=0.5, gt=0)
    schema_wait_s: float = Field(default=120.0, ge=0, description="Without migrate_on_start: wait this long for it")

    def retry_policy(self) -> RetryPolicy:
        """The job retry policy these options describe."""
        return RetryPolicy(
            max_tries=self.max_tries, base_s=self.retry_base_s, max_s=self.retry_max_s, timeout_s=self.job_timeout_s
        )


S = TypeVar("S", bound=CommonSettings)


@dataclass(slots=True, kw_only=True)
class WorkerContext(Generic[S]):
    """What every job of a worker process shares, built once in ``on_startup``."""

    settings: S
    queue: str
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: ArqRedis
    http: aiohttp.ClientSession
    policy: RetryPolicy
    exit_stack: AsyncExitStack = field(default_factory=AsyncExitStack)


C = TypeVar("C", bound=WorkerContext[Any])


def scheduled(fn: Any, name: str, opts: WorkerOptions, every_s: int) -> CronJob:
    """A cron entry (``cron:<name>``) running ``fn`` every ``every_s`` under the worker's retries,
    with the job timeout plus 5 s of slack."""
    return cron(
        fn,
        name=f"cron:{name}",
        max_tries=opts.max_tries,
        timeout=opts.job_timeout_s + 5,
        **every(every_s),  # type: ignore[arg-type]
    )


def worker_kwargs(
    *,
    queue: str,
    redis_url: str,
    opts: WorkerOptions,
    functions: list[Any],
    cron_jobs: list[Any],
    on_startup: Callable[[dict[str, Any]], Awaitable[None]],
    on_shutdown: Callable[[dict[str, Any]], Awaitable[None]],
) -> dict[str, Any]:
    """Keyword arguments for :class:`arq.Worker` every worker service shares: JSON jobs, our
    retry budget and timeouts, signals left to the service's own loop, a hardened pool
    (:func:`harden_pool`), and an ``on_startup`` that runs once even when the worker's main loop
    is restarted after losing Redis (:func:`run_worker`)."""
    started = False

    async def startup_once(ctx: dict[str, Any]) -> None:
        nonlocal started
        if started:
            return
        await ctx["redis"].connection_pool.disconnect()
        harden_pool(ctx["redis"])
        await on_startup(ctx)
        started = True

    return {
        "functions": functions,
        "cron_jobs": cron_jobs,
        "queue_name": queue,
        "redis_settings": redis_settings(redis_url),
        "on_startup": startup_once,
        "on_shutdown": on_shutdown,
        "job_serializer": dumps,
        "job_deserializer": loads,
        "max_jobs": opts.max_jobs,
        "job_timeout": opts.job_timeout_s + 5,
        "max_tries": opts.max_tries,
        "poll_delay": opts.poll_delay_s,
        "handle_signals": False,
        "health_check_interval": 60,
    }


def context_of(ctx: dict[str, Any], cls: type[C]) -> C:
    """The typed worker context that ``on_startup`` stored in arq's ``ctx``; raises if it is missing."""
    wctx = ctx.get(CTX_KEY)
    if not isinstance(wctx, cls):
        raise RuntimeError(f"arq ctx has no {cls.__name__}; was on_startup run?")
    return wctx


# --- retries and dead letters ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_tries: int = 5
    base_s: float = 2.0
    max_s: float = 300.0
    timeout_s: float = 300.0

    def delay_s(self, job_try: int) -> float:
        """Back-off before try ``job_try + 1``: base, 2*base, 4*base … capped."""
        return float(min(self.max_s, self.base_s * 2 ** max(job_try - 1, 0)))


async def record_dead_letter(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    queue: str,
    job: str,
    payload: dict[str, Any],
    error: str,
    attempts: int,
) -> None:
    """Store a job that failed for good in the dead-letter table (its payload, error and tries)."""
    async with sessionmaker() as session, session.begin():
        session.add(
            DeadLetter(queue=queue, job=job, payload=loads(dumps(payload)), error=error[:10_000], attempts=attempts)
        )


JobFn = TypeVar("JobFn", bound=Callable[..., Awaitable[Any]])


def job(name: str) -> Callable[[JobFn], JobFn]:
    """Wrap an arq job: one try under the policy's timeout; failures retry with back-off, and the
    last try records a dead letter before the failure propagates.

    The wrapped function is called as ``fn(ctx, *args, **kwargs)`` exactly like arq calls it;
    ``arq.Retry`` raised by the job itself passes through untouched. A ``request_id`` kwarg (the
    enqueuer's request id) is taken out of the job's kwargs and set on the logging context.
    """

    def wrap(fn: JobFn) -> JobFn:
        @functools.wraps(fn)
        async def run(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            wctx = context_of(ctx, WorkerContext)
            policy = wctx.policy
            job_try = int(ctx.get("job_try") or 1)
            request_id = kwargs.pop("request_id", None)
            token = request_id_var.set(request_id or ctx.get("job_id"))
            try:
                async with asyncio.timeout(policy.timeout_s):
                    return await fn(ctx, *args, **kwargs)
            except (Retry, asyncio.CancelledError):
                raise
            except Exception as exc:  # the job's boundary: retried with back-off, then a dead letter
                error = f"{type(exc).__name__}: {exc}"
                if job_try < policy.max_tries:
                    delay = policy.delay_s(job_try)
                    log.warning(
                        "%s try %d/%d failed (%s); retrying in %.1fs",
                        name,
                        job_try,
                        policy.max_tries,
                        error,
                        delay,
                        exc_info=job_try == 1,  # the traceback once, with the first failure
                    )
                    raise Retry(defer=delay) from exc
                log.error(
                    "%s failed %d times (%s); recording a dead letter", name, job_try, error, exc_info=job_try == 1
                )
                payload = {"args": list(args), "kwargs": kwargs, "job_id": ctx.get("job_id")}
                if request_id:
                    payload["request_id"] = request_id
                try:
                    await record_dead_letter(
                        wctx.sessionmaker, queue=wctx.queue, job=name, payload=payload, error=error, attempts=job_try
                    )
                    dead_letters().labels(name).inc()
                except Exception:
                    log.exception("could not record the dead letter of %s", name)
                raise
            finally:
                request_id_var.reset(token)

        return cast(JobFn, run)

    return wrap


__all__ = [
    "worker_kwargs",
    "CTX_KEY",
    "CronInterval",
    "PRUNE_REQUEST_LOG",
    "DISCOVER_MODELS",
    "IMPORT_BENCHMARKS_FILE",
    "RetryPolicy",
    "WorkerContext",
    "WorkerOptions",
    "check_interval",
    "harden_pool",
    "context_of",
    "create_job_pool",
    "dumps",
    "enqueue_once",
    "queued_job_id",
    "every",
    "job",
    "loads",
    "record_dead_letter",
    "redis_settings",
]
