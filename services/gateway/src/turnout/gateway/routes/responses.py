"""``POST /v1/responses``: the OpenAI Responses API, served by chat models.

The request (validated by :class:`ResponsesRequest`, so its schema is in ``/openapi.json``) is
translated to a chat body (:mod:`turnout.common.backends.responses_api`) and routed like
``/v1/chat/completions`` — same scorer, fallback, shaping, events and ``X-Turnout-*`` headers;
the reply goes back as a ``response`` object or as the Responses SSE events. Nothing is stored:
``previous_response_id`` is refused with a 400 that says so. Errors are OpenAI's shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from turnout.common.backends.responses_api import (
    ChatToResponsesStream,
    chat_to_response,
    new_id,
    responses_request_to_chat,
)
from turnout.common.errors import TranslationError
from turnout.common.schemas.route import RequestKind
from turnout.gateway.deps import ClientDep, StateDep
from turnout.gateway.errors import InvalidRequest, as_gateway_error
from turnout.gateway.forwarding import Exchange
from turnout.gateway.pipeline import ReplyEncoder
from turnout.gateway.routes.openai import exchange, request_shaping
from turnout.gateway.routing import QUALITY_HEADER, chat_features, parse_quality
from turnout.gateway.shaping import RequestShaping
from turnout.gateway.state import GatewayState
from turnout.gateway.validation import check_chat

router = APIRouter(prefix="/v1", tags=["openai"])

Json = dict[str, Any]


class InputText(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["input_text", "output_text", "text"]
    text: str


class InputImage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["input_image"]
    image_url: str | None = Field(default=None, description="https:// or data: URL")
    file_id: str | None = Field(default=None, description="Not supported (no file store)")
    detail: Literal["low", "high", "auto"] | None = None


class Refusal(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[InputText | InputImage | Refusal, Field(discriminator="type")]


class MessageItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]


class FunctionCallItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    id: str | None = None


class FunctionCallOutputItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function_call_output"]
    call_id: str
    output: str | list[Any]


class ReasoningItem(BaseModel):
    """Earlier reasoning handed back by a client: accepted, not replayed to chat models."""

    model_config = ConfigDict(extra="allow")

    type: Literal["reasoning"]


InputItem = MessageItem | FunctionCallItem | FunctionCallOutputItem | ReasoningItem


class FunctionTool(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolChoiceFunction(BaseModel):
    type: Literal["function"]
    name: str


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    format: TextFormat = Field(default_factory=TextFormat)


class ResponsesRequest(BaseModel):
    """The subset of the Responses API that chat models can serve."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(default=None, description="A model, an alias, or the virtual model (route for me)")
    input: str | list[InputItem]
    instructions: str | None = None
    tools: list[FunctionTool] | None = Field(default=None, description="Function tools only")
    tool_choice: Literal["auto", "none", "required"] | ToolChoiceFunction | None = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_output_tokens: int | None = Field(default=None, ge=1)
    stream: bool = False
    text: TextOptions | None = None
    previous_response_id: str | None = Field(default=None, description="Refused: this gateway stores no responses")
    store: bool | None = Field(default=None, description="Accepted; nothing is stored")
    metadata: dict[str, str] | None = None
    user: str | None = None
    turnout: dict[str, Any] | None = Field(default=None, description="Turnout options: quality, cache, shaping")


class ResponsesEncoder:
    """Chat replies as Responses API objects and events (see :class:`ReplyEncoder`)."""

    def __init__(self, ex: Exchange, req: Json) -> None:
        self._ex = ex
        self._req = req
        self._stream: ChatToResponsesStream | None = None

    def _model(self) -> str:
        return self._ex.chosen.model if self._ex.chosen else ""

    def whole(self, data: Json) -> bytes:
        ex = self._ex
        return orjson.dumps(chat_to_response(data, self._req, response_id=ex.response_id, model=self._model()))

    def _translator(self) -> ChatToResponsesStream:
        if self._stream is None:
            ex = self._ex
            self._stream = ChatToResponsesStream(
                self._req, response_id=ex.response_id, model=self._model(), created=ex.created
            )
        return self._stream

    def encode(self, batch: list[Json]) -> bytes:
        t = self._translator()
        out = t.start() if t.seq == 0 else b""
        return out + b"".join(t.feed(c) for c in batch)

    def end(self) -> bytes:
        return self._translator().finish()

    def error(self, exc: BaseException) -> bytes:
        err = as_gateway_error(exc)
        return self._translator().error(err.message, err.code)


async def route_chat(
    request: Request,
    gw: GatewayState,
    client: str | None,
    body: Json,
    *,
    turnout: Json | None,
    response_id: str,
    encoder: Callable[..., ReplyEncoder],
    encoder_args: tuple[Any, ...],
    shaping: RequestShaping | None = None,
) -> Response:
    """A chat body from another dialect, routed like ``/v1/chat/completions`` and answered by
    ``encoder(exchange, *encoder_args)``."""
    opts = gw.settings.gateway
    check_chat(body, max_n=opts.max_n, max_messages=opts.max_messages)
    options = {"turnout": turnout} if turnout is not None else {}
    quality = parse_quality(request.headers.get(QUALITY_HEADER), options)
    features = chat_features(body, gw.settings.gateway.max_prompt_chars)
    shaping = shaping or request_shaping({**body, **options})
    ex = exchange(RequestKind.CHAT, body, client, request)
    ex.response_id = response_id
    enc: ReplyEncoder = encoder(ex, *encoder_args)
    return await gw.pipeline.handle(
        ex, features, quality=quality, shaping=shaping, encoder=enc, receive=request.receive
    )


@router.post("/responses", summary="Create a model response (OpenAI Responses API)")
async def create_response(req: ResponsesRequest, request: Request, gw: StateDep, client: ClientDep) -> Response:
    raw = req.model_dump(exclude_none=True, by_alias=True)
    try:
        body = responses_request_to_chat({k: v for k, v in raw.items() if k != "turnout"})
    except TranslationError as exc:
        param = "previous_response_id" if req.previous_response_id else None
        raise InvalidRequest(str(exc), param=param, code="unsupported_parameter" if param else "invalid_value") from exc
    return await route_chat(
        request,
        gw,
        client,
        body,
        turnout=req.turnout,
        response_id=new_id("resp"),
        encoder=ResponsesEncoder,
        encoder_args=(raw,),
    )
