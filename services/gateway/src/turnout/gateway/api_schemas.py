"""Request bodies of the model endpoints, as pydantic models — for ``/openapi.json`` only.

The model endpoints parse their bodies with orjson and check only the fields present
(:mod:`turnout.gateway.validation`): validating every request against these models measured
more than the forwarding itself. So these models are never run on a request; :func:`document`
puts their JSON schema into the OpenAPI document (the ``openapi_extra`` way FastAPI documents for
bodies read by hand), so that SDK generators and schema-driven testers (schemathesis runs over it
in ``make test``) see the real request shapes. Unknown fields are allowed, as the API forwards
them to the backend. The bounds here are the defaults of the configurable ones (``max_n`` …).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.routing import Route

from turnout.gateway.validation import DEFAULT_MAX_MESSAGES, DEFAULT_MAX_N, MAX_MODEL_NAME, MAX_TOKENS

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
ModelName = Field(default=None, max_length=MAX_MODEL_NAME, description="A model, an alias, or the virtual model")
Tokens = Field(default=None, ge=1, le=MAX_TOKENS)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ContentPart(_Open):
    """One part of a chat message's content (text, image, …)."""

    type: str
    text: str | None = None


class ChatMessage(_Open):
    """One chat message: its role and content."""

    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None


class TurnoutOptions(_Open):
    """Turnout's own request options, under ``turnout`` in the body."""

    quality: float | None = Field(default=None, ge=0, le=1, description="0 = fastest, 1 = best")


class ChatCompletionRequest(_Open):
    """The documented shape of ``POST /v1/chat/completions`` (other OpenAI fields pass through)."""

    model: str | None = ModelName
    messages: list[ChatMessage] = Field(min_length=1, max_length=DEFAULT_MAX_MESSAGES)
    stream: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = Tokens
    max_completion_tokens: int | None = Tokens
    n: int | None = Field(default=None, ge=1, le=DEFAULT_MAX_N)
    stop: str | list[str] | None = None
    seed: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None
    turnout: TurnoutOptions | None = None


class CompletionRequest(_Open):
    """The documented shape of ``POST /v1/completions``."""

    model: str | None = ModelName
    prompt: str | list[str]
    stream: bool | None = None
    max_tokens: int | None = Tokens
    n: int | None = Field(default=None, ge=1, le=DEFAULT_MAX_N)
    temperature: float | None = None
    stop: str | list[str] | None = None
    turnout: TurnoutOptions | None = None


class EmbeddingRequest(_Open):
    """The documented shape of ``POST /v1/embeddings``."""

    model: str | None = ModelName
    input: str | list[str]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = None
    user: str | None = None


class OllamaMessage(_Open):
    """One Ollama chat message, with optional base64 images."""

    role: Role
    content: str | None = None
    images: list[str] | None = None


class OllamaChatRequest(_Open):
    """The documented shape of ``POST /api/chat``."""

    model: str | None = ModelName
    messages: list[OllamaMessage] = Field(min_length=1, max_length=DEFAULT_MAX_MESSAGES)
    stream: bool | None = None
    options: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    format: str | dict[str, Any] | None = None


class OllamaGenerateRequest(_Open):
    """The documented shape of ``POST /api/generate``."""

    model: str | None = ModelName
    prompt: str | None = None
    system: str | None = None
    images: list[str] | None = None
    stream: bool | None = None
    options: dict[str, Any] | None = None
    format: str | dict[str, Any] | None = None


class OllamaEmbedRequest(_Open):
    """The documented shape of ``POST /api/embed`` (and ``/api/embeddings``)."""

    model: str | None = ModelName
    input: str | list[str] | None = None
    prompt: str | None = None
    options: dict[str, Any] | None = None


BODIES: Mapping[str, type[BaseModel]] = {
    "/v1/chat/completions": ChatCompletionRequest,
    "/v1/completions": CompletionRequest,
    "/v1/embeddings": EmbeddingRequest,
    "/api/chat": OllamaChatRequest,
    "/api/generate": OllamaGenerateRequest,
    "/api/embed": OllamaEmbedRequest,
    "/api/embeddings": OllamaEmbedRequest,
}
REF = "#/components/schemas/{model}"


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI ``requestBody`` for a JSON ``schema`` (routes that read the body themselves)."""
    return {"required": True, "content": {"application/json": {"schema": schema}}}


ADMIN_ACTION = {"requestBody": json_body({"type": "object"})}
"""``openapi_extra`` of a mutating admin endpoint: a JSON object body (``{}``) is required, so that
no web page can make a browser send the request without a CORS preflight."""
EXPLAIN_BODY = {"requestBody": json_body({"$ref": REF.format(model="ChatCompletionRequest")})}


def document(app: FastAPI, routes: Iterable[Route], bodies: Mapping[str, type[BaseModel]] = BODIES) -> None:
    """List the model endpoints (``routes``: plain Starlette routes, registered first) in ``app``'s
    OpenAPI document with their request schemas. The routes added here are never reached by a POST
    (the plain routes match first), so they add nothing to a request's cost."""
    endpoints = {r.path: r.endpoint for r in routes}
    for path, model in bodies.items():
        endpoint = endpoints.get(path)
        if endpoint is None:
            continue
        tag = "openai" if path.startswith("/v1/") else "ollama"
        body = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}},
        }
        route = APIRoute(
            path,
            endpoint,
            methods=["POST"],
            tags=[tag],
            summary=(endpoint.__doc__ or path).strip().split("\n")[0],
            openapi_extra={"requestBody": body},
        )
        app.router.routes.append(route)
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in bodies.values():
            js = model.model_json_schema(ref_template=REF)
            components.update(js.pop("$defs", {}))
            components[model.__name__] = js
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
