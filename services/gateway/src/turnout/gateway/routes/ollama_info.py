"""What Ollama clients ask besides chat: ``GET|HEAD /`` ("Ollama is running"), ``POST /api/show``
(a model's details and capabilities, from the catalog) and ``GET /api/ps`` (the models loaded on
the fleet's GPUs, from the gpu-agents' host states in Redis), in Ollama's shapes."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.exceptions import RedisError
from starlette.responses import PlainTextResponse, Response

from turnout.common.backends.names import untagged_match
from turnout.common.backends.translate import iso_now
from turnout.common.schemas.catalog import CatalogModelV1
from turnout.common.schemas.fleet import HostStateV1
from turnout.gateway.deps import ClientDep, StateDep
from turnout.gateway.errors import InvalidRequest, ModelNotFound
from turnout.gateway.pipeline import JSON_MEDIA
from turnout.gateway.state import GatewayState

log = logging.getLogger(__name__)

router = APIRouter(tags=["ollama"])

Json = dict[str, Any]

RUNNING = "Ollama is running"


@router.get("/", response_class=PlainTextResponse, summary="Ollama's liveness probe")
async def root() -> PlainTextResponse:
    """``GET /``: the plain-text liveness answer Ollama clients probe for."""
    return PlainTextResponse(RUNNING)


@router.head("/", include_in_schema=False)
async def root_head() -> PlainTextResponse:
    """``HEAD /``: the same, for clients that probe with HEAD."""
    return PlainTextResponse(RUNNING)


class ShowRequest(BaseModel):
    """``POST /api/show``: ``model`` (``name`` in older clients)."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(default=None, min_length=1, examples=["llama3.1:8b"])
    name: str | None = Field(default=None, min_length=1, description="Older clients' spelling of 'model'")
    verbose: bool = False


class ModelDetails(BaseModel):
    """Ollama's ``details`` of a model: family, size and quantisation."""

    parent_model: str = ""
    format: str = "gguf"
    family: str = ""
    families: list[str] = Field(default_factory=list)
    parameter_size: str = ""
    quantization_level: str = ""


class ShowResponse(BaseModel):
    """``/api/show``'s answer: details, capabilities and model info."""

    modified_at: str
    modelfile: str = ""
    parameters: str = ""
    template: str = ""
    license: str = ""
    details: ModelDetails
    model_info: dict[str, Any]
    capabilities: list[str]


class RunningModel(BaseModel):
    """One model resident on a GPU host, as ``/api/ps`` lists it."""

    name: str
    model: str
    size: int
    digest: str = ""
    details: ModelDetails
    expires_at: str | None
    size_vram: int


class PsResponse(BaseModel):
    """``/api/ps``'s answer: the loaded models."""

    models: list[RunningModel]


@router.post("/api/show", response_model=ShowResponse, summary="A model's details and capabilities")
async def show(req: ShowRequest, gw: StateDep, _client: ClientDep) -> Response:
    """``POST /api/show``: a catalog model's details and capabilities (the virtual model can do everything)."""
    name = req.model or req.name
    if name is None:
        raise InvalidRequest("'model' is a required property", param="model", code="missing_required_parameter")
    virtual = gw.settings.gateway.virtual_model
    if name == virtual:
        body = _show_virtual(virtual)
    else:
        model = await find_model(gw, name)
        if model is None:
            raise ModelNotFound(f"model '{name}' not found", param="model")
        body = _show(model)
    return Response(orjson.dumps(body), media_type=JSON_MEDIA)


async def find_model(gw: GatewayState, name: str) -> CatalogModelV1 | None:
    """A listed catalog model by name, or by name without its tag as Ollama resolves it."""
    models = [m for m in await gw.catalog.models() if m.name not in gw.catalog.hidden]
    by_name = {m.name: m for m in models}
    found = by_name.get(name)
    if found is None:
        tagged = untagged_match(name, by_name)
        found = by_name.get(tagged) if tagged else None
    return found


def _details(model: CatalogModelV1) -> Json:
    return ModelDetails(
        family=model.family,
        families=[model.family] if model.family else [],
        parameter_size=f"{model.params_b:g}B" if model.params_b else "",
        quantization_level=model.quant or "",
    ).model_dump()


def _capabilities(model: CatalogModelV1) -> list[str]:
    caps = model.capabilities
    out = []
    if caps.embedding:
        out.append("embedding")
    if caps.chat or caps.completion:
        out.append("completion")
    if caps.tools:
        out.append("tools")
    if caps.vision:
        out.append("vision")
    return out


def _show(model: CatalogModelV1) -> Json:
    arch = model.family or "unknown"
    info: Json = {"general.architecture": arch}
    if model.params_b:
        info["general.parameter_count"] = int(model.params_b * 1e9)
    if model.context_length:
        info[f"{arch}.context_length"] = model.context_length
    return {
        "modified_at": iso_now(),
        "modelfile": f"# served by Turnout\nFROM {model.name}\n",
        "parameters": "",
        "template": "",
        "license": "",
        "details": _details(model),
        "model_info": info,
        "capabilities": _capabilities(model),
    }


def _show_virtual(name: str) -> Json:
    return {
        "modified_at": iso_now(),
        "modelfile": f"# Turnout's virtual model: each request goes to the model that fits it best\nFROM {name}\n",
        "parameters": "",
        "template": "",
        "license": "",
        "details": ModelDetails(family="turnout", families=["turnout"], format="").model_dump(),
        "model_info": {"general.architecture": "turnout"},
        "capabilities": ["completion", "tools", "vision", "embedding"],
    }


@router.get("/api/ps", response_model=PsResponse, summary="Models loaded on the fleet's GPUs")
async def ps(gw: StateDep, _client: ClientDep) -> Response:
    """``GET /api/ps``: the models the gpu-agents report loaded, across the fleet."""
    models: list[Json] = []
    by_name = {m.name: m for m in await gw.catalog.models()}
    backends = {b.name: b for b in gw.settings.backends}
    for host in await _hosts(gw):
        backend = backends.get(host.backend or "")
        for loaded in host.loaded_models:
            public = backend.public_name(loaded.name) if backend is not None else loaded.name
            if public in gw.catalog.hidden:
                continue
            model = by_name.get(public)
            details = _details(model) if model is not None else ModelDetails().model_dump()
            models.append(
                {
                    "name": public,
                    "model": public,
                    "size": loaded.size_bytes or loaded.vram_bytes,
                    "digest": "",
                    "details": details,
                    "expires_at": loaded.expires_at or _far_future(),
                    "size_vram": loaded.vram_bytes,
                }
            )
    return Response(orjson.dumps({"models": models}), media_type=JSON_MEDIA)


async def _hosts(gw: GatewayState) -> list[HostStateV1]:
    keys = gw.settings.keys
    try:
        names = [h.decode() if isinstance(h, bytes) else str(h) for h in await gw.redis.zrange(keys.fleet_hosts, 0, -1)]
        raws = await gw.redis.mget([keys.fleet_host(h) for h in names]) if names else []
    except (RedisError, OSError) as exc:
        log.warning("fleet state unavailable for /api/ps: %s", exc)
        return []
    out = []
    for raw in raws:
        if raw is None:
            continue  # the agent's key expired: the host is gone
        try:
            out.append(HostStateV1.model_validate(orjson.loads(raw)))
        except (orjson.JSONDecodeError, ValidationError):
            continue
    return out


def _far_future() -> str:
    return datetime(2318, 1, 1, tzinfo=UTC).isoformat().replace("+00:00", "Z")
