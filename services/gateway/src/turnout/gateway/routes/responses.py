"""``POST /v1/responses``: the OpenAI Responses API, served by chat models.

The request (validated by :class:`ResponsesRequest`, so its schema is in ``/openapi.json``) is
translated to a chat body (:mod:`turnout.common.backends.responses_api`) and routed like
``/v1/chat/completions`` — same scorer, fallback, shaping, events and ``X-Turnout-*`` headers;
the reply goes back as a ``response`` object or as the Responses SSE events. Nothing is stored:
``previous_response_id`` is refused with a 400 that says so. Errors are OpenAI's shape.
"""

from __future__ import annotations

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
from turnout.gateway.deps import ClientDep, StateDep
from turnout.gateway.errors import as_gateway_error
from turnout.gateway.forwarding import Exchange
from turnout.gateway.routes.dialects import TranslatingEncoder, chat_body, route_chat

router = APIRouter(prefix="/v1", tags=["openai"])

Json = dict[str, Any]


class InputText(BaseModel):
    """A text part of an input message."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["input_text", "output_text", "text"]
    text: str


class InputImage(BaseModel):
    """An image part of an input message (URL or data URL; file ids are refused)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["input_image"]
    image_url: str | None = Field(default=None, description="https:// or data: URL")
    file_id: str | None = Field(default=None, description="Not supported (no file store)")
    detail: Literal["low", "high", "auto"] | None = None


class Refusal(BaseModel):
    """An earlier refusal by the assistant, handed back."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[InputText | InputImage | Refusal, Field(discriminator="type")]


class MessageItem(BaseModel):
    """An input message of any role."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]


class FunctionCallItem(BaseModel):
    """An earlier function call by the model, handed back."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    id: str | None = None


class FunctionCallOutputItem(BaseModel):
    """The output of a function call, for the ``call_id`` it answers."""

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
    """A function the model may call, with its JSON-schema parameters."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolChoiceFunction(BaseModel):
    """Force a call of the named function."""

    type: Literal["function"]
    name: str


class TextFormat(BaseModel):
    """The reply's format: text, any JSON object, or JSON following a schema."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextOptions(BaseModel):
    """Options of the text reply (its format)."""

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


class ResponsesEncoder(TranslatingEncoder[ChatToResponsesStream]):
    """Chat replies as Responses API objects and events (see :class:`ReplyEncoder`)."""

    def __init__(self, ex: Exchange, req: Json) -> None:
        super().__init__(ex)
        self._req = req

    def whole(self, data: Json) -> bytes:
        """A whole chat reply as one ``response`` object."""
        return orjson.dumps(chat_to_response(data, self._req, response_id=self._ex.response_id, model=self._model()))

    def _new_stream(self) -> ChatToResponsesStream:
        ex = self._ex
        return ChatToResponsesStream(self._req, response_id=ex.response_id, model=self._model(), created=ex.created)

    def encode(self, batch: list[Json]) -> bytes:
        """A batch of chat chunks as Responses events (``response.created`` first)."""
        t = self._translator()
        return (t.start() if t.seq == 0 else b"") + super().encode(batch)

    def error(self, exc: BaseException) -> bytes:
        """The ``error`` event that ends a broken stream."""
        err = as_gateway_error(exc)
        return self._translator().error(err.message, err.code)


@router.post("/responses", summary="Create a model response (OpenAI Responses API)")
async def create_response(req: ResponsesRequest, request: Request, gw: StateDep, client: ClientDep) -> Response:
    """Translate the request to chat, route it like ``/v1/chat/completions``, answer in Responses' shape."""
    refused = "previous_response_id" if req.previous_response_id else None
    raw, body = chat_body(req, responses_request_to_chat, by_alias=True, param=refused)
    return await route_chat(
        request,
        gw,
        client,
        body,
        turnout=req.turnout,
        response_id=new_id("resp"),
        encoder=lambda ex: ResponsesEncoder(ex, raw),
    )
