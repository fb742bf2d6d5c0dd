"""Operator views that are not the request log: live activity, a set-up check and the catalog.

* ``GET /admin/live`` — Server-Sent Events, one ``snapshot`` event per ``interval`` seconds
  (0.2–10, default 1): this gateway's requests in flight, every gateway's in-flight counts per
  backend and model, and the requests finished since the previous event (from the Redis event
  stream; the first event carries the last 20). The dashboard and ``turnout requests tail``
  follow it. It ends when the client goes away.
* ``GET /admin/check`` — what an operator must fix: configuration (environment, keys, backends,
  request log), Redis, Postgres and its schema revision, a live scorer, and every backend (lists
  its models within 3 s); each item ``{name, ok, detail, fix}``. ``turnout check`` prints it.
* ``GET /admin/catalog`` — the catalog snapshot the gateway holds: every model with its
  replicas, capabilities, profile quality per category, speed and benchmark score.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query
from redis.exceptions import RedisError
from sqlalchemy import text
from starlette.responses import Response, StreamingResponse

from turnout.common.backends.clients import client_for
from turnout.common.db.migrate import head_revision
from turnout.common.db.session import DB_UNAVAILABLE
from turnout.common.errors import BackendError
from turnout.common.rpc import ROUTE_V1
from turnout.gateway import live
from turnout.gateway.auth import AdminDep
from turnout.gateway.deps import StateDep
from turnout.gateway.pipeline import JSON_MEDIA
from turnout.gateway.state import GatewayState

log = logging.getLogger(__name__)

router = APIRouter(prefix="/admin", tags=["admin"])

CHECK_TIMEOUT_S = 3.0
_EXPECTED: tuple[type[BaseException], ...] = (BackendError, RedisError, *DB_UNAVAILABLE)
"""What a probe raises when the thing it checks is down or misconfigured."""


def _json(doc: Any) -> Response:
    return Response(orjson.dumps(doc, default=str), media_type=JSON_MEDIA)


LIVE_MAX_S = 300.0
"""One ``/admin/live`` response lasts this long; ``EventSource`` (and ``turnout requests tail``)
reconnect. It bounds how long an open dashboard can hold up a graceful shutdown."""


async def live_events(gw: GatewayState, interval_s: float, max_s: float = LIVE_MAX_S) -> AsyncIterator[bytes]:
    """Server-sent ``snapshot`` events of live traffic every ``interval_s`` for at most ``max_s``."""
    after: str | None = None
    yield b"retry: 2000\n\n"
    end = time.monotonic() + max_s
    while time.monotonic() < end:
        snap = await live.snapshot(gw, after=after)
        if snap["finished"]:
            after = snap["finished"][-1]["entry_id"]
        elif after is None:
            after = "0-0"  # an empty stream: everything from now on is new
        yield b"event: snapshot\ndata: " + orjson.dumps(snap, default=str) + b"\n\n"
        await asyncio.sleep(interval_s)


@router.get("/live")
async def live_stream(
    gw: StateDep, _: AdminDep, interval: Annotated[float, Query(ge=0.2, le=10.0)] = 1.0
) -> StreamingResponse:
    """``GET /admin/live``: the live traffic as an event stream (the dashboard reconnects)."""
    return StreamingResponse(
        live_events(gw, interval),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# --- check --------------------------------------------------------------------------------------


def _item(name: str, ok: bool, detail: str, fix: str = "") -> dict[str, Any]:
    return {"name": name, "ok": ok, "detail": detail, "fix": "" if ok else fix}


async def _timed(name: str, probe: Callable[[], Awaitable[dict[str, Any]]], fix: str) -> dict[str, Any]:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            return await probe()
    except TimeoutError:
        return _item(name, False, f"no answer within {CHECK_TIMEOUT_S:.0f} s", fix)
    except _EXPECTED as exc:
        return _item(name, False, f"{type(exc).__name__}: {exc}"[:300], fix)
    except Exception as exc:  # a boundary: the report says it failed; the traceback goes to the log
        log.exception("check %s failed unexpectedly", name)
        return _item(name, False, f"{type(exc).__name__}: {exc}"[:300], fix)


def config_items(gw: GatewayState) -> list[dict[str, Any]]:
    """Checks of the configuration itself (admin and client keys, backends, request log), each with a fix."""
    s = gw.settings
    opts = s.gateway
    items = [
        _item(
            "configuration: admin key",
            s.admin_key is not None or s.environment != "prod",
            "set" if s.admin_key is not None else f"not set (environment {s.environment})",
            "set TURNOUT_ADMIN_KEY: the admin API and the dashboard are open without it",
        ),
        _item(
            "configuration: client keys",
            bool(opts.api_keys) or s.environment != "prod",
            f"{len(opts.api_keys or [])} key(s)" if opts.api_keys else "none: /v1 and /api are open",
            "set TURNOUT_GATEWAY__API_KEYS='[\"<key>\"]' in prod",
        ),
        _item(
            "configuration: backends",
            bool(s.backends),
            ", ".join(f"{b.name} ({b.kind.value} {b.url})" for b in s.backends) or "none",
            "set TURNOUT_BACKENDS (JSON list) or TURNOUT_BACKENDS_FILE; see README 'Configuration'",
        ),
        _item(
            "configuration: request log",
            True,
            "on: prompts and replies stored, redacted"
            if opts.request_log.enabled
            else "off (TURNOUT_GATEWAY__REQUEST_LOG__ENABLED=true stores prompts and replies)",
        ),
    ]
    return items


async def check_report(gw: GatewayState) -> dict[str, Any]:
    """Configuration checks plus live probes of Redis, Postgres, the scorer and each backend."""
    s = gw.settings

    async def redis_probe() -> dict[str, Any]:
        await gw.redis.ping()
        return _item("redis", True, "answers PING")

    async def postgres_probe() -> dict[str, Any]:
        async with gw.engine.connect() as conn:
            rev = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        head = head_revision()
        ok = rev == head
        return _item("postgres", ok, f"schema at {rev}" + ("" if ok else f", head is {head}"), "run `make migrate`")

    async def scorer_probe() -> dict[str, Any]:
        alive = bool(await gw.redis.exists(s.keys.rpc_alive(ROUTE_V1.name, ROUTE_V1.version)))
        return _item(
            "scorer",
            alive,
            "a scorer is alive" if alive else "no scorer heartbeat: requests use the gateway's fallback rules",
            "start the scorer (python -m turnout.scorer) with the same TURNOUT_REDIS_URL and TURNOUT_KEY_PREFIX",
        )

    def backend_probe(cfg: Any) -> Callable[[], Awaitable[dict[str, Any]]]:
        async def probe() -> dict[str, Any]:
            models = await client_for(cfg, gw.session, timeout_s=CHECK_TIMEOUT_S).list_models()
            names = ", ".join(m.name for m in models[:8]) + (" …" if len(models) > 8 else "")
            return _item(f"backend {cfg.name}", bool(models), f"{len(models)} model(s): {names}", "pull a model")

        return probe

    probes = [
        _timed("redis", redis_probe, f"start Redis or fix TURNOUT_REDIS_URL (now {_redact(s.redis_url)})"),
        _timed(
            "postgres", postgres_probe, f"start Postgres or fix TURNOUT_DATABASE_URL (now {_redact(s.database_url)})"
        ),
        _timed("scorer", scorer_probe, "start the scorer"),
        *(
            _timed(
                f"backend {b.name}",
                backend_probe(b),
                f"is {b.url} up? check the backend's URL, kind ({b.kind.value}) and api_key in TURNOUT_BACKENDS",
            )
            for b in s.backends
        ),
    ]
    items = config_items(gw) + list(await asyncio.gather(*probes))
    return {"ok": all(i["ok"] for i in items), "items": items}


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        cred, _, host = rest.rpartition("@")
        user = cred.split(":", 1)[0]
        return f"{scheme}{sep}{user}:***@{host}" if ":" in cred else f"{scheme}{sep}{cred}@{host}"
    return url


@router.get("/check")
async def check(gw: StateDep, _: AdminDep) -> Response:
    """``GET /admin/check``: what is wrong with this setup and how to fix it."""
    return _json(await check_report(gw))


@router.get("/catalog")
async def catalog(gw: StateDep, _: AdminDep) -> Response:
    """``GET /admin/catalog``: the catalog the gateway routes by, with every model's replicas and scores."""
    models = await gw.catalog.models()
    return _json({"data": [m.model_dump(mode="json") for m in models]})
