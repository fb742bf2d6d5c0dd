"""What is happening now, for the dashboard and ``turnout requests tail``: requests in flight and
the requests that just finished, read from Redis (not Postgres, which gets them a moment later).

* in flight: this gateway's own requests (id, model, backend, age) from
  :attr:`Pipeline.live`, and every gateway's counts per backend and model from the
  ``keys.inflight(backend)`` hashes the :class:`InflightTracker` publishes;
* finished: the request events stream (``keys.request_events``), read after the last id seen.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from redis.exceptions import RedisError

from turnout.gateway.state import GatewayState

RECENT = 20


def _str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def own_inflight(gw: GatewayState) -> list[dict[str, Any]]:
    """This gateway's requests in flight: ids, model and backend being tried, age, attempts."""
    now = time.perf_counter()
    out = []
    for ex in list(gw.pipeline.live.values()):
        current = ex.chosen
        if current is None and ex.decision is not None and len(ex.attempts) < len(ex.decision.candidates):
            current = ex.decision.candidates[len(ex.attempts)]  # the forwarder tries them in order
        out.append(
            {
                "request_id": ex.request_id,
                "kind": ex.kind.value,
                "requested_model": ex.requested_model,
                "model": current.model if current else None,
                "backend": current.backend if current else None,
                "stream": ex.stream,
                "client": ex.client,
                "age_ms": round((now - ex.start) * 1000, 1),
                "attempts": len(ex.attempts),
            }
        )
    return sorted(out, key=lambda r: -r["age_ms"])


async def fleet_inflight(gw: GatewayState) -> dict[str, dict[str, int]]:
    """backend -> model -> requests in flight, summed over every gateway."""
    keys = gw.settings.keys
    names = [b.name for b in gw.settings.backends]
    if not names:
        return {}
    async with gw.redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(keys.inflight(name))
        replies = await pipe.execute()
    out: dict[str, dict[str, int]] = {}
    for name, counts in zip(names, replies, strict=True):
        live = {_str(m): int(n) for m, n in (counts or {}).items() if int(n) > 0}
        if live:
            out[name] = live
    return out


def event_summary(entry_id: str, raw: bytes) -> dict[str, Any] | None:
    """One finished request from the event stream as a row, or ``None`` for a malformed entry."""
    try:
        ev = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(ev, dict):
        return None
    analysis = ev.get("analysis") or {}
    candidates = ev.get("candidates") or []
    top = candidates[0] if candidates and isinstance(candidates[0], dict) else {}
    return {
        "entry_id": entry_id,
        "request_id": ev.get("request_id"),
        "ts": ev.get("ts"),
        "kind": ev.get("kind"),
        "client": ev.get("client"),
        "requested_model": ev.get("requested_model"),
        "model": ev.get("model"),
        "backend": ev.get("backend"),
        "status": ev.get("status"),
        "outcome": ev.get("outcome"),
        "route_source": ev.get("route_source"),
        "stream": ev.get("stream"),
        "latency_ms": ev.get("latency_ms"),
        "ttft_ms": ev.get("ttft_ms"),
        "completion_tokens": ev.get("completion_tokens"),
        "category": analysis.get("category") if isinstance(analysis, dict) else None,
        "level": analysis.get("level") if isinstance(analysis, dict) else None,
        "reasons": (top.get("reasons") or [])[:3],
    }


async def recent_events(gw: GatewayState, *, after: str | None, count: int = RECENT) -> list[dict[str, Any]]:
    """Finished requests after stream id ``after`` (oldest first); without ``after`` the last ``count``."""
    stream = gw.settings.keys.request_events
    try:
        if after is None:
            entries = list(reversed(await gw.redis.xrevrange(stream, count=count)))
        else:
            entries = await gw.redis.xrange(stream, min=f"({after}", count=200)
    except (RedisError, OSError):
        return []
    out = []
    for entry_id, fields in entries:
        raw = fields.get(b"data")
        if raw is None:
            continue
        summary = event_summary(_str(entry_id), raw)
        if summary is not None:
            out.append(summary)
    return out


async def snapshot(gw: GatewayState, *, after: str | None) -> dict[str, Any]:
    """What ``/admin/live`` sends each tick: in-flight requests across the fleet and those finished since ``after``."""
    try:
        fleet = await fleet_inflight(gw)
    except (RedisError, OSError):
        fleet = {}
    return {
        "ts": time.time(),
        "inflight": own_inflight(gw),
        "inflight_fleet": fleet,
        "inflight_total": sum(n for models in fleet.values() for n in models.values()),
        "finished": await recent_events(gw, after=after),
    }
