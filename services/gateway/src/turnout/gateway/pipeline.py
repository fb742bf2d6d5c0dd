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
from typing import Any, Protocol

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from turnout.common.backends.translate import (
    OpenAIToOllamaStream,
    openai_chat_to_ollama,
    openai_completion_to_ollama,
    openai_embeddings_to_ollama,
)
from turnout.common.errors import BackendError
from turnout.common.schemas.route import CandidateV1, RequestKind
from turnout.gateway.errors import (
    ClientGone,
    GatewayError,
    RateLimited,
    ShuttingDown,
    as_gateway_error,
    ndjson_error_line,
    sse_error_event,
)
from turnout.gateway.events import EventPublisher
from turnout.gateway.forwarding import Exchange, Forwarder, UpstreamStream, attempt_outcome
from turnout.gateway.metrics import GatewayMetrics
from turnout.gateway.paired_sampling import PairedSampler
from turnout.gateway.rate_limits import RateLimiter
from turnout.gateway.response_cache import Cached
from turnout.gateway.routing import Decision, PendingRoute, Router
from turnout.gateway.shaping import RequestShaping, Shaper, ShapingOptions
from turnout.gateway.streaming import Last, StreamResponse

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
        shaping: ShapingOptions | None = None,
        *,
        log_bodies: bool = False,
        default_max_tokens: int | None = None,
    ) -> None:
        self.router = router
        self.forwarder = forwarder
        self.events = events
        self.metrics = metrics
        self.log_bodies = log_bodies
        """The request log is on: keep the body and the reply for the event (request_log.py)."""
        self.default_max_tokens = default_max_tokens
        self.live: dict[str, Exchange] = {}
        """This process's requests in flight, by request id (the dashboard's live view)."""
        self.shaping = shaping or ShapingOptions()
        self._streams: set[_StreamEnd] = set()
        self._waiting: set[_Watch] = set()
        self.limiter: RateLimiter | None = None
        self.sampler: PairedSampler | None = None
        self._settling: set[asyncio.Task[None]] = set()

    async def handle(
        self,
        ex: Exchange,
        features: Json,
        *,
        quality: float | None,
        shape: Shape = Shape.OPENAI,
        shaping: RequestShaping | None = None,
        encoder: ReplyEncoder | None = None,
        receive: Receive | None = None,
        route: PendingRoute | None = None,
    ) -> Response:
        """Route, forward and answer. With ``receive`` (the request's ASGI receive), a client
        that disconnects before the reply cancels the upstream request at once. ``encoder``
        answers in another dialect than OpenAI's and Ollama's (the Responses and Messages APIs):
        it gets the shaped OpenAI reply or chunks. ``route``: the decision begun by
        :meth:`route_early` for this exchange."""
        self.metrics.in_flight.inc()
        self.live[ex.request_id] = ex
        watch = _Watch(ex, receive, self._waiting)
        try:
            if route is None:
                route = await self._begin_route(ex, features, quality)
            ex.decision = await route.decision()
            if ex.stream:
                upstream = await self.forwarder.open_stream(ex)
                if self.log_bodies:
                    ex.reply = []
            else:
                data = await self.forwarder.complete(ex)
                self.forwarder.done(ex)
                if self.log_bodies:
                    ex.reply = data
        except asyncio.CancelledError as exc:
            reason = watch.why_cancelled()
            self.finish(ex, exc if reason is None else reason)
            if reason is None:
                raise
            raise reason from None
        except BaseException as exc:
            self.finish(ex, exc)
            raise
        finally:
            watch.stop()
        assert ex.chosen is not None
        headers = {"x-turnout-model": ex.chosen.model, "x-turnout-backend": ex.chosen.backend}
        shaper = self.shaper(ex, shaping)
        if not ex.stream:
            if self.sampler is not None:
                self.sampler.offer(ex, data)
            if shaper is not None and ex.kind is not RequestKind.EMBEDDING:
                data = shaper.whole(data)
            whole = encoder.whole(data) if encoder is not None else self._encode_whole(ex, data, shape)
            return WholeResponse(whole, headers=headers, after=lambda: self.finish(ex, None))
        end = _StreamEnd(self, ex, upstream)
        keep_usage = encoder is not None or shape is not Shape.OPENAI or _wants_usage(ex.body)
        prepare = _prepare(shaper, keep_usage=keep_usage)
        if encoder is not None:
            enc = encoder
            body = self._pump(ex, upstream, end, lambda b: enc.encode(prepare(b)), enc.end, enc.error)
            media = SSE_MEDIA
        elif shape is Shape.OPENAI:
            body = self._pump(ex, upstream, end, lambda b: _sse_batch(prepare(b)), lambda: SSE_DONE, sse_error_event)
            media = SSE_MEDIA
        else:
            body = self._ollama_pump(ex, upstream, end, shape, prepare)
            media = NDJSON_MEDIA
        raw_headers = [(k.encode(), v.encode()) for k, v in headers.items()]
        error_event: Callable[[BaseException], bytes] = (
            encoder.error if encoder is not None else sse_error_event if shape is Shape.OPENAI else ndjson_error_line
        )
        response = StreamResponse(
            body,
            media_type=media,
            headers=raw_headers,
            on_close=end.cancelled,
            final_bytes=lambda: error_event(ShuttingDown("the gateway is shutting down; retry the request")),
        )
        end.response = response
        self._streams.add(end)
        return response

    def route_early(self, ex: Exchange, features: Json, *, quality: float | None) -> PendingRoute | None:
        """Ask the scorer for this exchange's decision now, so that the rest of the request's
        set-up runs while the scorer decides; hand the result to :meth:`handle` (``route``), or
        :meth:`PendingRoute.cancel` it if the request goes no further. ``None`` when rate limits
        are on: a request they refuse must not reach the scorer (:meth:`handle` draws them first).
        For requests the response cache cannot answer only: a hit must not be routed either."""
        if self.limiter is not None:
            return None
        self._apply_defaults(ex, features)
        return self.router.begin(
            features, model=ex.requested_model, stream=ex.stream, client=ex.client, quality=quality
        )

    async def _begin_route(self, ex: Exchange, features: Json, quality: float | None) -> PendingRoute:
        """The decision asked for in :meth:`handle`: the defaults applied, the rate limits drawn
        (unless :meth:`draw_limits` did), then the scorer asked."""
        self._apply_defaults(ex, features)
        if self.limiter is not None and not ex.limits_drawn:
            ex.limits_drawn = True
            ex.est_tokens = int(features.get("est_prompt_tokens") or 0)
            await self.limiter.admit(ex.client_key, ex.client_ip, ex.est_tokens)
        return self.router.begin(
            features, model=ex.requested_model, stream=ex.stream, client=ex.client, quality=quality
        )

    def _apply_defaults(self, ex: Exchange, features: Json) -> None:
        """The request as routed: the default ``max_tokens`` where the client set none (not for
        embeddings), and the client's address for the scorer's rules."""
        if self.default_max_tokens is not None and ex.kind is not RequestKind.EMBEDDING:
            if ex.body.get("max_tokens") is None and ex.body.get("max_completion_tokens") is None:
                ex.body["max_tokens"] = features["max_tokens"] = self.default_max_tokens
        features["client_ip"] = ex.client_ip

    async def end_streams(self) -> int:
        """Drain grace over: end every open stream with an error event, and every request still
        waiting for a whole reply with 503 ``shutdown``; all are recorded as ``shutdown``."""
        ends = list(self._streams)
        for end in ends:
            end.ex.shutdown = True
            if end.response is not None:
                end.response.end_now()
        waiting = list(self._waiting)
        for watch in waiting:
            watch.shutdown()
        for _ in range(50):  # let them write their last bytes
            if not self._streams and not self._waiting:
                break
            await asyncio.sleep(0.01)
        self.metrics.shutdown_streams.inc(len(ends))
        return len(ends) + len(waiting)

    def shaper(self, ex: Exchange, shaping: RequestShaping | None) -> Shaper | None:
        """The chosen model's shaping of this reply, or None when it changes nothing."""
        if ex.chosen is None or ex.kind is RequestKind.EMBEDDING:
            return None
        shaper = self.shaping.resolve(
            shaping or RequestShaping(),
            model=ex.chosen.model,
            backend=ex.chosen.backend,
            key=ex.client_key,
            ip=ex.client_ip,
        )
        return shaper if shaper.active else None

    async def draw_limits(self, ex: Exchange, features: Json) -> None:
        """Draw the request and its prompt estimate from the rate limits, before the response
        cache is asked: a hit is a request too, and its reply's tokens are drawn when it is
        reported (:meth:`cache_hit`, the usage correction). A refusal is reported like one from
        :meth:`handle`; :meth:`handle` does not draw again."""
        if self.limiter is None or ex.limits_drawn:
            return
        ex.limits_drawn = True
        ex.est_tokens = int(features.get("est_prompt_tokens") or 0)
        try:
            await self.limiter.admit(ex.client_key, ex.client_ip, ex.est_tokens)
        except RateLimited as exc:
            self.metrics.in_flight.inc()
            self.finish(ex, exc)
            raise

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
            if self.log_bodies:
                ex.reply = obj
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
        """Forward each batch as it arrives. Once the upstream's body has all arrived, what is left
        of it and the stream's end go in one :class:`Last` write with the response's end (nothing
        waits for it: it is read already), and the release and the bookkeeping run after it.
        After the first byte an upstream failure ends the stream with an error event; a
        disconnect (cancellation) closes the upstream."""
        exc_seen: BaseException | None = None
        kept: list[list[Json]] | None = ex.reply if isinstance(ex.reply, list) else None
        held: list[bytes] = []  # encoded from an upstream at its end, for the last write
        try:
            batch = up.first
            while True:
                if kept is not None:
                    kept.append(batch)
                if up.at_end():
                    held.append(encode(batch))
                    async for batch in up.rest:
                        if kept is not None:
                            kept.append(batch)
                        held.append(encode(batch))
                    held.append(end())
                    last, held = Last(b"".join(held)), []
                    yield last
                    if ex.ttft_s is None:
                        ex.ttft_s = time.perf_counter() - ex.start
                    break
                yield encode(batch)
                if ex.ttft_s is None:
                    ex.ttft_s = time.perf_counter() - ex.start
                try:
                    batch = await anext(up.rest)
                except StopAsyncIteration:
                    yield Last(end())
                    break
        except BackendError as exc:
            exc_seen = exc
            ex.attempts[-1].outcome = "broken_" + attempt_outcome(exc)
            yield Last(b"".join(held) + on_error(exc))
            await self.forwarder.stream_failed(ex, exc)
        except (asyncio.CancelledError, GeneratorExit) as exc:
            exc_seen = exc
            raise
        finally:
            await end_.close(exc_seen)

    def _ollama_pump(
        self,
        ex: Exchange,
        up: UpstreamStream,
        end_: _StreamEnd,
        shape: Shape,
        prepare: Callable[[list[Json]], list[Json]],
    ) -> AsyncIterator[bytes]:
        model = ex.chosen.model if ex.chosen else ""
        translator = OpenAIToOllamaStream(model=model, generate=shape is Shape.OLLAMA_GENERATE)

        def encode(batch: list[Json]) -> bytes:
            out = [orjson.dumps(line) + b"\n" for chunk in prepare(batch) for line in translator.feed(chunk)]
            return b"".join(out)

        def end() -> bytes:
            return orjson.dumps(translator.finish(int((time.perf_counter() - ex.start) * 1e9))) + b"\n"

        return self._pump(ex, up, end_, encode, end, ndjson_error_line)

    # --- reporting -------------------------------------------------------------------------

    def finish(self, ex: Exchange, exc: BaseException | None, *, streamed: bool = False) -> None:
        self.metrics.in_flight.dec()
        self.live.pop(ex.request_id, None)
        if exc is None:
            status, outcome, error = 200, "ok", None
        elif ex.shutdown or isinstance(exc, ShuttingDown):
            status, outcome, error = 200 if streamed else ShuttingDown.status, "shutdown", "gateway shutting down"
        elif isinstance(exc, asyncio.CancelledError | GeneratorExit | ClientGone):
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
        if self.limiter is not None and ex.usage:
            self._settle(ex)
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
        if self.log_bodies:  # made into redacted text by the publisher, off the path
            event["_body"] = ex.body
            event["_reply"] = ex.reply
        self.events.publish(event)

    def _settle(self, ex: Exchange) -> None:
        assert self.limiter is not None
        task = asyncio.ensure_future(self.limiter.settle(ex.client_key, ex.client_ip, ex.est_tokens, ex.usage))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)


class WholeResponse(Response):
    """A whole JSON reply whose bookkeeping (``after``: metrics and the request event) runs once its
    bytes are handed to the client's connection — or its sending failed — rather than before: at
    one request at a time that work is off the path to the client's last byte."""

    def __init__(self, content: bytes, *, headers: dict[str, str], after: Callable[[], None]) -> None:
        super().__init__(content, media_type=JSON_MEDIA, headers=headers)
        self._after: Callable[[], None] | None = after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            after, self._after = self._after, None
            if after is not None:
                after()


class _StreamEnd:
    """Releases a stream exactly once: from the body's ``finally``, or from the response when the
    body never ran (a disconnect before the first write)."""

    __slots__ = ("_pipeline", "_up", "closed", "ex", "response")

    def __init__(self, pipeline: Pipeline, ex: Exchange, up: UpstreamStream) -> None:
        self._pipeline = pipeline
        self.ex = ex
        self._up = up
        self.closed = False
        self.response: StreamResponse | None = None

    async def close(self, exc: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        self._pipeline._streams.discard(self)
        try:
            await self._up.close()
        finally:
            self._pipeline.forwarder.done(self.ex)
            self._pipeline.finish(self.ex, exc, streamed=True)

    async def cancelled(self) -> None:
        await self.close(asyncio.CancelledError())


class ReplyEncoder(Protocol):
    """Another client dialect's encoding of one reply: a whole OpenAI reply, or a stream of
    OpenAI chunk batches (then its end, or the error that broke it) in, that dialect's bytes out.
    It reads the chosen model from the exchange it was built with."""

    def whole(self, data: Json) -> bytes: ...
    def encode(self, batch: list[Json]) -> bytes: ...
    def end(self) -> bytes: ...
    def error(self, exc: BaseException) -> bytes: ...


def _wants_usage(body: Json) -> bool:
    opts = body.get("stream_options")
    return isinstance(opts, dict) and opts.get("include_usage") is True


def _prepare(shaper: Shaper | None, *, keep_usage: bool) -> Callable[[list[Json]], list[Json]]:
    """Per batch of OpenAI chunks: shaping, and the usage chunk (``choices: []``) dropped unless
    the client asked for it with ``stream_options.include_usage`` (as OpenAI does)."""
    if shaper is None and keep_usage:
        return lambda batch: batch

    def prepare(batch: list[Json]) -> list[Json]:
        out = batch if keep_usage else [c for c in batch if c.get("choices") or "usage" not in c]
        if shaper is None:
            return out
        return [shaped for c in out if (shaped := shaper.chunk(c)) is not None]

    return prepare


WATCH_AFTER_S = 0.05
"""A whole reply that takes longer than this gets a task listening for the client's disconnect."""


class _Watch:
    """While a whole reply is awaited: a client disconnect (read from ``receive``) or the end of
    the drain grace cancels the request's task, and says which it was.

    The listener is a task, started only once the request has run ``WATCH_AFTER_S`` (a timer until
    then): most replies are done sooner, and a task per request measured ~24 µs on the loaded
    2-core box against ~2 µs for the timer (``bench/gateway_guards.py``). A client that leaves
    is noticed at most that much later."""

    __slots__ = ("_ex", "_listener", "_reason", "_receive", "_registry", "_task", "_timer")

    def __init__(self, ex: Exchange, receive: Receive | None, registry: set[_Watch]) -> None:
        self._ex = ex
        self._reason: GatewayError | None = None
        self._task = asyncio.current_task()
        self._registry = registry
        self._listener: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._receive = receive
        if ex.stream:
            return  # a stream's response watches its client itself
        registry.add(self)
        if receive is not None:
            self._timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._listen)

    def _listen(self) -> None:
        self._timer = None
        assert self._receive is not None
        self._listener = asyncio.ensure_future(_until_disconnect(self._receive))
        self._listener.add_done_callback(self._disconnected)

    def _disconnected(self, listener: asyncio.Future[None]) -> None:
        if listener.cancelled() or listener.exception() is not None or self._reason is not None:
            return
        self._cancel(ClientGone("client disconnected"))

    def shutdown(self) -> None:
        self._ex.shutdown = True
        self._cancel(ShuttingDown("the gateway is shutting down; retry the request"))

    def _cancel(self, reason: GatewayError) -> None:
        if self._task is not None and self._reason is None:
            self._reason = reason
            self._task.cancel()

    def why_cancelled(self) -> GatewayError | None:
        if self._reason is not None and self._task is not None:
            self._task.uncancel()
        return self._reason

    def stop(self) -> None:
        self._registry.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        if self._listener is not None and not self._listener.done():
            self._listener.remove_done_callback(self._disconnected)
            self._listener.cancel()


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def _sse_batch(batch: list[Json]) -> bytes:
    if not batch:
        return b""
    if len(batch) == 1:
        return b"data: " + orjson.dumps(batch[0]) + b"\n\n"
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in batch)
