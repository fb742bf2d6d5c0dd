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
* **Running.** :func:`run_worker` runs a worker with the ops server beside it until SIGTERM/SIGINT.

Job names are declared here (:data:`DISCOVER_MODELS`, :data:`IMPORT_BENCHMARKS_FILE`) so that
other services can enqueue without importing a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import warnings
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar, cast

import aiohttp
import orjson
from arq import ArqRedis, Retry, Worker, create_pool
from arq.connections import RedisSettings
from arq.jobs import Job
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from turnout.common.db.migrate import upgrade, wait_for_head
from turnout.common.db.models import DeadLetter
from turnout.common.logging import request_id_var
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
    settings = RedisSettings.from_dsn(redis_url)
    settings.conn_timeout = conn_timeout_s
    settings.conn_retries = conn_retries
    return settings


async def create_job_pool(redis_url: str, queue_name: str) -> ArqRedis:
    """A pool that enqueues JSON jobs onto ``queue_name`` (close it with ``aclose()``)."""
    return await create_pool(
        redis_settings(redis_url), job_serializer=dumps, job_deserializer=loads, default_queue_name=queue_name
    )


async def enqueue_once(pool: ArqRedis, queue_name: str, function: str, *, job_id: str, **kwargs: Any) -> Job | None:
    """Enqueue unless a job with ``job_id`` is already queued or running (then ``None``)."""
    return await pool.enqueue_job(function, _job_id=job_id, _queue_name=queue_name, **kwargs)


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

    ops_host: str = "0.0.0.0"
    ops_port: int = Field(default=0, ge=0, le=65535)
    max_jobs: int = Field(default=4, ge=1, le=100, description="Jobs run concurrently by one worker")
    max_tries: int = Field(default=5, ge=1, le=50, description="Tries before a job ends in dead_letters")
    retry_base_s: float = Field(default=2.0, gt=0, description="Back-off before the 2nd try; doubles each try")
    retry_max_s: float = Field(default=300.0, gt=0, description="Back-off cap")
    job_timeout_s: float = Field(default=300.0, gt=0, description="One try of one job")
    poll_delay_s: float = Field(default=0.5, gt=0)

    def retry_policy(self) -> RetryPolicy:
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
    retry budget and timeouts, signals left to the service's own loop."""
    return {
        "functions": functions,
        "cron_jobs": cron_jobs,
        "queue_name": queue,
        "redis_settings": redis_settings(redis_url),
        "on_startup": on_startup,
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
                except Exception:
                    log.exception("could not record the dead letter of %s", name)
                raise
            finally:
                request_id_var.reset(token)

        return cast(JobFn, run)

    return wrap


# --- running ---------------------------------------------------------------------------------


async def prepare_schema(settings: CommonSettings, *, wait_s: float) -> None:
    """Workers migrate at start (advisory-locked, so replicas may race) unless
    ``migrate_on_start`` is off; then they wait for someone else to have migrated."""
    if settings.migrate_on_start:
        log.info("migrating the database to head")
        await upgrade(settings.database_url)
    else:
        await wait_for_head(settings.database_url, timeout_s=wait_s)


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
    redis-py deprecation warning arq triggers by calling ``close()`` instead of ``aclose()``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Call to deprecated close", category=DeprecationWarning)
        await worker.close()


async def run_worker(worker: Worker, *, stop: asyncio.Event | None = None) -> None:
    """Run ``worker`` (built with ``handle_signals=False``) until SIGTERM/SIGINT or ``stop``,
    then close it (in-flight jobs are cancelled and retried later; ``on_shutdown`` runs)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    main = asyncio.create_task(worker.async_run(), name="arq-worker")
    stopper = asyncio.create_task(stop.wait(), name="stop-signal")
    try:
        done, _ = await asyncio.wait({main, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if main in done:
            main.result()  # a crashed worker surfaces here
    finally:
        stopper.cancel()
        await close_worker(worker)  # cancels the main task and running jobs, then on_shutdown
        with contextlib.suppress(asyncio.CancelledError):
            await main
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


__all__ = [
    "worker_kwargs",
    "CTX_KEY",
    "CronInterval",
    "DISCOVER_MODELS",
    "IMPORT_BENCHMARKS_FILE",
    "RetryPolicy",
    "WorkerContext",
    "WorkerOptions",
    "check_interval",
    "close_worker",
    "context_of",
    "create_job_pool",
    "dumps",
    "enqueue_once",
    "every",
    "job",
    "loads",
    "prepare_schema",
    "record_dead_letter",
    "redis_settings",
    "run_worker",
    "worker_checks",
]
