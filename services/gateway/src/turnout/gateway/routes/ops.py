"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
from functools import partial

import orjson
from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import text
from starlette.responses import Response

from turnout.common.rpc import ROUTE_V1
from turnout.gateway.deps import StateDep
from turnout.gateway.pipeline import JSON_MEDIA
from turnout.gateway.state import GatewayState

router = APIRouter(tags=["ops"])


@router.get("/health")
async def health() -> Response:
    return Response(b'{"status":"ok","service":"gateway"}', media_type=JSON_MEDIA)


async def _redis_ok(gw: GatewayState) -> bool:
    return bool(await gw.redis.ping())


async def _postgres_ok(gw: GatewayState) -> bool:
    async with gw.engine.connect() as conn:
        return (await conn.execute(text("SELECT 1"))).scalar() == 1


async def _scorer_ok(gw: GatewayState) -> bool:
    return await gw.rpc.alive_now(ROUTE_V1)  # any replica's own heartbeat


@router.get("/ready")
async def ready(gw: StateDep) -> Response:
    names = ("redis", "postgres", "scorer")
    fns = (_redis_ok, _postgres_ok, _scorer_ok)
    results = await asyncio.gather(*(gw.checks.run(name, partial(fn, gw)) for name, fn in zip(names, fns, strict=True)))
    checks = dict(zip(names, results, strict=True))
    required = [checks["redis"], checks["postgres"]]
    if gw.settings.gateway.ready_requires_scorer:
        required.append(checks["scorer"])
    ok = all(required)
    body = {"status": "ok" if ok else "unavailable", "checks": checks}
    return Response(orjson.dumps(body), status_code=200 if ok else 503, media_type=JSON_MEDIA)


@router.get("/metrics")
async def metrics(gw: StateDep) -> Response:
    if gw.multiprocess:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        data = generate_latest(registry)
    else:
        data = generate_latest(gw.registry)
    return Response(data, media_type=CONTENT_TYPE_LATEST)
