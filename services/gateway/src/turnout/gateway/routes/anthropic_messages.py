"""``POST /v1/messages``: Anthropic's Messages API (Claude Code, agent SDKs), served by any model.

The request (validated by :class:`MessagesRequest`, so its schema is in ``/openapi.json``) is
translated to a chat body (:mod:`turnout.common.backends.anthropic_api`) and routed like
``/v1/chat/completions``; the reply goes back as an Anthropic ``message`` or its SSE events.
Errors are Anthropic's shape (``{"type": "error", "error": {type, message}}``). Clients
authenticate with ``x-api-key`` (Anthropic's header) or ``Authorization: Bearer``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from turnout.common.backends.anthropic_api import (
    ChatToMessagesStream,
    chat_to_message,
    messages_request_to_chat,
    thinking_enabled,
)
from turnout.common.backends.responses_api import new_id
from turnout.gateway.deps import StateDep, client_of
from turnout.gateway.errors import anthropic_error_event
from turnout.gateway.forwarding import Exchange
from turnout.gateway.routes.dialects import TranslatingEncoder, chat_body, route_chat
from turnout.gateway.routes.openai import request_shaping

router = APIRouter(prefix="/v1", tags=["anthropic"])

Json = dict[str, Any]


class Base64Source(BaseModel):
    """An inline image: its media type and base64 data."""

    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str


class UrlSource(BaseModel):
    """An image fetched from a URL."""

    type: Literal["url"]
    url: str


class TextBlock(BaseModel):
    """A text content block."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class ImageBlock(BaseModel):
    """An image content block."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["image"]
    source: Annotated[Base64Source | UrlSource, Field(discriminator="type")]


class ToolUseBlock(BaseModel):
    """The assistant's call of a tool, with its input."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(BaseModel):
    """What a tool returned, for the ``tool_use`` it answers."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]] = ""
    is_error: bool | None = None


class ThinkingBlock(BaseModel):
    """Earlier thinking handed back by a client: accepted, not replayed."""

    model_config = ConfigDict(extra="allow")

    type: Literal["thinking", "redacted_thinking"]


ContentBlock = Annotated[
    TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock, Field(discriminator="type")
]


class Message(BaseModel):
    """One turn of the conversation: a string or content blocks."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class Tool(BaseModel):
    """A client tool the model may call, with its input JSON schema."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["custom"] | None = None
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    input_schema: dict[str, Any]


class ToolChoice(BaseModel):
    """Whether and which tool the model must call."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(BaseModel):
    """Extended thinking on or off, and its token budget."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["enabled", "disabled"]
    budget_tokens: int | None = None


class MessagesRequest(BaseModel):
    """The Messages API request (documents, server tools and MCP servers are not supported)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, description="A model, an alias, or the virtual model (route for me)")
    max_tokens: int = Field(ge=1)
    messages: list[Message] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = Field(default=None, description="enabled: reasoning comes back as thinking blocks")
    metadata: dict[str, Any] | None = None
    turnout: dict[str, Any] | None = Field(default=None, description="Turnout options: quality, cache, shaping")


class MessagesEncoder(TranslatingEncoder[ChatToMessagesStream]):
    """Chat replies as Anthropic messages and events (see ``pipeline.ReplyEncoder``)."""

    def __init__(self, ex: Exchange, thinking: bool) -> None:
        super().__init__(ex)
        self._thinking = thinking

    def whole(self, data: Json) -> bytes:
        """A whole chat reply as one Anthropic ``message``."""
        msg = chat_to_message(data, message_id=self._ex.response_id, model=self._model(), thinking=self._thinking)
        return orjson.dumps(msg)

    def _new_stream(self) -> ChatToMessagesStream:
        ex = self._ex
        est = ex.decision.request.est_prompt_tokens if ex.decision and ex.decision.request else 0
        return ChatToMessagesStream(
            message_id=ex.response_id, model=self._model(), thinking=self._thinking, input_tokens=est
        )

    def error(self, exc: BaseException) -> bytes:
        """The Anthropic ``error`` event that ends a broken stream."""
        return anthropic_error_event(exc)


@router.post("/messages", summary="Create a message (Anthropic Messages API)")
async def create_message(req: MessagesRequest, request: Request, gw: StateDep) -> Response:
    """Translate the request to chat, route it like ``/v1/chat/completions``, answer as Anthropic does."""
    client = client_of(_with_bearer(request), gw)
    raw, body = chat_body(req, messages_request_to_chat)
    thinking = thinking_enabled(raw)
    options = {"turnout": req.turnout} if req.turnout is not None else {}
    shaping = request_shaping({**body, **options}, think=True if thinking else None)
    return await route_chat(
        request,
        gw,
        client,
        body,
        turnout=req.turnout,
        response_id=new_id("msg"),
        encoder=lambda ex: MessagesEncoder(ex, thinking),
        shaping=shaping,
    )


def _with_bearer(request: Request) -> Request:
    """Anthropic clients send their key as ``x-api-key``: read it as a bearer token."""
    key = request.headers.get("x-api-key")
    if key and "authorization" not in request.headers:
        headers = [*request.scope["headers"], (b"authorization", b"Bearer " + key.encode())]
        return Request({**request.scope, "headers": headers})
    return request
