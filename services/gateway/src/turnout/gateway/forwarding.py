"""Forwarding to backends: candidates in order, dialect translation, pass-through streaming.

One ``aiohttp.ClientSession`` per process. Per attempt: ``sock_connect`` and ``sock_read``
timeouts, never ``total`` (streams last). A candidate that fails *before the first byte* (the
first stream event, or the whole body when not streaming) — connection error, timeout, HTTP
5xx/429/404/401/403, a broken or empty reply — is recorded and the next one is tried, up to
``max_attempts``. 400/413/422 from a backend are the client's problem and are returned as such.

Everything leaves this module in OpenAI form with the gateway's response id and the public
model name: OpenAI backends' replies are rewritten, Ollama backends' NDJSON is translated by
:mod:`turnout.common.backends.translate`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import aiohttp
import orjson

from turnout.common.backends.config import BackendConfig, BackendKind
from turnout.common.backends.translate import (
    chat_request_to_ollama,
    completion_request_to_ollama,
    embeddings_request_to_ollama,
    ollama_chat_to_openai,
    ollama_embed_to_openai,
    ollama_generate_to_openai,
)
from turnout.common.errors import (
    BackendError,
    BackendStatusError,
    BackendTimeout,
    BackendUnavailable,
    TranslationError,
)
from turnout.common.schemas.route import CandidateV1, RequestKind
from turnout.gateway.circuits import Breakers
from turnout.gateway.errors import BrokenReply, GatewayError, InvalidRequest, NoBackendAvailable, as_gateway_error
from turnout.gateway.images import ImageFetcher, has_remote_images
from turnout.gateway.inflight import InflightTracker
from turnout.gateway.metrics import GatewayMetrics
from turnout.gateway.routing import Decision
from turnout.gateway.stream_readers import Reading, ollama_chunks, sse_chunks, until_eof
from turnout.gateway.upstream_limits import Slots, TimeoutCache, expected_delay_s

Json = dict[str, Any]
T = TypeVar("T")

RETRYABLE_4XX = frozenset({401, 403, 404, 408, 409, 429})
_OPENAI_PATHS = {
    RequestKind.CHAT: "/chat/completions",
    RequestKind.COMPLETION: "/completions",
    RequestKind.EMBEDDING: "/embeddings",
}
_OLLAMA_PATHS = {
    RequestKind.CHAT: "/api/chat",
    RequestKind.COMPLETION: "/api/generate",
    RequestKind.EMBEDDING: "/api/embed",
}


@dataclass(slots=True)
class Attempt:
    """One try on one candidate (serialised by orjson as :class:`AttemptV1`)."""

    model: str
    backend: str
    outcome: str
    latency_ms: float = 0.0


@dataclass(slots=True)
class Exchange:
    """One client request on its way through the gateway (the facts its event reports)."""

    kind: RequestKind
    body: Json
    stream: bool
    request_id: str
    response_id: str
    client: str | None = None
    think: bool | None = None
    """Ollama clients' ``think`` field (shaping reads it too)."""
    requested_model: str | None = None
    client_key: str | None = None
    """The API key's client id (client keys configured), for per-key limits."""
    client_ip: str | None = None
    est_tokens: int = 0
    limits_drawn: bool = False
    """The rate limits were drawn for it (before the response cache: a hit counts too)."""
    created: int = field(default_factory=lambda: int(time.time()))
    start: float = field(default_factory=time.perf_counter)
    ts: float = field(default_factory=time.time)
    decision: Decision | None = None
    attempts: list[Attempt] = field(default_factory=list)
    chosen: CandidateV1 | None = None
    ttft_s: float | None = None
    usage: Json | None = None
    shutdown: bool = False
    """Ended by the gateway's shutdown (the drain grace ran out)."""
    status: int = 200
    outcome: str = "ok"
    error: str | None = None
    reply: Any = None
    """Request log only: the whole reply, or the list of streamed batches (see request_log.py)."""


@dataclass(frozen=True, slots=True)
class Backend:
    config: BackendConfig
    timeout: aiohttp.ClientTimeout
    headers: dict[str, str]
    urls: dict[RequestKind, str]

    @property
    def ollama(self) -> bool:
        return self.config.kind is BackendKind.OLLAMA


def make_backend(config: BackendConfig, *, connect_timeout_s: float, read_timeout_s: float) -> Backend:
    headers = {"Content-Type": "application/json"}
    if config.api_key is not None:
        headers["Authorization"] = f"Bearer {config.api_key.get_secret_value()}"
    if config.kind is BackendKind.OLLAMA:
        urls = {k: config.url + p for k, p in _OLLAMA_PATHS.items()}
    else:
        urls = {k: config.openai_base + p for k, p in _OPENAI_PATHS.items()}
    timeout = aiohttp.ClientTimeout(
        total=None,
        sock_connect=min(connect_timeout_s, config.connect_timeout_s),
        sock_read=min(read_timeout_s, config.read_timeout_s),
    )
    return Backend(config, timeout, headers, urls)


def attempt_outcome(exc: BaseException) -> str:
    if isinstance(exc, TranslationError):
        return "unsupported"
    if isinstance(exc, BackendStatusError):
        if exc.status == 429:
            return "status_429"
        return "status_5xx" if exc.status >= 500 else "status_4xx"
    if isinstance(exc, BackendTimeout):
        return "timeout"
    if isinstance(exc, BackendUnavailable):
        return "unavailable"
    return "broken"


def retryable(exc: BaseException) -> bool:
    if isinstance(exc, BackendStatusError):
        return exc.status >= 500 or exc.status in RETRYABLE_4XX
    return isinstance(exc, BackendError)


@dataclass(slots=True)
class UpstreamStream:
    """An open upstream stream whose first batch of chunks has arrived (the point of no retry)."""

    first: list[Json]
    rest: AsyncGenerator[list[Json], None]
    response: aiohttp.ClientResponse
    backend: Backend
    candidate: CandidateV1
    reading: Reading

    def at_end(self) -> bool:
        """The stream's last message is read, or its whole body has arrived: what is left of
        ``rest`` comes without waiting."""
        return self.reading.complete or self.response.content.at_eof()

    async def close(self) -> None:
        """Release the connection: a stream read to its last message is read to the body's end
        first (it goes back to the pool); closing it mid-body cancels the upstream generation."""
        await self.rest.aclose()
        if self.reading.complete:
            await until_eof(self.response)
        self.response.close()


class Forwarder:
    def __init__(
        self,
        backends: list[BackendConfig],
        session: aiohttp.ClientSession,
        metrics: GatewayMetrics,
        inflight: InflightTracker,
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        max_attempts: int,
        images: ImageFetcher | None = None,
        breakers: Breakers | None = None,
        slots: Slots | None = None,
        timeouts: TimeoutCache | None = None,
    ) -> None:
        self._images = images
        self._backends = {
            b.name: make_backend(b, connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s)
            for b in backends
        }
        self._session = session
        self._metrics = metrics
        self._inflight = inflight
        self._max_attempts = max_attempts
        self.breakers = breakers
        self.slots = slots or Slots(1 << 30, 0.0)
        self.timeouts = timeouts

    # --- the attempt loop ------------------------------------------------------------------

    async def _try_candidates(
        self, ex: Exchange, one: Callable[[Backend, CandidateV1, aiohttp.ClientTimeout], Awaitable[T]]
    ) -> T:
        """Candidates in order, skipping those whose circuit is open or whose backend has no free
        slot in time; after a failure, a candidate on another backend goes first."""
        assert ex.decision is not None
        queue = list(ex.decision.candidates)
        failed: set[str] = set()
        blocked: list[CandidateV1] = []
        tries = 0
        await self._inline_images(ex, queue[: self._max_attempts])
        last: BaseException | None = None
        breakers = self.breakers
        while queue and tries < self._max_attempts:
            cand = _next_candidate(queue, failed)
            backend = self._backends.get(cand.backend)
            if backend is None:
                self._skip(ex, cand, "unknown_backend")
                last = NoBackendAvailable(f"backend {cand.backend!r} is not configured on this gateway")
                continue
            if breakers is not None and not await breakers.admit(cand.backend, cand.upstream_model):
                self._skip(ex, cand, "circuit_open")
                blocked.append(cand)
                continue
            if not await self.slots.acquire(cand.backend):
                self._skip(ex, cand, "no_slot")
                last = NoBackendAvailable(
                    f"backend {cand.backend} has no free connection slot", code="backend_busy", retry_after_s=1
                )
                continue
            tries += 1
            t0 = time.perf_counter()
            self._inflight.inc(cand.backend, cand.upstream_model)
            try:
                result = await one(backend, cand, self._timeout(ex, backend, cand))
            except (BackendError, TranslationError) as exc:
                self._release(cand)
                self._record(ex, cand, attempt_outcome(exc), t0)
                if isinstance(exc, TranslationError):
                    raise InvalidRequest(str(exc), code="unsupported_for_backend") from exc
                if breakers is not None:
                    await breakers.failure(cand.backend, cand.upstream_model, exc)
                if not retryable(exc):
                    raise
                failed.add(cand.backend)
                last = exc
                continue
            except BaseException:
                self._release(cand)
                self._record(ex, cand, "cancelled", t0)
                raise
            self._record(ex, cand, "ok", t0)
            ex.chosen = cand
            if breakers is not None:
                await breakers.success(cand.backend, cand.upstream_model)
            return result
        if last is None and blocked and breakers is not None:
            wait = min(breakers.retry_after_s(c.backend, c.upstream_model) for c in blocked)
            names = ", ".join(sorted({c.backend for c in blocked}))
            raise NoBackendAvailable(
                f"every candidate is cooling down after failures ({names})",
                code="circuit_open",
                retry_after_s=max(1, math.ceil(wait)),
            )
        raise final_error(last, tries)

    def _timeout(self, ex: Exchange, backend: Backend, cand: CandidateV1) -> aiohttp.ClientTimeout:
        if self.timeouts is None:
            return backend.timeout
        max_tokens = ex.body.get("max_tokens") or ex.body.get("max_completion_tokens")
        return self.timeouts.get(
            cand.model,
            stream=ex.stream,
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
            connect_cap_s=backend.config.connect_timeout_s,
            read_cap_s=backend.config.read_timeout_s,
            load_s=expected_delay_s(cand),
        )

    def _skip(self, ex: Exchange, cand: CandidateV1, outcome: str) -> None:
        ex.attempts.append(Attempt(cand.model, cand.backend, outcome))
        self._metrics.child(self._metrics.upstream_attempts, cand.backend, outcome).inc()

    async def _inline_images(self, ex: Exchange, candidates: list[CandidateV1]) -> None:
        """Remote image URLs fetched and inlined once, before any attempt, when a candidate is an
        Ollama backend (they take base64 only); the others take data: URLs as well."""
        if self._images is None or ex.kind is not RequestKind.CHAT or not has_remote_images(ex.body):
            return
        if any((b := self._backends.get(c.backend)) is not None and b.ollama for c in candidates):
            ex.body = await self._images.inline(ex.body)

    def _record(self, ex: Exchange, cand: CandidateV1, outcome: str, t0: float) -> None:
        ms = (time.perf_counter() - t0) * 1000
        attempt = Attempt(cand.model, cand.backend, outcome, round(ms, 3))
        ex.attempts.append(attempt)
        self._metrics.child(self._metrics.upstream_attempts, cand.backend, outcome).inc()

    def _release(self, cand: CandidateV1) -> None:
        self._inflight.dec(cand.backend, cand.upstream_model)
        self.slots.release(cand.backend)

    def done(self, ex: Exchange) -> None:
        """The chosen candidate's request is over (non-stream: after the body; stream: at its end)."""
        if ex.chosen is not None:
            self._release(ex.chosen)

    async def stream_failed(self, ex: Exchange, exc: BaseException) -> None:
        """A stream broke after its first byte: it counts against the circuit too."""
        if ex.chosen is not None and self.breakers is not None:
            await self.breakers.failure(ex.chosen.backend, ex.chosen.upstream_model, exc)

    # --- one attempt -----------------------------------------------------------------------

    def _payload(self, ex: Exchange, backend: Backend, cand: CandidateV1) -> bytes:
        if backend.ollama:
            if ex.kind is RequestKind.CHAT:
                req = chat_request_to_ollama(ex.body, cand.upstream_model, stream=ex.stream)
                if ex.think is False:  # the client turned reasoning off: so does the model (true is
                    req["think"] = False  # not passed on: Ollama refuses it for models that cannot think)
                return orjson.dumps(req)
            if ex.kind is RequestKind.COMPLETION:
                return orjson.dumps(completion_request_to_ollama(ex.body, cand.upstream_model, stream=ex.stream))
            return orjson.dumps(embeddings_request_to_ollama(ex.body, cand.upstream_model))
        body = dict(ex.body)
        body["model"] = cand.upstream_model
        body.pop("turnout", None)
        if ex.stream:
            opts = body.get("stream_options")
            body["stream_options"] = (
                {**opts, "include_usage": True} if isinstance(opts, dict) else {"include_usage": True}
            )
        return orjson.dumps(body)

    async def _post(
        self, backend: Backend, url: str, payload: bytes, timeout: aiohttp.ClientTimeout
    ) -> aiohttp.ClientResponse:
        name = backend.config.name
        try:
            resp = await self._session.post(url, data=payload, headers=backend.headers, timeout=timeout)
        except aiohttp.ConnectionTimeoutError as exc:
            raise BackendUnavailable(f"{name}: connect timed out", backend=name) from exc
        except TimeoutError as exc:
            raise BackendTimeout(f"{name}: no answer in time", backend=name) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise BackendUnavailable(f"{name}: unreachable ({type(exc).__name__})", backend=name) from exc
        if resp.status >= 400:
            try:
                body = await resp.content.read(4096)
            except (aiohttp.ClientError, OSError, TimeoutError):
                body = b""
            resp.close()
            raise BackendStatusError(f"{name}: HTTP {resp.status}", status=resp.status, body=body, backend=name)
        return resp

    async def complete(self, ex: Exchange) -> Json:
        """A whole (non-streamed) reply in OpenAI form. ``n > 1``: passed through to OpenAI
        backends (topped up with single requests when a backend answers fewer choices), and fanned
        out as ``n`` concurrent requests to Ollama backends (which answer one)."""
        n = ex.body.get("n") if ex.kind is not RequestKind.EMBEDDING else None
        n = n if isinstance(n, int) and n > 1 else 1

        async def one(backend: Backend, cand: CandidateV1, timeout: aiohttp.ClientTimeout) -> Json:
            if n == 1:
                return await self._complete_once(ex, backend, cand, self._payload(ex, backend, cand), timeout)
            if backend.ollama:
                return await self._fan_out(ex, backend, cand, n, [], timeout)
            first = await self._complete_once(ex, backend, cand, self._payload(ex, backend, cand), timeout)
            return await self._fan_out(ex, backend, cand, n, [first], timeout)

        data = await self._try_candidates(ex, one)
        ex.usage = data.get("usage")
        return data

    async def _fan_out(
        self, ex: Exchange, backend: Backend, cand: CandidateV1, n: int, got: list[Json], timeout: aiohttp.ClientTimeout
    ) -> Json:
        """``n`` choices from replies of one (or fewer) choices: the missing ones asked concurrently."""
        have = sum(len(d.get("choices") or ()) for d in got)
        if have < n:
            single = replace(ex, body={**ex.body, "n": 1})
            payload = self._payload(single, backend, cand)
            try:
                async with asyncio.TaskGroup() as tg:
                    tasks = [
                        tg.create_task(self._complete_once(ex, backend, cand, payload, timeout))
                        for _ in range(n - have)
                    ]
            except ExceptionGroup as group:  # the first failure stands for the attempt (the rest are cancelled)
                raise group.exceptions[0] from None
            got = [*got, *(t.result() for t in tasks)]
        return merge_choices(got, n)

    async def _complete_once(
        self, ex: Exchange, backend: Backend, cand: CandidateV1, payload: bytes, timeout: aiohttp.ClientTimeout
    ) -> Json:
        resp = await self._post(backend, backend.urls[ex.kind], payload, timeout)
        name = backend.config.name
        try:
            raw = await resp.read()
        except TimeoutError as exc:
            raise BackendTimeout(f"{name}: body timed out", backend=name) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise BackendUnavailable(f"{name}: body broken ({type(exc).__name__})", backend=name) from exc
        finally:
            resp.release()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BrokenReply(f"{name}: reply is not JSON", backend=name) from exc
        if not isinstance(data, dict):
            raise BrokenReply(f"{name}: reply is not a JSON object", backend=name)
        return self._to_openai(ex, backend, cand, data)

    def _to_openai(self, ex: Exchange, backend: Backend, cand: CandidateV1, data: Json) -> Json:
        if backend.ollama:
            if ex.kind is RequestKind.CHAT:
                return ollama_chat_to_openai(data, response_id=ex.response_id, model=cand.model, created=ex.created)
            if ex.kind is RequestKind.COMPLETION:
                return ollama_generate_to_openai(data, response_id=ex.response_id, model=cand.model, created=ex.created)
            return ollama_embed_to_openai(data, model=cand.model, encoding_format=ex.body.get("encoding_format"))
        if ex.kind is not RequestKind.EMBEDDING:
            data["id"] = ex.response_id
        data["model"] = cand.model
        return data

    async def open_stream(self, ex: Exchange) -> UpstreamStream:
        async def one(backend: Backend, cand: CandidateV1, timeout: aiohttp.ClientTimeout) -> UpstreamStream:
            resp = await self._post(backend, backend.urls[ex.kind], self._payload(ex, backend, cand), timeout)
            reading = Reading()
            chunks = (
                ollama_chunks(ex, backend.config.name, cand, resp, reading)
                if backend.ollama
                else sse_chunks(ex, cand, resp, reading)
            )
            try:
                first = await anext(chunks)
            except StopAsyncIteration:
                resp.close()
                raise BrokenReply(f"{backend.config.name}: empty stream", backend=backend.config.name) from None
            except BaseException:
                await chunks.aclose()
                resp.close()
                raise
            return UpstreamStream(first, chunks, resp, backend, cand, reading)

        return await self._try_candidates(ex, one)


def _next_candidate(queue: list[CandidateV1], failed: set[str]) -> CandidateV1:
    """The first candidate on a backend that has not failed this request, else the first."""
    if failed:
        for i, cand in enumerate(queue):
            if cand.backend not in failed:
                return queue.pop(i)
    return queue.pop(0)


def final_error(last: BaseException | None, tried: int) -> GatewayError:
    if last is None:
        return NoBackendAvailable("no backend is available for this request")
    err = as_gateway_error(last)
    if tried > 1:
        err.message = f"all {tried} candidates failed; last: {err.message}"
    return err


def merge_choices(replies: list[Json], n: int) -> Json:
    """One reply with the first ``n`` choices of ``replies`` (indexed 0..n-1) and summed usage."""
    out = dict(replies[0])
    choices = [c for r in replies for c in r.get("choices") or ()][:n]
    out["choices"] = [{**c, "index": i} for i, c in enumerate(choices)]
    usages = [r.get("usage") or {} for r in replies]
    prompt = int(usages[0].get("prompt_tokens") or 0)
    completion = sum(int(u.get("completion_tokens") or 0) for u in usages)
    out["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return out


def _carries_tokens(chunk: Json) -> bool:
    """Whether a stream chunk carries generated tokens (content, completion text or tool calls)."""
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("tool_calls") or choice.get("text"):
            return True
    return False
