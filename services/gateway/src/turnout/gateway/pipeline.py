"""One request, start to finish: route, forward, answer in the client's dialect, report.

The routes parse and check the body and turn Ollama bodies into OpenAI ones; from there every
request takes the same path: :class:`Router` -> :class:`Forwarder` -> a response encoded for
the client's dialect (OpenAI JSON/SSE or Ollama JSON/NDJSON) -> metrics and a request event,
queued for publishing after the response (never awaited on the response path).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from enum import StrEnum
from typing import Any

import orjson
from starlette.responses import Response

from turnout.common.backends.translate import (
    OpenAIToOllamaStream,
    openai_chat_to_ollama,
    openai_completion_to_ollama,
    openai_embeddings_to_ollama,
)
from turnout.common.errors import BackendError
from turnout.common.schemas.route import CandidateV1, RequestKind
from turnout.gateway.errors import as_gateway_error, ndjson_error_line, sse_error_event
from turnout.gateway.events import EventPublisher
from turnout.gateway.forwarding import Exchange, Forwarder, UpstreamStream, attempt_outcome
from turnout.gateway.metrics import GatewayMetrics
from turnout.gateway.paired_sampling import PairedSampler
from turnout.gateway.response_cache import Cached
from turnout.gateway.routing import Decision, Router
from turnout.gateway.streaming import StreamResponse

Json = dict[str, Any]

JSON_MEDIA = "application/json"
SSE_MEDIA = "text/event-stream"
NDJSON_MEDIA = "application/x-ndjson"
SSE_DONE = b"data: [DONE]\n\n"
CLIENT_CLOSED = 499
_ID_PREFIX = {RequestKind.CHAT: "chatcmpl-", RequestKind.COMPLETION: "cmpl-", RequestKind.EMBEDDING: "embd-"}


class Shape(StrEnum):
    """What the client expects back."""

    OPENAI = "openai"
    OLLAMA_CHAT = "ollama_chat"
    OLLAMA_GENERATE = "ollama_generate"
    OLLAMA_EMBED = "ollama_embed"
    OLLAMA_EMBEDDINGS = "ollama_embeddings"  # legacy /api/embeddings: one vector


def new_response_id(kind: RequestKind) -> str:
    return f"{_ID_PREFIX[kind]}{random.getrandbits(96):024x}"


class Pipeline:
    def __init__(
        self,
        router: Router,
        forwarder: Forwarder,
        events: EventPublisher,
        metrics: GatewayMetrics,
        sampler: PairedSampler | None = None,
    ) -> None:
        self.router = router
        self.forwarder = forwarder
        self.events = events
        self.metrics = metrics
        self.sampler = sampler

    async def handle(
        self,
        ex: Exchange,
        features: Json,
        *,
        quality: float | None,
        shape: Shape = Shape.OPENAI,
    ) -> Response:
        self.metrics.in_flight.inc()
        try:
            ex.decision = await self.router.route(
                features, model=ex.requested_model, stream=ex.stream, client=ex.client, quality=quality
            )
            if ex.stream:
                upstream = await self.forwarder.open_stream(ex)
            else:
                data = await self.forwarder.complete(ex)
                self.forwarder.done(ex)
        except BaseException as exc:
            self.finish(ex, exc)
            raise
        assert ex.chosen is not None
        headers = {"x-turnout-model": ex.chosen.model, "x-turnout-backend": ex.chosen.backend}
        if not ex.stream:
            self.finish(ex, None)
            if self.sampler is not None:
                self.sampler.offer(ex, data)
            return Response(self._encode_whole(ex, data, shape), media_type=JSON_MEDIA, headers=headers)
        end = _StreamEnd(self, ex, upstream)
        if shape is Shape.OPENAI:
            body = self._pump(ex, upstream, end, _sse_batch, lambda: SSE_DONE, sse_error_event)
            media = SSE_MEDIA
        else:
            body = self._ollama_pump(ex, upstream, end, shape)
            media = NDJSON_MEDIA
        raw_headers = [(k.encode(), v.encode()) for k, v in headers.items()]
        return StreamResponse(body, media_type=media, headers=raw_headers, on_close=end.cancelled)

    def cache_hit(self, ex: Exchange, hit: Cached) -> Cached:
        """A response-cache hit, reported like a routed request (``route_source`` ``cache``,
        the stored usage) and handed back with this request's own response id, so that feedback
        on it refers to this request."""
        model = hit.headers.get("x-turnout-model", "")
        backend = hit.headers.get("x-turnout-backend", "")
        ex.chosen = CandidateV1(model=model, backend=backend, upstream_model=model)
        ex.decision = Decision([ex.chosen], "cache", 0.0)
        body = hit.body
        try:
            obj = orjson.loads(hit.body)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            usage = obj.get("usage")
            ex.usage = usage if isinstance(usage, dict) else None
            obj["id"] = ex.response_id
            body = orjson.dumps(obj)
        self.metrics.in_flight.inc()
        self.finish(ex, None)
        return replace(hit, body=body)

    # --- whole replies ---------------------------------------------------------------------

    def _encode_whole(self, ex: Exchange, data: Json, shape: Shape) -> bytes:
        if shape is Shape.OPENAI:
            return orjson.dumps(data)
        model = ex.chosen.model if ex.chosen else ""
        total_ns = int((time.perf_counter() - ex.start) * 1e9)
        if shape is Shape.OLLAMA_CHAT:
            return orjson.dumps(openai_chat_to_ollama(data, model=model, total_ns=total_ns))
        if shape is Shape.OLLAMA_GENERATE:
            return orjson.dumps(openai_completion_to_ollama(data, model=model, total_ns=total_ns))
        out = openai_embeddings_to_ollama(data, model=model, total_ns=total_ns)
        if shape is Shape.OLLAMA_EMBEDDINGS:
            vectors = out["embeddings"]
            return orjson.dumps({"embedding": vectors[0] if vectors else []})
        return orjson.dumps(out)

    # --- streams ---------------------------------------------------------------------------

    async def _pump(
        self,
        ex: Exchange,
        up: UpstreamStream,
        end_: _StreamEnd,
        encode: Callable[[list[Json]], bytes],
        end: Callable[[], bytes],
        on_error: Callable[[BaseException], bytes],
    ) -> AsyncIterator[bytes]:
        """Forward each batch as it arrives; after the first byte an upstream failure ends the
        stream with an error event; a disconnect (cancellation) closes the upstream."""
        exc_seen: BaseException | None = None
        try:
            yield encode(up.first)
            ex.ttft_s = time.perf_counter() - ex.start
            async for batch in up.rest:
                yield encode(batch)
            yield end()
        except BackendError as exc:
            exc_seen = exc
            ex.attempts[-1].outcome = "broken_" + attempt_outcome(exc)
            yield on_error(exc)
        except (asyncio.CancelledError, GeneratorExit) as exc:
            exc_seen = exc
            raise
        finally:
            await end_.close(exc_seen)

    def _ollama_pump(self, ex: Exchange, up: UpstreamStream, end_: _StreamEnd, shape: Shape) -> AsyncIterator[bytes]:
        model = ex.chosen.model if ex.chosen else ""
        translator = OpenAIToOllamaStream(model=model, generate=shape is Shape.OLLAMA_GENERATE)

        def encode(batch: list[Json]) -> bytes:
            out = [orjson.dumps(line) + b"\n" for chunk in batch for line in translator.feed(chunk)]
            return b"".join(out)

        def end() -> bytes:
            return orjson.dumps(translator.finish(int((time.perf_counter() - ex.start) * 1e9))) + b"\n"

        return self._pump(ex, up, end_, encode, end, ndjson_error_line)

    # --- reporting -------------------------------------------------------------------------

    def finish(self, ex: Exchange, exc: BaseException | None, *, streamed: bool = False) -> None:
        self.metrics.in_flight.dec()
        if exc is None:
            status, outcome, error = 200, "ok", None
        elif isinstance(exc, asyncio.CancelledError | GeneratorExit):
            status, outcome, error = CLIENT_CLOSED, "cancelled", "client disconnected"
        else:
            err = as_gateway_error(exc)
            outcome = "upstream_error" if streamed else err.code or err.type
            status = 200 if streamed else err.status
            error = err.message
        elapsed = time.perf_counter() - ex.start
        model = ex.chosen.model if ex.chosen else "none"
        backend = ex.chosen.backend if ex.chosen else "none"
        m = self.metrics
        m.child(m.requests, model, backend, str(status)).inc()
        m.child(m.request_duration, ex.kind.value, "true" if ex.stream else "false").observe(elapsed)
        if ex.ttft_s is not None:
            m.child(m.ttft, model).observe(ex.ttft_s)
        decision = ex.decision
        usage = ex.usage or {}
        # the fields of RequestEventV1, as a dict: no pydantic on the response path; the publisher
        # serialises it (and the pydantic candidates/analysis inside) with orjson off the path
        event = {
            "v": 1,
            "request_id": ex.request_id,
            "response_id": ex.response_id if ex.kind is not RequestKind.EMBEDDING else None,
            "ts": ex.ts,
            "kind": ex.kind.value,
            "client": ex.client,
            "requested_model": ex.requested_model,
            "model": ex.chosen.model if ex.chosen else None,
            "backend": ex.chosen.backend if ex.chosen else None,
            "status": status,
            "outcome": outcome,
            "route_source": decision.source if decision else "none",
            "stream": ex.stream,
            "attempts": ex.attempts,
            "latency_ms": round(elapsed * 1000, 3),
            "ttft_ms": round(ex.ttft_s * 1000, 3) if ex.ttft_s is not None else None,
            "route_ms": round(decision.route_ms, 3) if decision else None,
            "prompt_tokens": usage.get("prompt_tokens"),
            "completion_tokens": usage.get("completion_tokens"),
            "error": error,
            "analysis": decision.analysis if decision else None,
            "candidates": decision.candidates if decision else [],
        }
        self.events.publish(event)


class _StreamEnd:
    """Releases a stream exactly once: from the body's ``finally``, or from the response when the
    body never ran (a disconnect before the first write)."""

    __slots__ = ("_ex", "_pipeline", "_up", "closed")

    def __init__(self, pipeline: Pipeline, ex: Exchange, up: UpstreamStream) -> None:
        self._pipeline = pipeline
        self._ex = ex
        self._up = up
        self.closed = False

    async def close(self, exc: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await self._up.close()
        finally:
            self._pipeline.forwarder.done(self._ex)
            self._pipeline.finish(self._ex, exc, streamed=True)

    async def cancelled(self) -> None:
        await self.close(asyncio.CancelledError())


def _sse_batch(batch: list[Json]) -> bytes:
    if len(batch) == 1:
        return b"data: " + orjson.dumps(batch[0]) + b"\n\n"
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in batch)
