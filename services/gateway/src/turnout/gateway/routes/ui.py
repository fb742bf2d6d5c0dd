"""The dashboard at ``/ui``, served by the gateway, protected like the admin API.

* ``GET /ui`` — live requests in flight and just finished (Server-Sent Events from
  ``/admin/live``), recent requests with their category and the top reasons of the decision, the
  performance scatter (time to first token against tokens/s per model, from the request log),
  the fleet (hosts, GPUs, VRAM, loaded models, and the circuit breakers as ``/admin/circuits``
  reads them: state, consecutive failures, cooldown left; open ones highlighted), the catalog
  (profiles per category, speed, benchmark) and profiling progress.
* ``GET /ui/requests/{request_id}`` — one request: prompt, reply, the decision (analysis, every
  candidate with score, terms and reasons) and every attempt with its timing.
* ``GET /ui/login`` / ``POST /ui/login`` (JSON ``{"key": …}``) — store the admin key in a
  cookie (see :mod:`turnout.gateway.ui`); ``POST /ui/logout`` forgets it.
* ``GET /ui/static/{file}`` — the page's JS and CSS.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Request
from redis.exceptions import RedisError
from starlette.responses import FileResponse, HTMLResponse, Response

from turnout.gateway import admin_queries as q
from turnout.gateway.auth import AdminDep
from turnout.gateway.deps import StateDep
from turnout.gateway.errors import InvalidRequest, NotFound, Unauthorized
from turnout.gateway.routes.admin_catalog import profiling_report
from turnout.gateway.routes.admin_circuits import circuits_report
from turnout.gateway.routes.admin_vram import vram_report
from turnout.gateway.ui import COOKIE, STATIC, scatter_svg, templates

log = logging.getLogger(__name__)

router = APIRouter(prefix="/ui", tags=["dashboard"], include_in_schema=False)
_templates = templates()
_STATIC_FILES = {p.name: p for p in STATIC.iterdir() if p.is_file()}
_NO_STORE = {"Cache-Control": "no-store"}


def _page(name: str, **context: Any) -> HTMLResponse:
    return HTMLResponse(_templates.get_template(name).render(**context), headers=_NO_STORE)


async def _fleet(gw: Any) -> dict[str, Any]:
    try:
        return await vram_report(gw, actions=10)
    except (RedisError, OSError) as exc:
        log.warning("dashboard: fleet state unavailable: %s", exc)
        return {"hosts": [], "actions": [], "error": str(exc)}


async def _circuits(gw: Any) -> dict[str, Any]:
    try:
        return await circuits_report(gw)
    except (RedisError, OSError) as exc:
        log.warning("dashboard: circuit state unavailable: %s", exc)
        return {"circuits": [], "policy": None, "error": str(exc)}


async def _profiling(gw: Any) -> dict[str, Any]:
    try:
        return await profiling_report(gw)
    except (RedisError, OSError) as exc:
        return {"queue": [], "running": [], "error": str(exc)}


@router.get("", response_class=HTMLResponse)
async def overview(gw: StateDep, _: AdminDep) -> HTMLResponse:
    """The dashboard: recent requests, speed against quality, fleet, circuits, catalog and profiling."""
    recent = await q.list_requests(gw.engine, q.RequestFilter(), limit=30)
    points = await q.performance(gw.engine)
    models = await gw.catalog.models()
    return _page(
        "overview.html",
        recent=recent["data"],
        scatter=scatter_svg(points),
        n_points=len(points),
        fleet=await _fleet(gw),
        circuits=await _circuits(gw),
        catalog=sorted(models, key=lambda m: m.name),
        categories=sorted({c for m in models for c in m.quality}),
        profiling=await _profiling(gw),
        request_log=gw.settings.gateway.request_log.enabled,
        backends=gw.settings.backends,
    )


@router.get("/requests/{request_id}", response_class=HTMLResponse)
async def request_page(gw: StateDep, _: AdminDep, request_id: str) -> HTMLResponse:
    """One request's page (a 404 page while it is not yet in the request log)."""
    doc = await q.get_request(gw.engine, request_id[:128])
    if doc is None:
        page = _page("pending.html", request_id=request_id)
        page.status_code = 404
        return page
    return _page("request.html", r=doc, request_log=gw.settings.gateway.request_log.enabled)


@router.get("/static/{name}")
async def static(name: str) -> FileResponse:
    """The dashboard's static files (a fixed set, cached for five minutes)."""
    path = _STATIC_FILES.get(name)
    if path is None:
        raise NotFound(f"No static file '{name}'")
    return FileResponse(path, headers={"Cache-Control": "max-age=300"})


@router.get("/login", response_class=HTMLResponse)
async def login_form(error: str | None = None) -> HTMLResponse:
    """The dashboard's login page."""
    return _page("login.html", error=error)


@router.post("/login", status_code=204)
async def login(request: Request, gw: StateDep) -> Response:
    """``{"key": "<admin key>"}`` (JSON, sent by the login page's script: the gateway takes only
    JSON bodies, which a cross-site form cannot send) -> the key in an HttpOnly cookie."""
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest('The body must be JSON: {"key": "<admin key>"}') from exc
    key = body.get("key") if isinstance(body, dict) else None
    if not isinstance(key, str) or not key.strip() or len(key) > 512:
        raise InvalidRequest('Give the admin key as {"key": "<admin key>"}', param="key")
    admin_key = gw.settings.admin_key
    if admin_key is not None and not hmac.compare_digest(key.strip().encode(), admin_key.get_secret_value().encode()):
        raise Unauthorized("That is not the admin key")
    response = Response(status_code=204)
    response.set_cookie(
        COOKIE,
        quote(key.strip(), safe=""),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=12 * 3600,
    )
    return response


@router.post("/logout", status_code=204)
async def logout() -> Response:
    """Forget the admin key cookie."""
    response = Response(status_code=204)
    response.delete_cookie(COOKIE)
    return response
