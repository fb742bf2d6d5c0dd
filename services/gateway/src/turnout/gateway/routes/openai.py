"""The OpenAI-compatible API: chat, completions, embeddings, models, feedback.

The three model endpoints are plain Starlette routes (:data:`hot_routes`), not FastAPI ones:
FastAPI's per-request dependency solving measured 2-3x the cost of a bare Starlette endpoint
(174 vs 47 µs on the 2-core dev box), more than the forwarding itself. They parse and check
their bodies themselves (:mod:`turnout.gateway.validation`) and raise the same errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, Self

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from redis.exceptions import RedisError
from starlette.responses import Response
from starlette.routing import Route

from turnout.common.backends.names import untagged_match
from turnout.common.logging import request_id_var
from turnout.common.schemas.events import EVENT_FIELD, FeedbackEventV1
from turnout.common.schemas.route import RequestKind
from turnout.gateway.deps import ClientDep, StateDep, resolve
from turnout.gateway.errors import InvalidRequest, ModelNotFound, NoBackendAvailable
from turnout.gateway.forwarding import Exchange
from turnout.gateway.middleware import new_request_id
from turnout.gateway.pipeline import JSON_MEDIA, new_response_id
from turnout.gateway.response_cache import CACHE_HEADER, answerable, cache_of, cached_or_handle
from turnout.gateway.routing import (
    QUALITY_HEADER,
    chat_features,
    completion_features,
    embedding_features,
    parse_quality,
)
from turnout.gateway.shaping import RequestShaping
from turnout.gateway.state import GatewayState
from turnout.gateway.validation import check_chat, check_completion, check_embeddings, read_json

router = APIRouter(prefix="/v1", tags=["openai"])


def exchange(
    kind: RequestKind, body: dict[str, object], client: str | None, request: Request | None = None
) -> Exchange:
    """A new exchange for ``body`` (its ``turnout`` options removed): ids, stream flag, requested model, client."""
    stream = body.get("stream") is True and kind is not RequestKind.EMBEDDING
    body.pop("turnout", None)
    model = body.get("model")
    return Exchange(
        kind=kind,
        body=body,
        stream=stream,
        request_id=request_id_var.get() or new_request_id(),
        response_id=new_response_id(kind),
        client=client,
        requested_model=model if isinstance(model, str) and model else None,
        client_key=client if client is not None and client.startswith("key-") else None,
        client_ip=request.client.host if request is not None and request.client else None,
    )


async def chat_completions(request: Request) -> Response:
    """``POST /v1/chat/completions``: validated, served from the response cache or routed and forwarded."""
    gw, client = resolve(request)
    body = await read_json(request)
    opts = gw.settings.gateway
    check_chat(body, max_n=opts.max_n, max_messages=opts.max_messages)
    return await _cached_route(request, gw, client, body, RequestKind.CHAT, chat_features)


async def completions(request: Request) -> Response:
    """``POST /v1/completions``: the legacy text completion, cached and routed like a chat."""
    gw, client = resolve(request)
    body = await read_json(request)
    check_completion(body, max_n=gw.settings.gateway.max_n)
    return await _cached_route(request, gw, client, body, RequestKind.COMPLETION, completion_features)


async def _cached_route(
    request: Request,
    gw: GatewayState,
    client: str | None,
    body: dict[str, object],
    kind: RequestKind,
    features_of: Callable[[dict[str, object], int], dict[str, object]],
) -> Response:
    """Chat and text completions: the response cache in front of the pipeline; a hit is
    reported like any request (event, metrics) under its own response id."""
    quality = parse_quality(request.headers.get(QUALITY_HEADER), body)
    features = features_of(body, gw.settings.gateway.max_prompt_chars)
    cache = cache_of(request, gw.redis, gw.settings.keys, gw.settings.gateway.response_cache, gw.registry)
    cache_body = dict(body)  # before exchange() drops the "turnout" options the cache reads
    shaping = request_shaping(body)
    ex = exchange(kind, body, client, request)
    route = None
    if not answerable(cache, cache_body, request.headers.get(CACHE_HEADER)):
        # nothing can answer it but a backend: the scorer decides while the rest is set up
        route = gw.pipeline.route_early(ex, features, quality=quality)
    try:
        # replies are stored shaped: what shapes them for this client is part of the cache key
        cache_body["shaping"] = gw.settings.gateway.shaping.cache_key(shaping, key=ex.client_key, ip=ex.client_ip)
        await gw.pipeline.draw_limits(ex, features)  # a cache hit counts against the rate limits too
        return await cached_or_handle(
            request,
            cache,
            kind.value,
            cache_body,
            quality=quality,
            client=client,
            handle=lambda: gw.pipeline.handle(
                ex, features, quality=quality, shaping=shaping, receive=request.receive, route=route
            ),
            on_hit=lambda hit: gw.pipeline.cache_hit(ex, hit),
        )
    except BaseException:
        if route is not None:
            route.cancel()
        raise


async def embeddings(request: Request) -> Response:
    """``POST /v1/embeddings``: routed to an embedding model (never cached)."""
    gw, client = resolve(request)
    body = await read_json(request)
    check_embeddings(body)
    quality = parse_quality(request.headers.get(QUALITY_HEADER), body)
    features = embedding_features(body, gw.settings.gateway.max_prompt_chars)
    return await gw.pipeline.handle(
        exchange(RequestKind.EMBEDDING, body, client, request), features, quality=quality, receive=request.receive
    )


def request_shaping(body: dict[str, object], *, think: bool | None = None) -> RequestShaping:
    """The request's own shaping wishes (``turnout.shaping``, JSON mode, ``/no_think``)."""
    try:
        return RequestShaping.of(body, think=think)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        param = "turnout.shaping" + (f".{where}" if where else "")
        raise InvalidRequest(f"{param}: {first['msg']}", param=param, code="invalid_value") from None


async def model_list(gw: GatewayState) -> list[dict[str, object]]:
    """The virtual model, then (with ``list_real_models``) every catalog model not hidden."""
    opts = gw.settings.gateway
    out: list[dict[str, object]] = [
        {"id": opts.virtual_model, "object": "model", "created": gw.started_at, "owned_by": "turnout"}
    ]
    if opts.list_real_models:
        hidden = gw.catalog.hidden
        for m in await gw.catalog.models():
            if m.name == opts.virtual_model or m.name in hidden:
                continue
            owner = m.replicas[0].backend if m.replicas else "turnout"
            out.append({"id": m.name, "object": "model", "created": gw.started_at, "owned_by": owner})
    return out


@router.get("/models")
async def list_models(gw: StateDep, _client: ClientDep) -> Response:
    """``GET /v1/models``: the models a client may name."""
    return Response(orjson.dumps({"object": "list", "data": await model_list(gw)}), media_type=JSON_MEDIA)


@router.get("/models/{model:path}")
async def get_model(model: str, gw: StateDep, _client: ClientDep) -> Response:
    """One listed model; a name without a tag resolves as in requests (``llama3.1`` is
    ``llama3.1:latest``, or its only tag)."""
    by_id = {str(item["id"]): item for item in await model_list(gw)}
    item = by_id.get(model) or by_id.get(untagged_match(model, by_id) or "")
    if item is None:
        raise ModelNotFound(f"The model '{model}' does not exist", param="model")
    return Response(orjson.dumps(item), media_type=JSON_MEDIA)


class FeedbackIn(BaseModel):
    """A client's verdict on one reply: a score in -1..1 or thumbs up/down, and a comment."""

    model_config = ConfigDict(extra="forbid")

    response_id: str = Field(min_length=1, max_length=200)
    score: float | None = Field(default=None, ge=-1.0, le=1.0)
    thumbs: Literal["up", "down"] | None = None
    comment: str | None = Field(default=None, max_length=4000)

    @model_validator(mode="after")
    def _one_signal(self) -> Self:
        if (self.score is None) == (self.thumbs is None):
            raise ValueError("give exactly one of 'score' (-1..1) or 'thumbs' ('up' or 'down')")
        return self

    @property
    def value(self) -> float:
        """The verdict as a score: thumbs up is 1, down is -1."""
        if self.score is not None:
            return self.score
        return 1.0 if self.thumbs == "up" else -1.0


@router.post("/feedback", status_code=202)
async def feedback(fb: FeedbackIn, gw: StateDep, client: ClientDep) -> Response:
    """``POST /v1/feedback``: queue the verdict on the feedback stream (202; the sync worker stores it)."""
    event = FeedbackEventV1(
        response_id=fb.response_id, score=fb.value, comment=fb.comment, client=client, ts=time.time()
    )
    try:
        await gw.redis.xadd(
            gw.settings.keys.feedback_events,
            {EVENT_FIELD: event.model_dump_json()},
            maxlen=gw.settings.gateway.events_maxlen,
            approximate=True,
        )
    except (RedisError, OSError) as exc:
        raise NoBackendAvailable("feedback store is unavailable; retry later", code="feedback_unavailable") from exc
    body = {"status": "accepted", "response_id": fb.response_id, "score": fb.value}
    return Response(orjson.dumps(body), status_code=202, media_type=JSON_MEDIA)


hot_routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
]
