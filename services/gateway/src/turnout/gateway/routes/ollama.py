"""The Ollama-compatible API (``/api/chat``, ``/api/generate``, ``/api/embed``, ``/api/tags``):
bodies are translated to OpenAI form and take the same path as ``/v1``; replies go back as
Ollama JSON or NDJSON streams."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.routing import Route

from turnout.common.backends.translate import (
    iso_now,
    ollama_chat_request_to_openai,
    ollama_embed_request_to_openai,
    ollama_generate_request_to_openai,
)
from turnout.common.errors import TranslationError
from turnout.common.schemas.route import RequestKind
from turnout.gateway.deps import ClientDep, StateDep, resolve
from turnout.gateway.errors import InvalidRequest, InvalidType, ModelNotFound
from turnout.gateway.pipeline import JSON_MEDIA, NDJSON_MEDIA, Shape
from turnout.gateway.routes.ollama_info import find_model
from turnout.gateway.routes.openai import exchange, request_shaping
from turnout.gateway.routing import QUALITY_HEADER, chat_features, embedding_features, parse_quality
from turnout.gateway.state import GatewayState
from turnout.gateway.validation import (
    check_model,
    check_ollama_chat,
    check_ollama_embed,
    check_ollama_generate,
    read_json,
)

router = APIRouter(prefix="/api", tags=["ollama"])

Json = dict[str, Any]

OLLAMA_VERSION = "0.6.0"


def _translated(fn: Callable[[Json], Json], body: Json) -> Json:
    try:
        return fn(body)
    except TranslationError as exc:
        raise InvalidRequest(str(exc), code="invalid_value") from exc


async def _load_reply(gw: GatewayState, raw: Json, *, chat: bool) -> Response:
    """Ollama's load and unload calls (``/api/chat`` without messages, ``/api/generate`` without a
    prompt; ``keep_alive: 0`` unloads) ask nothing of a model: the scorer loads and unloads models
    on the fleet as it routes, so they are answered at once, for a model that exists."""
    check_model(raw)
    name = raw.get("model") or gw.settings.gateway.virtual_model
    if not isinstance(name, str):
        raise InvalidType("'model' must be a string", param="model")
    if name != gw.settings.gateway.virtual_model:
        model = await find_model(gw, name)
        if model is None:
            raise ModelNotFound(f"model '{name}' not found", param="model")
        name = model.name
    unload = raw.get("keep_alive") in (0, "0", "0s", "0m")
    body: Json = {"model": name, "created_at": iso_now(), "done": True, "done_reason": "unload" if unload else "load"}
    if chat:
        body["message"] = {"role": "assistant", "content": ""}
    else:
        body["response"] = ""
    stream = raw.get("stream") is not False  # Ollama streams unless told not to: one NDJSON line
    return Response(orjson.dumps(body) + (b"\n" if stream else b""), media_type=NDJSON_MEDIA if stream else JSON_MEDIA)


async def chat(request: Request) -> Response:
    """``POST /api/chat``: an Ollama chat, routed like ``/v1/chat/completions`` and answered in Ollama's shape."""
    gw, client = resolve(request)
    raw = await read_json(request)
    if raw.get("messages") in (None, []):
        return await _load_reply(gw, raw, chat=True)
    check_ollama_chat(raw, max_messages=gw.settings.gateway.max_messages)
    return await _route_chat(request, gw, client, raw, ollama_chat_request_to_openai, Shape.OLLAMA_CHAT)


async def generate(request: Request) -> Response:
    """``POST /api/generate``: a prompt (and system, images) routed as a chat, answered in Ollama's shape."""
    gw, client = resolve(request)
    raw = await read_json(request)
    if not raw.get("prompt") and not raw.get("system") and not raw.get("images"):
        return await _load_reply(gw, raw, chat=False)
    check_ollama_generate(raw)
    return await _route_chat(request, gw, client, raw, ollama_generate_request_to_openai, Shape.OLLAMA_GENERATE)


async def _route_chat(
    request: Request, gw: GatewayState, client: str | None, raw: Json, translate: Callable[[Json], Json], shape: Shape
) -> Response:
    body = _translated(translate, raw)
    quality = parse_quality(request.headers.get(QUALITY_HEADER), raw)
    features = chat_features(body, gw.settings.gateway.max_prompt_chars)
    shaping = request_shaping({**body, "turnout": raw.get("turnout")}, think=raw.get("think"))
    ex = exchange(RequestKind.CHAT, body, client, request)
    ex.think = raw.get("think")
    return await gw.pipeline.handle(
        ex, features, quality=quality, shape=shape, shaping=shaping, receive=request.receive
    )


async def _embed(request: Request, gw: GatewayState, client: str | None, shape: Shape) -> Response:
    raw = await read_json(request)
    check_ollama_embed(raw)
    body = _translated(ollama_embed_request_to_openai, raw)
    quality = parse_quality(request.headers.get(QUALITY_HEADER), raw)
    features = embedding_features(body, gw.settings.gateway.max_prompt_chars)
    ex = exchange(RequestKind.EMBEDDING, body, client, request)
    return await gw.pipeline.handle(ex, features, quality=quality, shape=shape, receive=request.receive)


async def embed(request: Request) -> Response:
    """``POST /api/embed``: embeddings for one or more inputs, answered in Ollama's shape."""
    gw, client = resolve(request)
    return await _embed(request, gw, client, Shape.OLLAMA_EMBED)


async def embeddings_legacy(request: Request) -> Response:
    """``POST /api/embeddings``: Ollama's older one-prompt embedding call."""
    gw, client = resolve(request)
    return await _embed(request, gw, client, Shape.OLLAMA_EMBEDDINGS)


@router.get("/tags")
async def tags(gw: StateDep, _client: ClientDep) -> Response:
    """``GET /api/tags``: the virtual model and (with ``list_real_models``) the catalog, in Ollama's shape."""
    opts = gw.settings.gateway
    now = iso_now()
    models = [
        {
            "name": opts.virtual_model,
            "model": opts.virtual_model,
            "modified_at": now,
            "size": 0,
            "digest": "",
            "details": {"family": "turnout"},
        }
    ]
    if opts.list_real_models:
        for m in await gw.catalog.models():
            if m.name in gw.catalog.hidden:
                continue
            details = {
                "family": m.family,
                "parameter_size": f"{m.params_b:g}B" if m.params_b else "",
                "quantization_level": m.quant or "",
            }
            models.append(
                {
                    "name": m.name,
                    "model": m.name,
                    "modified_at": now,
                    "size": m.vram_bytes or 0,
                    "digest": "",
                    "details": details,
                }
            )
    return Response(orjson.dumps({"models": models}), media_type=JSON_MEDIA)


@router.get("/version")
async def version() -> Response:
    """``GET /api/version``: the Ollama version this API imitates."""
    return Response(orjson.dumps({"version": OLLAMA_VERSION}), media_type=JSON_MEDIA)


hot_routes = [
    Route("/api/chat", chat, methods=["POST"]),
    Route("/api/generate", generate, methods=["POST"]),
    Route("/api/embed", embed, methods=["POST"]),
    Route("/api/embeddings", embeddings_legacy, methods=["POST"]),
]
