"""The request log, the audit log and the profiles, read through the admin API.

* ``GET /admin/requests`` — routing decisions, newest first. Filters: ``since``/``until``
  (ISO 8601 or Unix seconds), ``model``, ``backend``, ``client`` (an API key id ``key-…`` or an
  address), ``status`` (HTTP status), ``outcome``; pages of ``limit`` (≤ 500) with the cursor
  ``before`` (``next_before`` of the previous page).
* ``GET /admin/requests/{request_id}`` — one request: its prompt and reply (when the request log
  is on), the decision (source, prompt analysis, every candidate with its score, terms and
  reasons, the chosen one marked) and every attempt with its outcome and latency.
* ``GET /admin/audit-log`` — admin actions, newest first (``action``, ``limit``, ``before``).
* ``GET /admin/profiles`` — runtime profiles (``model``, ``limit``, ``offset``; ``total``).

They need the admin key like every ``/admin`` endpoint.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query
from starlette.responses import Response

from turnout.gateway import admin_queries as q
from turnout.gateway.auth import AdminDep
from turnout.gateway.deps import StateDep
from turnout.gateway.errors import InvalidRequest, NotFound
from turnout.gateway.pipeline import JSON_MEDIA

router = APIRouter(prefix="/admin", tags=["admin"])


def _json(doc: Any) -> Response:
    return Response(orjson.dumps(doc, default=str), media_type=JSON_MEDIA)


def parse_time(value: str | None, param: str) -> datetime | None:
    """A time given as ISO 8601 or Unix seconds (UTC when no zone is given); a 400 otherwise."""
    if value is None or value == "":
        return None
    try:
        if value.replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(value), tz=UTC)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError) as exc:
        raise InvalidRequest(f"'{param}' must be ISO 8601 or Unix seconds, not {value!r}", param=param) from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


Limit = Annotated[int, Query(ge=1, le=q.MAX_PAGE)]
Name = Annotated[str | None, Query(max_length=255)]


@router.get("/requests")
async def requests(
    gw: StateDep,
    _: AdminDep,
    since: Name = None,
    until: Name = None,
    model: Name = None,
    backend: Name = None,
    client: Name = None,
    status: Annotated[int | None, Query(ge=100, le=599)] = None,
    outcome: Name = None,
    limit: Limit = 50,
    before: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    """``GET /admin/requests``: the request log, newest first, filtered and paged by ``before``."""
    flt = q.RequestFilter(
        since=parse_time(since, "since"),
        until=parse_time(until, "until"),
        model=model,
        backend=backend,
        client=client,
        status=status,
        outcome=outcome,
    )
    return _json(await q.list_requests(gw.engine, flt, limit=limit, before=before))


@router.get("/requests/{request_id}")
async def request_detail(gw: StateDep, _: AdminDep, request_id: str) -> Response:
    """``GET /admin/requests/{id}``: one request with its routing decision and attempts."""
    doc = await q.get_request(gw.engine, request_id[:128])
    if doc is None:
        raise NotFound(f"No request '{request_id}' in the request log (stored a moment after it ends)")
    return _json(doc)


@router.get("/audit-log")
async def audit_log(
    gw: StateDep,
    _: AdminDep,
    action: Name = None,
    limit: Limit = 50,
    before: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    """``GET /admin/audit-log``: admin actions, newest first."""
    return _json(await q.audit_log(gw.engine, limit=limit, before=before, action=action))


@router.get("/profiles")
async def profiles(
    gw: StateDep,
    _: AdminDep,
    model: Name = None,
    limit: Limit = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    """``GET /admin/profiles``: stored model profiles (quality, speed, VRAM)."""
    return _json(await q.profiles(gw.engine, model=model, limit=limit, offset=offset))
