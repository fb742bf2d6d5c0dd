"""Routing administration: explain a decision, reload rules, invalidate caches.

* ``GET /admin/explain?prompt=…&model=&quality=&images=&tools=&json_mode=&max_tokens=`` and
  ``POST /admin/explain`` with a full chat-completions body (``X-Turnout-Quality`` honoured):
  the ``scorer.explain`` RPC — the prompt analysis, every candidate with its score broken down by
  term, the models the filters removed and why, the notes of fallbacks and rules — without
  generating anything. The features are extracted exactly as for ``/v1/chat/completions``.
* ``POST /admin/reload``: every scorer replica reloads its operator rules file and its catalog
  (a ``reload`` message on ``keys.scorer_control``).
* ``POST /admin/cache/invalidate`` (``?which=all|routing|response``): drops the scorers' routing
  cache (an ``invalidate_cache`` control message) and the gateway's response cache.
* Router prior (the learned term's shipped/trained artefact, ``turnout.common.router_priors``):
  ``GET /admin/router`` lists the stored versions and the active one; ``POST /admin/router/train``
  asks a scorer replica to fit a new version on this deployment's grades and feedback and
  activate it (a ``train_router`` control message; the work runs in the background);
  ``POST /admin/router/activate`` with ``{"version": "<v>"}`` (``"shipped"``: the packaged one)
  and ``POST /admin/router/rollback`` switch every scorer (they hot-reload it).

Admin only (:mod:`turnout.gateway.auth`): the admin key, or loopback when none is configured;
``/admin/explain`` needs no client key besides.
"""

from __future__ import annotations

from typing import Literal

import orjson
from fastapi import APIRouter, Query, Request
from redis.exceptions import RedisError
from starlette.responses import Response

from turnout.common import router_priors
from turnout.common.errors import RemoteError, RpcTimeout, RpcUnavailable
from turnout.common.rpc import EXPLAIN_V1
from turnout.common.schemas.route import RequestKind, RouteRequestV1
from turnout.gateway.api_schemas import ADMIN_ACTION, EXPLAIN_BODY
from turnout.gateway.auth import AdminDep
from turnout.gateway.deps import StateDep
from turnout.gateway.errors import InvalidRequest, NoBackendAvailable, NotFound
from turnout.gateway.pipeline import JSON_MEDIA
from turnout.gateway.response_cache import cache_of
from turnout.gateway.routing import QUALITY_HEADER, chat_features, parse_quality
from turnout.gateway.state import GatewayState
from turnout.gateway.validation import MAX_MODEL_NAME, MAX_TOKENS, check_chat, read_json

router = APIRouter(prefix="/admin", tags=["admin"])

EXPLAIN_TIMEOUT_S = 2.0
ADMIN_CLIENT = "admin"
"""The client an explanation is made for (per-client rules match it; no client key is needed)."""


async def _explain(gw: GatewayState, req: RouteRequestV1) -> Response:
    try:
        reply = await gw.rpc.call(EXPLAIN_V1, req, timeout=EXPLAIN_TIMEOUT_S)
    except (RpcTimeout, RpcUnavailable, RemoteError) as exc:
        raise NoBackendAvailable(f"the scorer could not explain the request ({type(exc).__name__})") from exc
    body = {"request": req.model_dump(mode="json"), **reply.model_dump(mode="json")}
    return Response(orjson.dumps(body), media_type=JSON_MEDIA)


@router.get("/explain")
async def explain_get(
    gw: StateDep,
    _admin: AdminDep,
    prompt: str = Query(default="", max_length=100_000),
    model: str | None = Query(default=None, max_length=MAX_MODEL_NAME),
    quality: float | None = Query(default=None, ge=0.0, le=1.0),
    images: bool = False,
    tools: bool = False,
    json_mode: bool = False,
    max_tokens: int | None = Query(default=None, ge=1, le=MAX_TOKENS),
) -> Response:
    """``GET /admin/explain``: how the scorer would rank the models for a prompt given as query parameters."""
    max_chars = gw.settings.gateway.max_prompt_chars
    req = RouteRequestV1(
        kind=RequestKind.CHAT,
        requested_model=None if model in (None, "", gw.settings.gateway.virtual_model) else model,
        text=prompt[-max_chars:],
        n_messages=1,
        has_images=images,
        has_tools=tools,
        json_mode=json_mode,
        est_prompt_tokens=len(prompt) // 4 + 4,
        max_tokens=max_tokens,
        client=ADMIN_CLIENT,
        quality=quality,
    )
    return await _explain(gw, req)


@router.post("/explain", openapi_extra=EXPLAIN_BODY)
async def explain_post(request: Request, gw: StateDep, _admin: AdminDep) -> Response:
    """``POST /admin/explain``: the same for a whole chat body."""
    body = await read_json(request)
    opts = gw.settings.gateway
    check_chat(body, max_n=opts.max_n, max_messages=opts.max_messages)
    quality = parse_quality(request.headers.get(QUALITY_HEADER), body)
    features = chat_features(body, gw.settings.gateway.max_prompt_chars)
    model = body.get("model")
    requested = None if model in (None, "", gw.settings.gateway.virtual_model) else str(model)
    req = RouteRequestV1.model_validate(
        {
            **features,
            "requested_model": requested,
            "stream": body.get("stream") is True,
            "client": ADMIN_CLIENT,
            "quality": quality,
        }
    )
    return await _explain(gw, req)


async def _control(gw: GatewayState, action: str) -> int:
    try:
        return int(await gw.redis.publish(gw.settings.keys.scorer_control, orjson.dumps({"action": action})))
    except (RedisError, OSError) as exc:
        raise NoBackendAvailable("Redis is unavailable; retry later") from exc


@router.post("/reload", openapi_extra=ADMIN_ACTION)
async def reload(gw: StateDep, _admin: AdminDep) -> Response:
    """Tell every scorer replica to reload its catalog and rules now."""
    replicas = await _control(gw, "reload")
    return Response(orjson.dumps({"status": "ok", "scorer_replicas_notified": replicas}), media_type=JSON_MEDIA)


@router.post("/cache/invalidate", openapi_extra=ADMIN_ACTION)
async def invalidate(
    request: Request, gw: StateDep, _admin: AdminDep, which: Literal["all", "routing", "response"] = "all"
) -> Response:
    """Drop the scorers' routing cache, the response cache, or both (``which``)."""
    out: dict[str, object] = {"status": "ok"}
    if which in ("all", "routing"):
        out["scorer_replicas_notified"] = await _control(gw, "invalidate_cache")
    if which in ("all", "response"):
        cache = cache_of(request, gw.redis, gw.settings.keys, gw.settings.gateway.response_cache, gw.registry)
        try:
            out["response_cache_entries_removed"] = await cache.invalidate()
        except (RedisError, OSError) as exc:
            raise NoBackendAvailable("Redis is unavailable; retry later") from exc
    return Response(orjson.dumps(out), media_type=JSON_MEDIA)


@router.get("/router")
async def router_priors_list(gw: StateDep, _admin: AdminDep) -> Response:
    """The stored learned-router versions and which one is active."""
    try:
        versions = await router_priors.versions(gw.redis, gw.settings.keys)
        active = await router_priors.active_version(gw.redis, gw.settings.keys)
    except (RedisError, OSError) as exc:
        raise NoBackendAvailable("Redis is unavailable; retry later") from exc
    return Response(orjson.dumps({"active": active or "shipped", "versions": versions}), media_type=JSON_MEDIA)


@router.post("/router/train", openapi_extra=ADMIN_ACTION)
async def router_train(gw: StateDep, _admin: AdminDep) -> Response:
    """Ask the scorers to train a new learned-router version (202: it runs in the background)."""
    replicas = await _control(gw, "train_router")
    body = {"status": "accepted", "scorer_replicas_notified": replicas}
    return Response(orjson.dumps(body), status_code=202, media_type=JSON_MEDIA)


@router.post("/router/activate", openapi_extra=ADMIN_ACTION)
async def router_activate(request: Request, gw: StateDep, _admin: AdminDep) -> Response:
    """Make a stored learned-router version (or ``shipped``) the active one."""
    body = await read_json(request)
    version = body.get("version") if isinstance(body, dict) else None
    if not isinstance(version, str) or not version:
        raise InvalidRequest("'version' must be a stored router prior version or 'shipped'", param="version")
    try:
        await router_priors.set_active(gw.redis, gw.settings.keys, None if version == "shipped" else version)
    except router_priors.PriorStoreError as exc:
        raise NotFound(str(exc)) from exc
    except (RedisError, OSError) as exc:
        raise NoBackendAvailable("Redis is unavailable; retry later") from exc
    return Response(orjson.dumps({"status": "ok", "active": version}), media_type=JSON_MEDIA)


@router.post("/router/rollback", openapi_extra=ADMIN_ACTION)
async def router_rollback(gw: StateDep, _admin: AdminDep) -> Response:
    """Go back to the previously active learned-router version."""
    try:
        version = await router_priors.rollback(gw.redis, gw.settings.keys)
    except (RedisError, OSError) as exc:
        raise NoBackendAvailable("Redis is unavailable; retry later") from exc
    return Response(orjson.dumps({"status": "ok", "active": version or "shipped"}), media_type=JSON_MEDIA)
