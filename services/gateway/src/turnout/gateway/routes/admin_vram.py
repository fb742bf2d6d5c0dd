"""``GET /admin/vram``: every host, its GPUs and loaded models, the router's budgets and pinned
models, and the recent load/unload actions with their reasons.

Reads only Redis: the agents' ``HostStateV1`` keys, the scorers' ``VramStatusV1`` (budgets,
pinned, busy and pending models) and the action log. Admin only (:mod:`turnout.gateway.auth`).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query
from pydantic import ValidationError
from starlette.responses import Response

from turnout.common.schemas.fleet import HostStateV1
from turnout.common.schemas.vram import VramActionV1, VramStatusV1
from turnout.gateway.auth import AdminDep
from turnout.gateway.deps import StateDep
from turnout.gateway.pipeline import JSON_MEDIA
from turnout.gateway.state import GatewayState

router = APIRouter(tags=["admin"])


async def vram_report(gw: GatewayState, *, actions: int = 50) -> dict[str, Any]:
    """Every GPU host's state and budget as the VRAM planner sees it, with the latest actions."""
    keys = gw.settings.keys
    names = [h.decode() if isinstance(h, bytes) else str(h) for h in await gw.redis.zrange(keys.fleet_hosts, 0, -1)]
    states: list[HostStateV1] = []
    if names:
        for raw in await gw.redis.mget([keys.fleet_host(h) for h in names]):
            if raw is None:
                continue
            try:
                states.append(HostStateV1.model_validate(orjson.loads(raw)))
            except (orjson.JSONDecodeError, ValidationError):
                continue
    status = VramStatusV1()
    raw_status = await gw.redis.get(keys.vram_status)
    if raw_status:
        try:
            status = VramStatusV1.model_validate(orjson.loads(raw_status))
        except (orjson.JSONDecodeError, ValidationError):
            pass
    budgets = {b.host: b for b in status.hosts}
    now = time.time()
    hosts = []
    for s in sorted(states, key=lambda s: s.host):
        b = budgets.get(s.host)
        pinned = set(b.pinned) if b else set()
        busy = set(b.busy) if b else set()
        hosts.append(
            {
                "host": s.host,
                "backend": s.backend,
                "backend_url": s.backend_url,
                "backend_ok": s.backend_ok,
                "agent_version": s.agent_version,
                "age_s": round(now - s.ts, 3) if s.ts else None,
                "gpu_error": s.gpu_error,
                "gpus": [g.model_dump(mode="json") for g in s.gpus],
                "memory_total_bytes": s.memory_total_bytes,
                "memory_free_bytes": s.memory_free_bytes,
                "budget_bytes": b.budget_bytes if b else None,
                "used_bytes": b.used_bytes if b else None,
                "available_bytes": b.available_bytes if b else None,
                "managed": b is not None,
                "pinned": sorted(pinned),
                "pending": b.pending if b else {},
                "loaded_models": [
                    {
                        **m.model_dump(mode="json"),
                        "pinned": m.name in pinned,
                        "busy": m.name in busy,
                        "last_used": b.last_used.get(m.name) if b else None,
                    }
                    for m in s.loaded_models
                ],
            }
        )
    log: list[dict[str, Any]] = []
    for raw in await gw.redis.lrange(keys.vram_actions, 0, max(actions, 1) - 1):  # type: ignore[misc]
        try:
            log.append(VramActionV1.model_validate(orjson.loads(raw)).model_dump(mode="json"))
        except (orjson.JSONDecodeError, ValidationError):
            continue
    return {
        "hosts": hosts,
        "policy": {
            "enabled": status.enabled,
            "budget_fraction": status.budget_fraction,
            "max_total_gb": status.max_total_gb,
            "pinned": status.pinned,
            "score_margin": status.score_margin,
            "reported_by": status.replica or None,
            "reported_age_s": round(now - status.ts, 3) if status.ts else None,
        },
        "decisions": status.decisions,
        "actions": log,
    }


@router.get("/admin/vram")
async def admin_vram(gw: StateDep, _: AdminDep, actions: Annotated[int, Query(ge=1, le=1000)] = 50) -> Response:
    """``GET /admin/vram``: the fleet's GPU memory, what is loaded where, and recent load/unload actions."""
    return Response(orjson.dumps(await vram_report(gw, actions=actions)), media_type=JSON_MEDIA)
