"""Admin endpoints for what the workers know about models: profiling, benchmarks, dead letters.

* ``POST /admin/reprofile?model=…&force=true`` — profile one model again (``profile_model`` on
  the profiler queue); without ``model``, every due model (``enqueue_profiles``); ``force``
  profiles even models already profiled with the current suite version.
* ``GET /admin/profiling`` — queued models, the ones running with done/total prompts and ETA
  (progress the profiler keeps in Redis), and the total ETA of the running ones.
* ``GET /admin/dlq`` — dead letters (newest first; ``queue``, ``job``, ``limit``);
  ``POST /admin/dlq/{id}/retry`` enqueues the job again with its arguments (a profile job
  forced, since the model's stored profile is the failure record).
* ``GET /admin/benchmarks`` — public scores with the local model each matched and the match
  confidence (``source``, ``model``, ``matched``, ``limit``), plus each source's last sync run.
* ``POST /admin/sync-benchmarks?source=…`` — sync one source now, or every enabled one.

Jobs are enqueued on the workers' arq queues by name (:mod:`turnout.common.arq`); the
gateway imports no worker. Admin only (:mod:`turnout.gateway.auth`).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import orjson
from arq import ArqRedis
from fastapi import APIRouter, Path, Query
from sqlalchemy import desc, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from turnout.common.arq import (
    ENQUEUE_PROFILES,
    PROFILE_MODEL,
    SYNC_ALL_BENCHMARKS,
    SYNC_BENCHMARKS,
    dumps,
    enqueue_once,
    loads,
    queued_job_id,
)
from turnout.common.db.models import Benchmark, DeadLetter, Model
from turnout.gateway.api_schemas import ADMIN_ACTION
from turnout.gateway.auth import AdminDep
from turnout.gateway.deps import StateDep
from turnout.gateway.errors import ModelNotFound, NotFound
from turnout.gateway.pipeline import JSON_MEDIA
from turnout.gateway.state import GatewayState

router = APIRouter(prefix="/admin", tags=["admin"])

KNOWN_SOURCES = ("hf_leaderboard", "lmarena", "artificial_analysis", "openrouter", "local")


def _json(doc: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(doc, default=str), status_code=status, media_type=JSON_MEDIA)


def _pool(gw: GatewayState) -> ArqRedis:
    """An arq client over the gateway's Redis connection pool (JSON jobs, like the workers)."""
    return ArqRedis(connection_pool=gw.redis.connection_pool, job_serializer=dumps, job_deserializer=loads)


def _str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


# --- profiling ---------------------------------------------------------------------------------


@router.post("/reprofile", openapi_extra=ADMIN_ACTION)
async def reprofile(
    gw: StateDep,
    _: AdminDep,
    model: Annotated[str | None, Query(max_length=255)] = None,
    force: bool = False,
) -> Response:
    """Queue profiling for one model or every model due (``force``: even when fresh)."""
    queue = gw.settings.keys.profiler_queue
    pool = _pool(gw)
    if model is not None:
        async with AsyncSession(gw.engine) as session:
            found = (await session.execute(select(Model.id).where(Model.name == model))).first()
        if found is None:
            raise ModelNotFound(f"The model '{model}' is not in the catalog", param="model")
        job_id = f"profile:{model}"
        job = await enqueue_once(pool, queue, PROFILE_MODEL, job_id=job_id, model=model, force=force)
        return _json(
            {"model": model, "force": force, "enqueued": job is not None, "job_id": queued_job_id(queue, job_id)}, 202
        )
    job_id = f"{ENQUEUE_PROFILES}:{'force' if force else 'due'}"
    job = await enqueue_once(pool, queue, ENQUEUE_PROFILES, job_id=job_id, force=force)
    return _json(
        {"model": None, "force": force, "enqueued": job is not None, "job_id": queued_job_id(queue, job_id)}, 202
    )


@router.get("/profiling")
async def profiling(gw: StateDep, _: AdminDep) -> Response:
    """``GET /admin/profiling``: the profiling jobs queued and running, and when the queue should be done."""
    return _json(await profiling_report(gw))


async def profiling_report(gw: GatewayState) -> dict[str, Any]:
    """Queued and running profiles with their progress (also shown by the dashboard)."""
    keys = gw.settings.keys
    redis = gw.redis
    job_ids = [_str(j) for j in await redis.zrange(keys.profiler_queue, 0, -1)]
    active = [_str(m) for m in await redis.zrange(keys.profiling_active, 0, -1)]
    running: list[dict[str, Any]] = []
    if active:
        for raw in await redis.mget([keys.profiling_progress(m) for m in active]):
            if raw is None:
                continue  # its worker died; the progress key expired
            doc = orjson.loads(raw)
            total, done = doc.get("total") or 0, doc.get("done") or 0
            doc["percent"] = round(100.0 * done / total, 1) if total else None
            doc["elapsed_s"] = round(time.time() - float(doc.get("started_at") or time.time()), 1)
            running.append(doc)
    profile = queued_job_id(keys.profiler_queue, "profile:")
    queued = [j.removeprefix(profile) for j in job_ids if j.startswith(profile)]
    queued = [m for m in queued if m not in active]
    etas = [r["eta_s"] for r in running if r.get("eta_s") is not None]
    return {
        "queue": queued,
        "queued": len(queued),
        "other_jobs": len([j for j in job_ids if not j.startswith(profile)]),
        "running": running,
        "current": [r["model"] for r in running],
        "eta_s": round(max(etas), 1) if etas else None,
    }


# --- dead letters ------------------------------------------------------------------------------


@router.get("/dlq")
async def dead_letters(
    gw: StateDep,
    _: AdminDep,
    queue: Annotated[str | None, Query(max_length=255)] = None,
    job: Annotated[str | None, Query(max_length=255)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    """``GET /admin/dlq``: jobs that failed their last try, newest first."""
    q = select(DeadLetter).order_by(desc(DeadLetter.id)).limit(limit)
    if queue:
        q = q.where(DeadLetter.queue == queue)
    if job:
        q = q.where(DeadLetter.job == job)
    async with AsyncSession(gw.engine) as session:
        items = (await session.execute(q)).scalars().all()
    return _json(
        {
            "dead_letters": [
                {
                    "id": d.id,
                    "queue": d.queue,
                    "job": d.job,
                    "payload": d.payload,
                    "error": d.error,
                    "attempts": d.attempts,
                    "created_at": d.created_at,
                    "retried_at": d.retried_at,
                }
                for d in items
            ]
        }
    )


@router.post("/dlq/{dead_letter_id}/retry", openapi_extra=ADMIN_ACTION)
async def retry_dead_letter(
    gw: StateDep, _: AdminDep, dead_letter_id: Annotated[int, Path(ge=1, le=2**63 - 1)]
) -> Response:
    """Queue a dead letter's job again under a new id and mark it retried."""
    async with AsyncSession(gw.engine, expire_on_commit=False) as session, session.begin():
        d = await session.get(DeadLetter, dead_letter_id, with_for_update=True)
        if d is None:
            raise NotFound(f"No dead letter with id {dead_letter_id}", param="id")
        payload = d.payload or {}
        args = payload.get("args") or []
        kwargs = {k: v for k, v in (payload.get("kwargs") or {}).items() if not k.startswith("_")}
        if d.job == PROFILE_MODEL:
            kwargs["force"] = True  # its stored profile is the failure record: profile again regardless
        job_id = f"retry:{d.id}:{int(time.time())}"
        job = await enqueue_once(_pool(gw), d.queue, d.job, *args, job_id=job_id, **kwargs)
        job_id = queued_job_id(d.queue, job_id)
        await session.execute(update(DeadLetter).where(DeadLetter.id == d.id).values(retried_at=func.now()))
    return _json(
        {"id": dead_letter_id, "job": d.job, "queue": d.queue, "enqueued": job is not None, "job_id": job_id}, 202
    )


# --- benchmarks --------------------------------------------------------------------------------


@router.get("/benchmarks")
async def benchmarks(
    gw: StateDep,
    _: AdminDep,
    source: Annotated[str | None, Query(max_length=64)] = None,
    model: Annotated[str | None, Query(max_length=255)] = None,
    matched: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> Response:
    """``GET /admin/benchmarks``: imported benchmark rows and the model each matched, if any."""
    q = (
        select(
            Benchmark.source,
            Benchmark.metric,
            Benchmark.raw_model,
            Benchmark.raw_value,
            Benchmark.score,
            Benchmark.match_confidence,
            Benchmark.details,
            Benchmark.updated_at,
            Model.name,
        )
        .outerjoin(Model, Model.id == Benchmark.model_id)
        .order_by(Benchmark.source, Benchmark.raw_model, Benchmark.metric)
        .limit(limit)
    )
    if source:
        q = q.where(Benchmark.source == source)
    if model:
        q = q.where(Model.name == model)
    if matched is True:
        q = q.where(Benchmark.model_id.is_not(None))
    elif matched is False:
        q = q.where(Benchmark.model_id.is_(None))
    async with AsyncSession(gw.engine) as session:
        rows = (await session.execute(q)).all()
        sources = {r[0] for r in (await session.execute(select(Benchmark.source).distinct())).all()}
    names = sorted(sources | set(KNOWN_SOURCES))
    raws = await gw.redis.mget([gw.settings.keys.benchmark_sync_status(s) for s in names])
    status = {s: orjson.loads(r) for s, r in zip(names, raws, strict=True) if r}
    items = []
    for src, metric, raw_model, raw_value, score, conf, details, updated, local in rows:
        details = details or {}
        items.append(
            {
                "source": src,
                "metric": metric,
                "raw_model": raw_model,
                "raw_value": raw_value,
                "score": score,
                "kind": details.get("kind", "quality"),
                "model": local,
                "match_confidence": conf,
                "match_method": _match_method(details.get("match")),
                "updated_at": updated,
            }
        )
    return _json({"benchmarks": items, "count": len(items), "sources": status})


def _match_method(match: Any) -> Any:
    """``details.match`` is ``{"method": …}``; a plain string in rows file imports wrote before they ran as a source."""
    return match.get("method") if isinstance(match, dict) else match


@router.post("/sync-benchmarks", openapi_extra=ADMIN_ACTION)
async def sync_benchmarks(
    gw: StateDep, _: AdminDep, source: Annotated[str | None, Query(max_length=64)] = None
) -> Response:
    """Queue a benchmark import from one source, or from all of them."""
    queue = gw.settings.keys.sync_queue
    pool = _pool(gw)
    if source:
        job_id = f"{SYNC_BENCHMARKS}:{source}"
        job = await enqueue_once(pool, queue, SYNC_BENCHMARKS, source, job_id=job_id)
    else:
        job_id = SYNC_ALL_BENCHMARKS
        job = await enqueue_once(pool, queue, SYNC_ALL_BENCHMARKS, job_id=job_id)
    return _json({"source": source, "enqueued": job is not None, "job_id": queued_job_id(queue, job_id)}, 202)
