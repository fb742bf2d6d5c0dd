"""Profiling as arq jobs: which models are due, one model's profile end to end, progress in Redis.

* :func:`due_targets` — active models with an active deployment that have no profile for the
  current suite version, whose deployment digest or size changed since their profile, or whose
  last profile failed more than ``failed_retry_after_s`` ago. ``force`` makes every model due.
  Embedding-only models are never profiled (the suite is chat).
* :func:`enqueue_due` — one ``profile_model`` job per due model, deduplicated by job id
  (``profile:<model>``), so discovery can call it after every run.
* :func:`profile_one` — the job's body: take a slot on the backend and on its GPU host (Redis
  leases, so every worker process shares the bounds), note whether the model was already
  loaded, run the suite (:class:`ProfileRunner`), read the VRAM the backend reports
  (``/api/ps``), unload the model unless it was loaded before or is pinned, upsert one
  ``profiles`` row per category, publish ``catalog_changed``. Progress goes to Redis as it
  happens (the gateway's ``GET /admin/profiling`` reads it).

A warm-up failure (backend down, model cannot load) raises :class:`ProfilingFailed`, so the job
retries with back-off; the last try stores the failed profile (no scores, the error in
``details``) before the dead letter is written. Prompt-level timeouts and errors never fail the
job: they are part of the profile.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import orjson
from arq import Retry
from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from turnout.common.arq import PROFILE_MODEL, RetryPolicy, enqueue_once, record_dead_letter
from turnout.common.backends.clients import BackendClient
from turnout.common.db.models import Backend, Deployment, Model, Profile
from turnout.common.db.session import DB_UNAVAILABLE
from turnout.common.errors import BackendError
from turnout.common.keys import Keys
from turnout.common.vram_lock import HostLock, reserve_pending
from turnout.profiler.chat import BackendChat
from turnout.profiler.errors import ProfilingFailed
from turnout.profiler.grading import Grader
from turnout.profiler.judge import JudgeOptions, LLMJudge
from turnout.profiler.runner import ModelUnderTest, ProfileResult, ProfileRunner, ProgressEvent, RunnerOptions
from turnout.profiler.suite import Suite, load_suite

log = logging.getLogger(__name__)

PROFILE_COLUMNS = (
    "score",
    "n_prompts",
    "grader",
    "ttft_ms",
    "tokens_per_s",
    "prefill_tokens_per_s",
    "load_ms",
    "vram_bytes",
    "errors",
    "timeouts",
    "details",
)


class ProfilingOptions(BaseModel):
    """``TURNOUT_PROFILER__PROFILING__*``."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Profile models at all")
    after_discovery: bool = Field(default=True, description="Enqueue due models after every discovery run")
    suite_path: Path | None = Field(default=None, description="A suite file instead of the shipped one")
    categories: tuple[str, ...] = Field(default=(), description="Only these suite categories (empty: all)")
    per_backend: int = Field(default=1, ge=1, le=64, description="Models profiled at once on one backend")
    per_host: int = Field(default=1, ge=1, le=64, description="Models profiled at once on one GPU host")
    slot_lease_s: float = Field(default=3900.0, gt=0, description="A slot is freed after this even if a worker died")
    slot_wait_s: float = Field(default=1800.0, ge=0, description="Wait this long for a slot, then retry later")
    unload_after: bool = Field(default=True, description="Unload after profiling unless pinned or loaded before")
    vram_lock: bool = Field(
        default=True, description="Hold the host's VRAM lock while a model loads (the scorer's planner waits)"
    )
    vram_lock_wait_s: float = Field(default=120.0, ge=0, description="Wait this long for it, then retry later")
    vram_lock_ttl_s: float = Field(default=30.0, gt=0, description="Lock expiry, extended while the load runs")
    pinned: tuple[str, ...] = Field(default=(), description="Globs of models never unloaded")
    failed_retry_after_s: float = Field(default=21600.0, ge=0, description="Profile a failed model again after")
    job_timeout_s: float = Field(default=3600.0, gt=0, description="One profiling try of one model")
    max_tries: int = Field(default=3, ge=1, le=20)
    retry_base_s: float = Field(default=60.0, gt=0)
    progress_ttl_s: int = Field(default=3600, ge=60)
    judge: JudgeOptions = Field(default_factory=JudgeOptions)
    runner: RunnerOptions = Field(default_factory=RunnerOptions)

    def suite(self) -> Suite:
        """The profiling suite, narrowed to ``categories`` when set."""
        suite = load_suite(self.suite_path)
        return suite.select(set(self.categories)) if self.categories else suite


@dataclass(frozen=True, slots=True)
class ProfileTarget:
    """What one profile job profiles: the model, its deployment on a backend and host."""

    model_id: int
    model: str
    backend: str
    host: str
    upstream: str
    digest: str | None
    size_bytes: int | None
    params_b: float | None
    context_length: int | None
    reason: str


# --- which models are due --------------------------------------------------------------------


async def due_targets(
    session: AsyncSession,
    suite_version: str,
    *,
    model: str | None = None,
    force: bool = False,
    failed_retry_after_s: float = 21600.0,
    backends: Sequence[str] | None = None,
) -> list[ProfileTarget]:
    """Models to profile (one deployment each: the first configured backend that serves it)."""
    q = (
        select(
            Model.id,
            Model.name,
            Model.size_bytes,
            Model.params_b,
            Model.context_length,
            Model.capabilities,
            Backend.name,
            Backend.host,
            Deployment.upstream_name,
            Deployment.digest,
        )
        .join(Deployment, Deployment.model_id == Model.id)
        .join(Backend, Backend.id == Deployment.backend_id)
        .where(Model.active, Deployment.active, Backend.active)
        .order_by(Model.name, Backend.name)
    )
    if model is not None:
        q = q.where(Model.name == model)
    if backends is not None:
        q = q.where(Backend.name.in_(list(backends)))
    rows = (await session.execute(q)).all()
    ids = list({r[0] for r in rows})
    last: dict[int, tuple[dict[str, Any], datetime]] = {}
    if ids:
        for mid, details, updated in (
            await session.execute(
                select(Profile.model_id, Profile.details, Profile.updated_at).where(
                    Profile.model_id.in_(ids), Profile.suite_version == suite_version
                )
            )
        ).all():
            if mid not in last or updated > last[mid][1]:
                last[mid] = (details or {}, updated)
    out: dict[int, ProfileTarget] = {}
    now = datetime.now(UTC)
    for mid, name, size, params, ctx, caps, backend, host, upstream, digest in rows:
        if mid in out:
            continue
        caps = caps or {}
        if caps.get("embedding") and not caps.get("chat", True):
            continue
        reason = _due_reason(last.get(mid), digest, size, now, failed_retry_after_s, force)
        if reason is None:
            continue
        out[mid] = ProfileTarget(
            model_id=mid,
            model=name,
            backend=backend,
            host=host or backend,
            upstream=upstream,
            digest=digest,
            size_bytes=size,
            params_b=params,
            context_length=ctx,
            reason=reason,
        )
    return list(out.values())


def _due_reason(
    last: tuple[dict[str, Any], datetime] | None,
    digest: str | None,
    size: int | None,
    now: datetime,
    failed_retry_after_s: float,
    force: bool,
) -> str | None:
    if force:
        return "forced"
    if last is None:
        return "new"
    details, updated = last
    if digest and details.get("digest") and details["digest"] != digest:
        return "digest changed"
    if size and details.get("size_bytes") and details["size_bytes"] != size:
        return "size changed"
    if details.get("status") == "failed" and now - updated > timedelta(seconds=failed_retry_after_s):
        return "last profile failed"
    return None


async def enqueue_due(pool: Any, queue: str, targets: Sequence[ProfileTarget], *, force: bool = False) -> list[str]:
    """One ``profile_model`` job per target; returns the models actually enqueued."""
    enqueued = []
    for t in targets:
        job = await enqueue_once(pool, queue, PROFILE_MODEL, job_id=f"profile:{t.model}", model=t.model, force=force)
        if job is not None:
            enqueued.append(t.model)
    return enqueued


# --- slots (distributed semaphores) ------------------------------------------------------------

_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return 1
end
return 0
"""


class Slots:
    """A counting semaphore in Redis (sorted set member → lease expiry): bounded parallelism per
    backend and per GPU host across every profiler process; a dead holder's lease runs out."""

    def __init__(self, redis: Redis, key: str, limit: int, lease_s: float) -> None:
        self.redis, self.key, self.limit, self.lease_s = redis, key, limit, lease_s
        self.token = secrets.token_hex(8)

    async def try_acquire(self) -> bool:
        """Take a slot if one is free (expired leases do not count); ``True`` when taken."""
        now = time.time()
        args = (str(now), str(now + self.lease_s), str(self.limit), self.token, str(int(self.lease_s * 1000) + 60_000))
        got = await self.redis.eval(_ACQUIRE, 1, self.key, *args)  # type: ignore[misc]
        return bool(got)

    async def release(self) -> None:
        """Give the slot back."""
        await self.redis.zrem(self.key, self.token)


@contextlib.asynccontextmanager
async def slots(redis: Redis, keys: Keys, target: ProfileTarget, opts: ProfilingOptions) -> AsyncIterator[bool]:
    """Hold a backend slot and a host slot; yields False when none came within ``slot_wait_s``."""
    backend = Slots(redis, keys.profiling_slots(f"backend:{target.backend}"), opts.per_backend, opts.slot_lease_s)
    host = Slots(redis, keys.profiling_slots(f"host:{target.host}"), opts.per_host, opts.slot_lease_s)
    deadline = time.monotonic() + opts.slot_wait_s
    held: list[Slots] = []
    try:
        while True:
            if await backend.try_acquire():
                if await host.try_acquire():
                    held = [backend, host]
                    break
                await backend.release()
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        yield bool(held)
    finally:
        for s in held:
            with contextlib.suppress(RedisError, OSError):  # the slot's TTL frees it
                await s.release()


# --- progress ----------------------------------------------------------------------------------


class Progress:
    """Writes the running profile's state to Redis for ``GET /admin/profiling`` and the CLI."""

    def __init__(self, redis: Redis, keys: Keys, target: ProfileTarget, ttl_s: int) -> None:
        self.redis, self.keys, self.target, self.ttl_s = redis, keys, target, ttl_s
        self.started = time.time()

    async def __call__(self, e: ProgressEvent) -> None:
        await self.write(e.phase, e.done, e.total, e.current, e.eta_s)

    async def write(
        self, phase: str, done: int, total: int, current: str | None = None, eta_s: float | None = None, **extra: Any
    ) -> None:
        """Store the run's phase, counts and ETA, with a TTL so a dead run disappears."""
        doc = {
            "model": self.target.model,
            "backend": self.target.backend,
            "host": self.target.host,
            "phase": phase,
            "done": done,
            "total": total,
            "current": current,
            "eta_s": eta_s,
            "started_at": self.started,
            "updated_at": time.time(),
            **extra,
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.profiling_progress(self.target.model), orjson.dumps(doc), ex=self.ttl_s)
            if phase == "done":
                pipe.zrem(self.keys.profiling_active, self.target.model)
            else:
                pipe.zadd(self.keys.profiling_active, {self.target.model: self.started})
            await pipe.execute()


# --- one model ---------------------------------------------------------------------------------


def make_judge(opts: ProfilingOptions, http: aiohttp.ClientSession) -> LLMJudge | None:
    """The LLM judge the options configure, or ``None``."""
    return LLMJudge(opts.judge, http) if opts.judge.enabled else None


async def profile_one(
    *,
    target: ProfileTarget,
    client: BackendClient,
    http: aiohttp.ClientSession,
    redis: Redis,
    keys: Keys,
    sessionmaker: async_sessionmaker[AsyncSession],
    suite: Suite,
    grader: Grader,
    opts: ProfilingOptions,
    last_try: bool,
) -> ProfileResult:
    """Profile one target within a backend and a host slot, store the result and report progress."""
    progress = Progress(redis, keys, target, opts.progress_ttl_s)
    await progress.write("waiting", 0, len(suite.prompts))
    async with slots(redis, keys, target, opts) as got:
        if not got:
            await progress.write("done", 0, len(suite.prompts), outcome="no slot")
            raise ProfilingFailed(f"no profiling slot on {target.backend}/{target.host} within {opts.slot_wait_s}s")
        was_loaded = await _loaded(client, target.upstream) is not None
        started = asyncio.Event()  # set once the load may begin: only then is an unload ours to do

        @contextlib.asynccontextmanager
        async def guard() -> AsyncIterator[None]:
            if opts.vram_lock and not was_loaded:
                async with loading_on_host(redis, keys, target, opts):
                    started.set()
                    yield
            else:
                started.set()
                yield

        runner = ProfileRunner(
            BackendChat(client.config, http, target.upstream),
            suite,
            grader,
            opts.runner,
            progress=progress,
            warmup_guard=guard,
        )
        model = ModelUnderTest(
            name=target.model,
            backend=target.backend,
            upstream=target.upstream,
            size_bytes=target.size_bytes,
            params_b=target.params_b,
        )
        try:
            result = await runner.run(model)
            loaded = await _loaded(client, target.upstream)
            if loaded is not None:
                result.vram_bytes = loaded.vram_bytes or loaded.size_bytes or None
        finally:
            pinned = any(
                fnmatch.fnmatchcase(target.model, g) or fnmatch.fnmatchcase(target.upstream, g) for g in opts.pinned
            )
            if opts.unload_after and not was_loaded and not pinned and started.is_set():
                try:
                    await client.unload(target.upstream)
                except BackendError as exc:  # the profile stands; the backend's keep_alive unloads it later
                    log.warning("could not unload %s from %s: %s", target.upstream, target.backend, exc)
    result.context_length = target.context_length
    failed_to_start = result.status == "failed" and any(e.startswith("warm-up") for e in result.errors)
    if failed_to_start and not last_try:
        await progress.write("done", 0, len(suite.prompts), outcome="warm-up failed")
        raise ProfilingFailed(result.errors[0], result)
    await store_profile(sessionmaker, target, result)
    await progress.write("done", len(suite.prompts), len(suite.prompts), outcome=result.status)
    if failed_to_start:
        raise ProfilingFailed(result.errors[0], result)
    return result


@contextlib.asynccontextmanager
async def loading_on_host(
    redis: Redis, keys: Keys, target: ProfileTarget, opts: ProfilingOptions
) -> AsyncIterator[None]:
    """Around the warm-up, which loads the model: hold the host's VRAM lock, the one the scorer's
    planner takes for its loads and unloads (so neither changes the host under the other), and
    count the model's bytes as a pending load until the host's gpu-agent reports it (so plans
    made meanwhile leave room for it). No lock within ``vram_lock_wait_s``: the try fails and the
    job retries later."""
    lock = HostLock(redis, keys.vram_lock(target.host), ttl_s=opts.vram_lock_ttl_s)
    async with lock.held(opts.vram_lock_wait_s) as got:
        if not got:
            raise ProfilingFailed(f"the VRAM lock of host {target.host} stayed taken for {opts.vram_lock_wait_s:.0f}s")
        if target.size_bytes:
            await reserve_pending(redis, keys, target.host, target.upstream, target.size_bytes)
        yield


async def _loaded(client: BackendClient, upstream: str) -> Any:
    try:
        return next((m for m in await client.loaded() if m.name == upstream), None)
    except BackendError as exc:
        log.debug("could not read the models loaded on %s: %s", client.config.name, exc)
        return None


async def store_profile(
    sessionmaker: async_sessionmaker[AsyncSession], target: ProfileTarget, result: ProfileResult
) -> int:
    """Upsert one row per category on ``(model_id, suite_version, category)``; returns rows written."""
    rows = result.profile_rows(target.model_id)
    for r in rows:
        r["details"] = {**r["details"], "digest": target.digest, "size_bytes": target.size_bytes}
    if not rows:
        return 0
    async with sessionmaker() as session, session.begin():
        stmt = pg_insert(Profile).values(rows)
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[Profile.model_id, Profile.suite_version, Profile.category],
                set_={**{c: stmt.excluded[c] for c in PROFILE_COLUMNS}, "updated_at": func.now()},
            )
        )
    return len(rows)


# --- the jobs' bodies ----------------------------------------------------------------------------


class ProfilingContext(Protocol):
    """What the profiling jobs need from the worker's context."""

    queue: str
    redis: Any
    http: aiohttp.ClientSession
    sessionmaker: async_sessionmaker[AsyncSession]
    clients: dict[str, BackendClient]
    suite: Suite
    grader: Grader

    @property
    def keys(self) -> Keys: ...

    @property
    def profiling(self) -> ProfilingOptions: ...


async def _due_targets(wctx: ProfilingContext, *, model: str | None, force: bool) -> list[ProfileTarget]:
    """The models due a profile (or ``model`` alone) on the worker's backends."""
    async with wctx.sessionmaker() as session:
        return await due_targets(
            session,
            wctx.suite.suite_version,
            model=model,
            force=force,
            failed_retry_after_s=wctx.profiling.failed_retry_after_s,
            backends=list(wctx.clients),
        )


async def enqueue_profiles_job(
    wctx: ProfilingContext, *, model: str | None = None, force: bool = False
) -> dict[str, Any]:
    """Enqueue ``profile_model`` for every due model (or ``model``); ``force`` ignores the suite version."""
    targets = await _due_targets(wctx, model=model, force=force)
    enqueued = await enqueue_due(wctx.redis, wctx.queue, targets, force=force)
    if enqueued:
        log.info("profiling enqueued for %d model(s): %s", len(enqueued), ", ".join(enqueued[:10]))
    return {"due": [t.model for t in targets], "enqueued": enqueued}


async def profile_model_job(
    wctx: ProfilingContext, *, model: str, force: bool = False, job_try: int = 1, job_id: str | None = None
) -> dict[str, Any]:
    """One model's profile with its own retry policy (profiles take far longer than other jobs):
    failures retry with back-off from ``retry_base_s``; the last one writes a dead letter."""
    opts = wctx.profiling
    policy = RetryPolicy(
        max_tries=opts.max_tries, base_s=opts.retry_base_s, max_s=opts.retry_base_s * 16, timeout_s=opts.job_timeout_s
    )
    try:
        async with asyncio.timeout(opts.job_timeout_s):
            return await _profile_model(wctx, model=model, force=force, last_try=job_try >= opts.max_tries)
    except (Retry, asyncio.CancelledError):
        raise
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        if job_try < opts.max_tries:
            delay = policy.delay_s(job_try)
            log.warning(
                "profiling %s: try %d/%d failed (%s); retrying in %.0fs",
                model,
                job_try,
                opts.max_tries,
                error,
                delay,
                exc_info=job_try == 1 and not isinstance(exc, ProfilingFailed | BackendError),
            )
            raise Retry(defer=delay) from exc
        log.error("profiling %s failed %d times (%s); recording a dead letter", model, job_try, error)
        with contextlib.suppress(*DB_UNAVAILABLE):
            await record_dead_letter(
                wctx.sessionmaker,
                queue=wctx.queue,
                job=PROFILE_MODEL,
                payload={"args": [], "kwargs": {"model": model, "force": force}, "job_id": job_id},
                error=error,
                attempts=job_try,
            )
        raise


async def _profile_model(wctx: ProfilingContext, *, model: str, force: bool, last_try: bool) -> dict[str, Any]:
    found = await _due_targets(wctx, model=model, force=force)
    if not found:
        return {"model": model, "skipped": "up to date, inactive or not served by a configured backend"}
    target = found[0]
    result = await profile_one(
        target=target,
        client=wctx.clients[target.backend],
        http=wctx.http,
        redis=wctx.redis,
        keys=wctx.keys,
        sessionmaker=wctx.sessionmaker,
        suite=wctx.suite,
        grader=wctx.grader,
        opts=wctx.profiling,
        last_try=last_try,
    )
    await wctx.redis.publish(
        wctx.keys.catalog_changed, orjson.dumps({"source": "profiler", "model": model, "ts": time.time()})
    )
    return {
        "model": model,
        "reason": target.reason,
        "status": result.status,
        "scores": {c: r.score for c, r in result.categories.items()},
        "tokens_per_s": result.tokens_per_s,
        "ttft_ms": result.ttft_ms,
        "prefill_tokens_per_s": result.prefill_tokens_per_s,
        "duration_s": round(result.duration_s, 2),
    }
