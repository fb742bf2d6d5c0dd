"""What the other dialects served by chat models share (``/v1/responses``, ``/v1/messages``).

A request in the other dialect becomes a chat body (:func:`chat_body`), is routed like
``/v1/chat/completions`` (:func:`route_chat`: same scorer, fallback, shaping, events and
``X-Turnout-*`` headers), and the reply is translated back by a :class:`TranslatingEncoder`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from fastapi import Request
from pydantic import BaseModel
from starlette.responses import Response

from turnout.common.errors import TranslationError
from turnout.common.schemas.route import RequestKind
from turnout.gateway.errors import InvalidRequest
from turnout.gateway.forwarding import Exchange
from turnout.gateway.pipeline import ReplyEncoder
from turnout.gateway.routes.openai import exchange, request_shaping
from turnout.gateway.routing import QUALITY_HEADER, chat_features, parse_quality
from turnout.gateway.shaping import RequestShaping
from turnout.gateway.state import GatewayState
from turnout.gateway.validation import check_chat

Json = dict[str, Any]


def chat_body(
    req: BaseModel, translate: Callable[[Json], Json], *, by_alias: bool = False, param: str | None = None
) -> tuple[Json, Json]:
    """``req`` as JSON (unset fields dropped) and ``translate`` of it without the ``turnout``
    options: the chat body. A request the chat dialect cannot express is a 400 naming ``param``
    (``unsupported_parameter``) or, without one, ``invalid_value``."""
    raw = req.model_dump(exclude_none=True, by_alias=by_alias)
    try:
        body = translate({k: v for k, v in raw.items() if k != "turnout"})
    except TranslationError as exc:
        raise InvalidRequest(str(exc), param=param, code="unsupported_parameter" if param else "invalid_value") from exc
    return raw, body


async def route_chat(
    request: Request,
    gw: GatewayState,
    client: str | None,
    body: Json,
    *,
    turnout: Json | None,
    response_id: str,
    encoder: Callable[[Exchange], ReplyEncoder],
    shaping: RequestShaping | None = None,
) -> Response:
    """A chat body from another dialect, routed like ``/v1/chat/completions`` and answered by
    ``encoder(exchange)``."""
    opts = gw.settings.gateway
    check_chat(body, max_n=opts.max_n, max_messages=opts.max_messages)
    options = {"turnout": turnout} if turnout is not None else {}
    quality = parse_quality(request.headers.get(QUALITY_HEADER), options)
    features = chat_features(body, opts.max_prompt_chars)
    shaping = shaping or request_shaping({**body, **options})
    ex = exchange(RequestKind.CHAT, body, client, request)
    ex.response_id = response_id
    return await gw.pipeline.handle(
        ex, features, quality=quality, shaping=shaping, encoder=encoder(ex), receive=request.receive
    )


class StreamTranslator(Protocol):
    """Turns OpenAI chat chunks into the other dialect's stream events."""

    def feed(self, chunk: Json) -> bytes: ...
    def finish(self) -> bytes: ...


T = TypeVar("T", bound=StreamTranslator)


class TranslatingEncoder(ABC, Generic[T]):
    """The common part of a :class:`~turnout.gateway.pipeline.ReplyEncoder` for another dialect:
    the exchange, the model it chose, and one stream translator (``_new_stream``) built on the
    first chunk, once the model is known. Subclasses add ``whole`` and ``error``."""

    def __init__(self, ex: Exchange) -> None:
        self._ex = ex
        self._stream: T | None = None

    def _model(self) -> str:
        return self._ex.chosen.model if self._ex.chosen else ""

    @abstractmethod
    def _new_stream(self) -> T:
        """The stream translator for this dialect (built once the model is known)."""

    def _translator(self) -> T:
        if self._stream is None:
            self._stream = self._new_stream()
        return self._stream

    def encode(self, batch: list[Json]) -> bytes:
        """A batch of OpenAI chunks as the dialect's events."""
        t = self._translator()
        return b"".join(t.feed(c) for c in batch)

    def end(self) -> bytes:
        """The events that close the stream."""
        return self._translator().finish()


__all__ = ["StreamTranslator", "TranslatingEncoder", "chat_body", "route_chat"]
