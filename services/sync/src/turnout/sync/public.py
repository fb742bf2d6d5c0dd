"""Public benchmark sources → the ``benchmarks`` table, one transaction per source run.

A run (:func:`sync_source`): fetch everything from the source (:mod:`turnout.sync.sources`),
then in one transaction match every row to a local model (:mod:`turnout.sync.name_match`,
with the configured threshold and override map) and upsert with
``INSERT … ON CONFLICT (source, metric, raw_model) DO UPDATE`` on the whitelisted columns
(``model_id``, ``raw_value``, ``score``, ``match_confidence``, ``details``) only where a value
changed. A fetch that fails raises before the transaction starts, so the previous data stays;
rows the source no longer lists are kept. The run's outcome goes to Redis
(``keys.benchmark_sync_status(source)``, the last successful run kept beside a failure) and
``catalog_changed`` is published when a row changed.

Jobs: ``sync_benchmarks(source)`` runs one source; ``sync_all_benchmarks()`` (on the schedule,
default daily, and from ``POST /admin/sync-benchmarks``) enqueues one job per enabled source,
so that each retries and dead-letters on its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis
from sqlalchemy import func, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from turnout.common.arq import SYNC_BENCHMARKS, CronInterval, enqueue_once
from turnout.common.db.models import Benchmark, Deployment, Model
from turnout.common.errors import ConfigError
from turnout.common.keys import Keys
from turnout.sync.name_match import LocalModel, NameMatcher, link
from turnout.sync.sources import BenchmarkSourcesOptions, Source, SourceRun, build_sources

log = logging.getLogger(__name__)

UPSERT_COLUMNS = ("model_id", "raw_value", "score", "match_confidence", "details")
CHUNK = 1000
STATUS_TTL_S = 30 * 86400


class PublicBenchmarksOptions(BaseModel):
    """``TURNOUT_SYNC__PUBLIC__*``: the public sources, their schedule and name matching."""

    model_config = ConfigDict(extra="forbid")

    sources: BenchmarkSourcesOptions = Field(default_factory=BenchmarkSourcesOptions)
    every_s: CronInterval = Field(default=86400, description="Schedule of a sync of every source (default daily)")
    on_schedule: bool = True
    at_startup: bool = Field(default=False, description="Sync every source once when the worker starts")
    match_threshold: float = Field(default=0.85, ge=0.5, le=1.0, description="Name match confidence cut-off")
    overrides: dict[str, str | None] = Field(
        default_factory=dict, description="Public name -> local model name (null: never match)"
    )
    overrides_file: Path | None = Field(default=None, description="YAML/JSON mapping, merged under 'overrides'")

    def override_map(self) -> dict[str, str | None]:
        """The name overrides (public name → catalog model, or ``None`` to never match), file and inline."""
        merged: dict[str, str | None] = {}
        if self.overrides_file is not None:
            try:
                data = yaml.safe_load(self.overrides_file.read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise ConfigError(f"cannot read name overrides {self.overrides_file}: {exc}") from exc
            if not isinstance(data, dict):
                raise ConfigError(f"{self.overrides_file}: expected a mapping of public name -> local name")
            merged.update({str(k): (None if v is None else str(v)) for k, v in data.items()})
        merged.update(self.overrides)
        return merged

    def build(self) -> dict[str, Source]:
        """The enabled sources."""
        return build_sources(self.sources)


class SourceSyncResult(BaseModel):
    """One source run: rows fetched, matched, unmatched, skipped, and how it ended."""

    source: str
    outcome: str = "ok"
    rows: int = 0
    matched: int = 0
    unmatched: int = 0
    skipped: int = 0
    changed: int = 0
    pages: int = 0
    duration_s: float = 0.0
    published: bool = False
    skip_reasons: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    error: str | None = None
    finished_at: float = Field(default_factory=time.time)


async def local_models(session: AsyncSession) -> tuple[list[LocalModel], dict[str, int]]:
    """Every catalog model with the names its backends serve it under; and name → id."""
    upstream = func.array_remove(func.array_agg(Deployment.upstream_name), None)
    rows = (
        await session.execute(
            select(Model.id, Model.name, Model.params_b, Model.active_params_b, upstream)
            .outerjoin(Deployment, Deployment.model_id == Model.id)
            .group_by(Model.id)
        )
    ).all()
    return [LocalModel(r[1], r[2], r[3], tuple(sorted(r[4] or ()))) for r in rows], {r[1]: r[0] for r in rows}


def benchmark_values(run: SourceRun, matcher: NameMatcher, ids: Mapping[str, int]) -> tuple[list[dict[str, Any]], int]:
    """The ``benchmarks`` rows of a run, linked to local models; returns (rows, matched)."""
    links = link(run.rows, matcher)
    values = run.db_rows()
    matched = 0
    for value, m in zip(values, links, strict=True):
        if m is not None and m.local in ids:
            matched += 1
            value["model_id"] = ids[m.local]
            value["match_confidence"] = m.confidence
            value["details"]["match"] = {"model": m.local, "method": m.method, "detail": m.detail}
        else:
            value["model_id"] = None
            value["match_confidence"] = None
    return values, matched


async def upsert_benchmarks(session: AsyncSession, values: Sequence[dict[str, Any]]) -> int:
    """Upsert in the caller's transaction; returns the rows inserted or changed."""
    changed = 0
    for start in range(0, len(values), CHUNK):
        stmt = pg_insert(Benchmark).values(list(values[start : start + CHUNK]))
        ex = stmt.excluded
        upsert = stmt.on_conflict_do_update(
            index_elements=[Benchmark.source, Benchmark.metric, Benchmark.raw_model],
            set_={**{c: ex[c] for c in UPSERT_COLUMNS}, "updated_at": func.now()},
            where=tuple_(*(Benchmark.__table__.c[c] for c in UPSERT_COLUMNS)).is_distinct_from(
                tuple_(*(ex[c] for c in UPSERT_COLUMNS))
            ),
        ).returning(Benchmark.id)
        changed += len((await session.execute(upsert)).all())
    return changed


async def sync_source(
    source: Source,
    *,
    http: aiohttp.ClientSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    keys: Keys,
    options: PublicBenchmarksOptions,
) -> SourceSyncResult:
    """One source run (see the module docstring). Raises when the source fails; the status in
    Redis then says so and the previous data is untouched."""
    started = time.perf_counter()
    try:
        run = await source.fetch(http)
        async with sessionmaker() as session, session.begin():
            locals_, ids = await local_models(session)
            matcher = NameMatcher(locals_, threshold=options.match_threshold, overrides=options.override_map())
            values, matched = benchmark_values(run, matcher, ids)
            changed = await upsert_benchmarks(session, values)
    except Exception as exc:
        await record_status(
            redis,
            keys,
            SourceSyncResult(
                source=source.name,
                outcome="error",
                error=f"{type(exc).__name__}: {exc}"[:1000],
                duration_s=round(time.perf_counter() - started, 3),
            ),
        )
        raise
    result = SourceSyncResult(
        source=source.name,
        rows=len(values),
        matched=matched,
        unmatched=len(values) - matched,
        skipped=run.skipped,
        changed=changed,
        pages=run.pages,
        skip_reasons=run.skip_reasons,
        notes=run.notes,
        duration_s=round(time.perf_counter() - started, 3),
    )
    if changed:
        await redis.publish(keys.catalog_changed, orjson.dumps({"source": f"sync:{source.name}", "ts": time.time()}))
        result.published = True
    await record_status(redis, keys, result)
    log.info(
        "benchmarks from %s: %d rows (%d matched), %d skipped, %d changed in %.1fs",
        source.name,
        result.rows,
        result.matched,
        result.skipped,
        result.changed,
        result.duration_s,
    )
    return result


async def record_status(redis: Redis, keys: Keys, result: SourceSyncResult) -> None:
    """Store a run's result for ``/admin/benchmarks`` (a failed run keeps the last good run's time)."""
    key = keys.benchmark_sync_status(result.source)
    doc: dict[str, Any] = result.model_dump()
    if result.outcome != "ok":
        previous = await redis.get(key)
        if previous:
            prev = orjson.loads(previous)
            doc["last_ok"] = prev if prev.get("outcome") == "ok" else prev.get("last_ok")
    await redis.set(key, orjson.dumps(doc), ex=STATUS_TTL_S)


async def read_status(redis: Redis, keys: Keys, sources: Sequence[str]) -> dict[str, Any]:
    """The last stored result of each source (``None`` for one never run)."""
    if not sources:
        return {}
    raws = await redis.mget([keys.benchmark_sync_status(s) for s in sources])
    return {s: (orjson.loads(r) if r else None) for s, r in zip(sources, raws, strict=True)}


async def enqueue_sources(pool: Any, queue: str, names: Sequence[str]) -> list[str]:
    """Queue one sync job per source (deduplicated); the names actually queued."""
    enqueued = []
    for name in names:
        if await enqueue_once(pool, queue, SYNC_BENCHMARKS, name, job_id=f"{SYNC_BENCHMARKS}:{name}"):
            enqueued.append(name)
    return enqueued
