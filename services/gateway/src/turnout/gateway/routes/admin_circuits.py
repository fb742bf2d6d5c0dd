"""``GET /admin/circuits``: every circuit breaker that is not closed-and-clean, as all gateways
share it (:mod:`turnout.common.circuits`), with the seconds left of each cooldown.

Admin only (:mod:`turnout.gateway.auth`). ``POST /admin/circuits/reset`` closes one circuit
(``{"backend": …, "model": …}``, model ``""`` for the backend-wide one) or every one (``{}``).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError
from starlette.responses import Response

from turnout.gateway.auth import AdminDep
from turnout.gateway.deps import StateDep
from turnout.gateway.errors import NoBackendAvailable
from turnout.gateway.pipeline import JSON_MEDIA
from turnout.gateway.state import GatewayState

router = APIRouter(prefix="/admin", tags=["admin"])


async def circuits_report(gw: GatewayState) -> dict[str, Any]:
    """Every listed circuit with ``blocking`` and ``cooldown_left_s``, and the policy; read by
    ``GET /admin/circuits`` and the dashboard's fleet. Raises Redis and socket errors."""
    found = await gw.breakers.refresh()
    now = time.time()
    out = []
    for c in found:
        item = c.model_dump(mode="json")
        item["blocking"] = c.blocks(now)
        item["cooldown_left_s"] = round(max(0.0, c.until - now), 3) if c.state == "open" else 0.0
        out.append(item)
    policy = gw.breakers.store.policy
    return {
        "circuits": out,
        "policy": {
            "failure_threshold": policy.failure_threshold,
            "status_failure_threshold": policy.status_failure_threshold,
            "base_cooldown_s": policy.base_cooldown_s,
            "max_cooldown_s": policy.max_cooldown_s,
            "probe_lease_s": policy.probe_lease_s,
        },
    }


@router.get("/circuits")
async def circuits(gw: StateDep, _: AdminDep) -> Response:
    """``GET /admin/circuits``: every listed circuit (blocking or not, cooldown left) and the breaker policy."""
    try:
        body = await circuits_report(gw)
    except (RedisError, OSError) as exc:
        raise NoBackendAvailable("Redis is unavailable; retry later", code="redis_unavailable") from exc
    return Response(orjson.dumps(body), media_type=JSON_MEDIA)


class ResetIn(BaseModel):
    """Which circuit to close: one (backend and model, ``""`` for the backend's own), or every one."""

    model_config = ConfigDict(extra="forbid")

    backend: str | None = Field(default=None, min_length=1, max_length=64)
    model: str = Field(default="", max_length=256)


@router.post("/circuits/reset")
async def reset(body: ResetIn, gw: StateDep, _: AdminDep) -> Response:
    """``POST /admin/circuits/reset``: close the named circuit, or all of them."""
    store = gw.breakers.store
    try:
        found = await gw.breakers.refresh()
        targets = [
            (c.backend, c.model)
            for c in found
            if body.backend is None or (c.backend, c.model) == (body.backend, body.model)
        ]
        for backend, model in targets:
            await store.redis.delete(store.keys.circuit(backend, model))
            await store.redis.zrem(store.keys.circuits, f"{backend}\t{model}")
        await gw.breakers.refresh()
    except (RedisError, OSError) as exc:
        raise NoBackendAvailable("Redis is unavailable; retry later", code="redis_unavailable") from exc
    return Response(orjson.dumps({"status": "ok", "closed": len(targets)}), media_type=JSON_MEDIA)
