"""Liveness, readiness and Prometheus metrics.

* ``/health`` — liveness: the process answers. Nothing else is checked (a Redis or Postgres
  outage must not get a gateway that can still serve restarted).
* ``/ready`` — "can serve": 200 while the gateway can route requests — by the scorer, or by
  its local fallback over the last catalog (or the configured backends) when the scorer,
  Redis or Postgres is down; the checks that fail are listed under ``degraded``. 503 while
  draining after SIGTERM (:mod:`turnout.gateway.drain`), or when it knows no model and no
  backend at all.
* ``/metrics`` — here, or on ``metrics_port`` (``__main__``) when that is set.
"""

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
metrics_router = APIRouter(tags=["ops"])


@router.get("/health")
async def health() -> Response:
    """``GET /health``: the process answers (liveness; checks nothing else)."""
    return Response(b'{"status":"ok","service":"gateway"}', media_type=JSON_MEDIA)


async def _redis_ok(gw: GatewayState) -> bool:
    return bool(await gw.redis.ping())


async def _postgres_ok(gw: GatewayState) -> bool:
    async with gw.engine.connect() as conn:
        return (await conn.execute(text("SELECT 1"))).scalar() == 1


async def _scorer_ok(gw: GatewayState) -> bool:
    return await gw.rpc.alive_now(ROUTE_V1)  # any replica's own heartbeat


def _can_route(gw: GatewayState) -> bool:
    snap = gw.catalog.snapshot
    return bool(snap is not None and snap.models) or bool(gw.settings.backends)


@router.get("/ready")
async def ready(gw: StateDep) -> Response:
    """``GET /ready``: Redis, Postgres, scorer and routes checked; 503 while draining or unable to route."""
    names = ("redis", "postgres", "scorer")
    fns = (_redis_ok, _postgres_ok, _scorer_ok)
    results = await asyncio.gather(*(gw.checks.run(name, partial(fn, gw)) for name, fn in zip(names, fns, strict=True)))
    checks = dict(zip(names, results, strict=True))
    checks["routes"] = _can_route(gw)
    degraded = [name for name, ok in checks.items() if not ok]
    if gw.drain.draining:
        status, code = "draining", 503
    elif not checks["routes"]:
        status, code = "unavailable", 503
    else:
        status, code = ("degraded" if degraded else "ok"), 200
    tasks = gw.supervisor.state() if gw.supervisor is not None else {}
    body = {"status": status, "checks": checks, "degraded": degraded, "tasks": tasks}
    return Response(orjson.dumps(body), status_code=code, media_type=JSON_MEDIA)


def metrics_text(registry: CollectorRegistry, *, multiprocess: bool) -> bytes:
    """The Prometheus text of ``registry``, or of every worker's files in multi-process mode."""
    if multiprocess:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


@metrics_router.get("/metrics")
async def metrics(gw: StateDep) -> Response:
    """``GET /metrics``: this gateway's Prometheus metrics."""
    return Response(metrics_text(gw.registry, multiprocess=gw.multiprocess), media_type=CONTENT_TYPE_LATEST)
