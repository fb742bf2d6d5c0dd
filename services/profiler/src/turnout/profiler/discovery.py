"""Model discovery: what each configured backend serves, written to the catalog in Postgres.

Per backend, in this order (no transaction is held open across an HTTP call):

1. list its models (Ollama ``/api/tags``, OpenAI ``/v1/models``); a failure is recorded in
   ``backends.last_error`` and nothing else of that backend changes (its models stay);
2. describe the models whose digest is new (Ollama ``/api/show``: capabilities, context window,
   parameter size, quantisation); a model whose description fails keeps what its name says;
3. one transaction (serialised per backend by an advisory lock): upsert the backend, its models
   and deployments (``INSERT … ON CONFLICT``), and mark its deployments that vanished inactive.

Then, in one more transaction: backends no longer configured become inactive (full runs only)
and models left with no active deployment on an active backend become inactive. If any of
this changed what the scorer routes over, ``keys.catalog_changed`` is published.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, Field
from redis.asyncio import Redis
from sqlalchemy import and_, exists, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from turnout.common.backends.clients import BackendClient, UpstreamModel
from turnout.common.backends.config import BackendConfig
from turnout.common.catalog import FACT_FIELDS, ModelFacts, merge_model_row, model_facts
from turnout.common.db.models import Backend, Deployment, Model
from turnout.common.errors import BackendError
from turnout.common.keys import Keys

log = logging.getLogger(__name__)


class BackendDiscovery(BaseModel):
    """What discovery found on one backend."""

    outcome: str = Field(description="ok | error")
    models: int = 0
    changed: bool = False
    error: str | None = None


class DiscoveryResult(BaseModel):
    """What one discovery run found and changed."""

    backends: dict[str, BackendDiscovery] = Field(default_factory=dict)
    deactivated_models: int = 0
    changed: bool = False
    published: bool = False
    duration_s: float = 0.0


@dataclass(frozen=True, slots=True)
class _Known:
    """What the catalog already holds for one upstream model on this backend."""

    digest: str | None
    context_length: int | None
    backend_capabilities: tuple[str, ...] | None


async def known_models(session: AsyncSession, backend: str) -> dict[str, _Known]:
    """The models the catalog already holds for ``backend``, by upstream name."""
    rows = (
        await session.execute(
            select(Deployment.upstream_name, Deployment.digest, Model.context_length, Model.details)
            .join(Model, Model.id == Deployment.model_id)
            .join(Backend, Backend.id == Deployment.backend_id)
            .where(Backend.name == backend)
        )
    ).all()
    out = {}
    for upstream, digest, ctx, details in rows:
        caps = (details or {}).get("backend_capabilities")
        out[upstream] = _Known(digest, ctx, tuple(caps) if isinstance(caps, list) else None)
    return out


async def describe_models(
    client: BackendClient, listed: Sequence[UpstreamModel], known: dict[str, _Known], *, concurrency: int
) -> list[UpstreamModel]:
    """Describe what is new; reuse what the catalog knows for an unchanged digest."""
    sem = asyncio.Semaphore(concurrency)

    async def one(m: UpstreamModel) -> UpstreamModel:
        k = known.get(m.name)
        if k is not None and m.digest is not None and k.digest == m.digest and k.backend_capabilities is not None:
            return UpstreamModel(
                name=m.name,
                size_bytes=m.size_bytes,
                digest=m.digest,
                context_length=m.context_length or k.context_length,
                capabilities=k.backend_capabilities,
                details=m.details,
            )
        async with sem:
            try:
                return await client.describe(m)
            except BackendError as exc:
                log.warning("%s: describing %s failed (%s); using what its name says", client.config.name, m.name, exc)
                return m

    return list(await asyncio.gather(*(one(m) for m in listed)))


async def _lock(session: AsyncSession, name: str) -> None:
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"turnout:discover:{name}"})


async def _upsert_backend(session: AsyncSession, cfg: BackendConfig, *, error: str | None) -> tuple[int, bool]:
    """Upsert the backend row; returns (id, whether it was inactive or new)."""
    before = (await session.execute(select(Backend.active).where(Backend.name == cfg.name))).scalar_one_or_none()
    values: dict[str, Any] = {
        "name": cfg.name,
        "kind": cfg.kind.value,
        "url": cfg.url,
        "host": cfg.host,
        "active": True,
        "last_error": error,
        "last_seen_at": None if error else func.now(),
    }
    stmt = pg_insert(Backend).values(**values)
    update_set: dict[str, Any] = {
        "kind": stmt.excluded.kind,
        "url": stmt.excluded.url,
        "host": stmt.excluded.host,
        "active": True,
        "last_error": stmt.excluded.last_error,
        "updated_at": func.now(),
    }
    if error is None:
        update_set["last_seen_at"] = func.now()
    upsert = stmt.on_conflict_do_update(index_elements=[Backend.name], set_=update_set).returning(Backend.id)
    backend_id = (await session.execute(upsert)).scalar_one()
    return backend_id, before is not True


async def record_backend_error(sessionmaker: async_sessionmaker[AsyncSession], cfg: BackendConfig, error: str) -> bool:
    """Store a backend's listing error; ``True`` when that changed its state."""
    async with sessionmaker() as session, session.begin():
        await _lock(session, cfg.name)
        _, reactivated = await _upsert_backend(session, cfg, error=error[:2000])
    return reactivated


async def upsert_backend_models(
    sessionmaker: async_sessionmaker[AsyncSession], cfg: BackendConfig, described: Sequence[UpstreamModel]
) -> bool:
    """One transaction: the backend, its models and deployments; vanished deployments inactive.
    Returns whether anything the scorer routes over changed."""
    facts: dict[str, tuple[ModelFacts, UpstreamModel]] = {}
    for um in described:
        f = model_facts(cfg.public_name(um.name), um)
        facts.setdefault(f.name, (f, um))
    async with sessionmaker() as session, session.begin():
        await _lock(session, cfg.name)
        backend_id, changed = await _upsert_backend(session, cfg, error=None)
        model_ids: dict[str, int] = {}
        if facts:
            names = list(facts)
            before = {
                r.name: r._asdict()
                for r in (
                    await session.execute(
                        select(Model.name, Model.active, Model.details, *(getattr(Model, k) for k in FACT_FIELDS))
                        .where(Model.name.in_(names))
                        .with_for_update()
                    )
                ).all()
            }
            rows = []
            for f, _ in facts.values():
                old = before.get(f.name)
                row = merge_model_row(f.row(), old)
                if old is None or not old["active"] or any(old[k] != row[k] for k in FACT_FIELDS):
                    changed = True
                rows.append({**row, "active": True})
            stmt = pg_insert(Model).values(rows)
            upsert = stmt.on_conflict_do_update(
                index_elements=[Model.name],
                set_={
                    **{k: stmt.excluded[k] for k in (*FACT_FIELDS, "details")},
                    "active": True,
                    "updated_at": func.now(),
                },
            ).returning(Model.id, Model.name)
            model_ids = {name: mid for mid, name in (await session.execute(upsert)).all()}

            deployed = {
                r[0]: r[1:]
                for r in (
                    await session.execute(
                        select(Deployment.model_id, Deployment.upstream_name, Deployment.active).where(
                            Deployment.backend_id == backend_id
                        )
                    )
                ).all()
            }
            dep_rows = []
            for name, (_, um) in facts.items():
                mid = model_ids[name]
                if deployed.get(mid) != (um.name, True):
                    changed = True
                dep_rows.append(
                    {
                        "model_id": mid,
                        "backend_id": backend_id,
                        "upstream_name": um.name,
                        "digest": um.digest,
                        "active": True,
                    }
                )
            dstmt = pg_insert(Deployment).values(dep_rows)
            dstmt = dstmt.on_conflict_do_update(
                index_elements=[Deployment.model_id, Deployment.backend_id],
                set_={
                    "upstream_name": dstmt.excluded.upstream_name,
                    "digest": dstmt.excluded.digest,
                    "active": True,
                    "last_seen_at": func.now(),
                },
            )
            await session.execute(dstmt)
        vanished = (
            await session.execute(
                update(Deployment)
                .where(
                    Deployment.backend_id == backend_id,
                    Deployment.active,
                    Deployment.model_id.not_in(list(model_ids.values())),
                )
                .values(active=False)
                .returning(Deployment.id)
            )
        ).all()
        if vanished:
            log.info("%s: %d model(s) vanished, deployments marked inactive", cfg.name, len(vanished))
            changed = True
    return changed


async def sweep(sessionmaker: async_sessionmaker[AsyncSession], *, configured: Sequence[str] | None) -> tuple[int, int]:
    """Backends no longer configured → inactive (when ``configured`` is given); models with no
    active deployment on an active backend → inactive. Returns (backends, models) deactivated."""
    async with sessionmaker() as session, session.begin():
        await _lock(session, "*sweep*")
        backends = 0
        if configured is not None:
            backends = len(
                (
                    await session.execute(
                        update(Backend)
                        .where(Backend.active, Backend.name.not_in(list(configured)))
                        .values(active=False, updated_at=func.now())
                        .returning(Backend.id)
                    )
                ).all()
            )
        routable = exists().where(
            and_(
                Deployment.model_id == Model.id,
                Deployment.active,
                Backend.id == Deployment.backend_id,
                Backend.active,
            )
        )
        models = len(
            (
                await session.execute(
                    update(Model)
                    .where(Model.active, ~routable)
                    .values(active=False, updated_at=func.now())
                    .returning(Model.id)
                )
            ).all()
        )
    return backends, models


async def publish_catalog_changed(redis: Redis, keys: Keys, source: str) -> None:
    """Tell the scorers (``catalog_changed``) to reload the catalog now."""
    await redis.publish(keys.catalog_changed, orjson.dumps({"source": source, "ts": time.time()}))
