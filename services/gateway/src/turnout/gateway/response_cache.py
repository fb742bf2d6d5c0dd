"""The response cache: identical requests get the stored answer without touching a backend.

**Key** — ``keys.response_cache(sha256)`` over the canonical JSON of: the request kind, the
requested model (or the virtual one), the quality preference, the client when
``per_client`` is set, and the whole body except transport-only fields (``stream``,
``stream_options``, ``user``, ``turnout``) — so messages, tools, response format and every
generation parameter are in the key, and a streamed and a non-streamed request share an entry.

**When** — on by default only for deterministic requests (``temperature`` 0 or a ``seed``) that
ask for one choice; any request opts in with ``X-Turnout-Cache: on`` or
``"turnout": {"cache": true}``, and out with ``off`` / ``false``. ``cache_all`` makes every
request eligible.

**What** — successful non-streaming answers (status 200, at most ``max_body_bytes``), with the
``X-Turnout-Model`` / ``-Backend`` headers, for ``ttl_s``; at most ``max_entries`` entries (an
index sorted set by insertion time; the oldest go first). A streaming request that hits is
replayed as a stream (``replay_sse``: role, content, finish+usage chunks, ``[DONE]``); streamed
answers are not stored. Hits and misses are counted in
``turnout_gateway_response_cache_lookups_total{kind,outcome}``; Redis errors are misses.

**Off the response path** — an eligible miss's answer is queued (:meth:`ResponseCache.store_later`)
and written by one writer task after the response is returned, not awaited before it (a
MULTI/SET/ZADD/ZCARD round trip, plus the trim, on every eligible miss). The queue is bounded
(``max_pending_writes``): past it a write is dropped (``outcome="dropped"``), never the response.
The writer runs while there is something to write and ends when the queue is empty; a writer that
crashes is logged with its traceback and the next store starts a fresh one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from turnout.common.keys import Keys

log = logging.getLogger(__name__)

CACHE_HEADER = "X-Turnout-Cache"
TRANSPORT_FIELDS = frozenset({"stream", "stream_options", "user", "turnout"})
KEPT_HEADERS = ("x-turnout-model", "x-turnout-backend")
KINDS = ("chat", "completion")


class ResponseCacheOptions(BaseModel):
    """The exact-match response cache: on/off, entry lifetime, size bounds."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    ttl_s: float = Field(default=600.0, gt=0)
    max_entries: int = Field(default=10_000, ge=1)
    max_body_bytes: int = Field(default=512 * 1024, ge=1024)
    cache_all: bool = Field(default=False, description="Cache non-deterministic requests too (no opt-in needed)")
    per_client: bool = Field(default=False, description="Clients never share entries")
    max_pending_writes: int = Field(
        default=1000, ge=1, description="Answers waiting for the background writer; past it a write is dropped"
    )


@dataclass(frozen=True)
class ResponseCacheMetrics:
    """The response cache's Prometheus series."""

    lookups: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry = REGISTRY) -> ResponseCacheMetrics:
        """Register the series in ``registry`` with every label value pre-set."""
        lookups = Counter(
            "response_cache_lookups",
            "Response-cache lookups by request kind and outcome",
            ["kind", "outcome"],
            namespace="turnout",
            subsystem="gateway",
            registry=registry,
        )
        for k in KINDS:
            for o in ("hit", "miss", "stored", "skipped", "dropped"):
                lookups.labels(k, o)
        return cls(lookups)


def _flag(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, str):
        s = v.strip().lower()
        if s in ("on", "true", "1", "yes"):
            return True
        if s in ("off", "false", "0", "no"):
            return False
    return None


def eligible(body: Mapping[str, Any], header: str | None, *, cache_all: bool = False) -> bool:
    """Whether this request may be answered from (and stored in) the cache."""
    explicit = _flag(header)
    if explicit is None:
        opts = body.get("turnout")
        explicit = _flag(opts.get("cache")) if isinstance(opts, dict) else None
    if explicit is not None:
        return explicit
    if body.get("n") not in (None, 1):
        return False
    if cache_all:
        return True
    temperature = body.get("temperature")
    deterministic = temperature is not None and not isinstance(temperature, bool) and float(temperature) == 0.0
    return deterministic or body.get("seed") is not None


def cache_digest(
    kind: str, body: Mapping[str, Any], *, model: str | None, quality: float | None, client: str | None = None
) -> str:
    """The cache key of a request: its body minus transport fields, the model asked for, quality and client."""
    kept = {k: v for k, v in body.items() if k not in TRANSPORT_FIELDS and k != "model"}
    material = {"kind": kind, "model": model or "", "quality": quality, "client": client, "body": kept}
    return hashlib.sha256(orjson.dumps(material, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True, slots=True)
class Cached:
    """A stored reply: its body, the headers worth replaying and when it was stored."""

    body: bytes
    headers: dict[str, str]
    stored_at: float


class ResponseCache:
    """Whole non-streamed replies in Redis under a digest of the request, with a TTL."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        opts: ResponseCacheOptions | None = None,
        *,
        metrics: ResponseCacheMetrics | None = None,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.opts = opts or ResponseCacheOptions()
        self.metrics = metrics or ResponseCacheMetrics.create(registry)
        self._index = keys.response_cache("index")
        self._pending: deque[tuple[str, str, bytes, dict[str, str]]] = deque()
        self._writer: asyncio.Task[None] | None = None

    def key(self, digest: str) -> str:
        """The Redis key for ``digest``."""
        return self._keys.response_cache(digest)

    async def get(self, kind: str, digest: str) -> Cached | None:
        """The stored reply for ``digest``, or ``None`` (also when Redis fails: a miss, never an error)."""
        try:
            raw = await self._redis.get(self.key(digest))
        except (RedisError, OSError) as exc:
            log.debug("response cache lookup failed: %s", exc)
            raw = None
        if raw is None:
            self.metrics.lookups.labels(kind, "miss").inc()
            return None
        try:
            obj = orjson.loads(raw)
            cached = Cached(obj["body"].encode(), dict(obj["headers"]), float(obj["at"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            self.metrics.lookups.labels(kind, "miss").inc()
            return None
        self.metrics.lookups.labels(kind, "hit").inc()
        return cached

    async def put(self, kind: str, digest: str, body: bytes, headers: Mapping[str, str]) -> bool:
        """Store a reply unless it is too large; ``False`` when it was not stored."""
        if len(body) > self.opts.max_body_bytes:
            self.metrics.lookups.labels(kind, "skipped").inc()
            return False
        kept = {k: v for k, v in ((h, headers.get(h)) for h in KEPT_HEADERS) if v is not None}
        payload = orjson.dumps({"body": body.decode("utf-8", "replace"), "headers": kept, "at": time.time()})
        key = self.key(digest)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(key, payload, px=int(self.opts.ttl_s * 1000))
                pipe.zadd(self._index, {key: time.time()})
                pipe.zcard(self._index)
                res = await pipe.execute()
            excess = int(res[-1]) - self.opts.max_entries
            if excess > 0:
                old = [k for k, _ in await self._redis.zpopmin(self._index, excess)]
                if old:
                    await self._redis.unlink(*old)
        except (RedisError, OSError) as exc:
            log.debug("response cache store failed: %s", exc)
            return False
        self.metrics.lookups.labels(kind, "stored").inc()
        return True

    def store_later(self, kind: str, digest: str, body: bytes, headers: Mapping[str, str]) -> bool:
        """Queue :meth:`put` for the background writer; False (and counted) when the queue is full."""
        if len(self._pending) >= self.opts.max_pending_writes:
            self.metrics.lookups.labels(kind, "dropped").inc()
            return False
        kept = {h: v for h in KEPT_HEADERS if (v := headers.get(h)) is not None}
        self._pending.append((kind, digest, body, kept))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_pending(), name="response-cache-writer")
            self._writer.add_done_callback(_writer_done)
        return True

    async def _write_pending(self) -> None:
        while self._pending:
            kind, digest, body, headers = self._pending.popleft()
            await self.put(kind, digest, body, headers)

    async def flush(self) -> None:
        """Wait until every queued answer is written (tests, shutdown)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def invalidate(self) -> int:
        """Drop every cached reply (the catalog changed); returns how many were removed."""
        removed = 0
        batch: list[bytes | str] = []
        async for k in self._redis.scan_iter(match=self._keys.response_cache("*"), count=500):
            batch.append(k)
            if len(batch) >= 500:
                removed += int(await self._redis.unlink(*batch))
                batch.clear()
        if batch:
            removed += int(await self._redis.unlink(*batch))
        return removed


def _writer_done(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("response cache writer crashed; the next store starts another", exc_info=task.exception())


def _sse(obj: Mapping[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _choice(index: int, delta: dict[str, Any], finish_reason: Any = None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


async def replay_sse(cached: Cached, *, include_usage: bool = True) -> AsyncIterator[bytes]:
    """A stored chat/text completion replayed as OpenAI SSE chunks."""
    obj = orjson.loads(cached.body)
    chat = obj.get("object") == "chat.completion"
    base = {
        "id": obj.get("id", ""),
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": obj.get("created", int(time.time())),
        "model": obj.get("model", ""),
    }
    choices = obj.get("choices") or [{}]
    for ch in choices:
        idx = ch.get("index", 0)
        if chat:
            msg = ch.get("message") or {}
            # the framing of a live OpenAI stream: role first, reasoning, content/tool calls, finish
            role = {"role": "assistant", "content": "", "refusal": None}
            yield _sse({**base, "choices": [_choice(idx, role)]})
            if msg.get("reasoning_content"):
                yield _sse({**base, "choices": [_choice(idx, {"reasoning_content": msg["reasoning_content"]})]})
            delta: dict[str, Any] = {}
            if msg.get("content"):
                delta["content"] = msg["content"]
            if msg.get("tool_calls"):
                delta["tool_calls"] = [{**tc, "index": i} for i, tc in enumerate(msg["tool_calls"])]
            if delta:
                yield _sse({**base, "choices": [_choice(idx, delta)]})
            yield _sse({**base, "choices": [_choice(idx, {}, ch.get("finish_reason"))]})
        else:
            yield _sse({**base, "choices": [{"index": idx, "text": ch.get("text", ""), "finish_reason": None}]})
            yield _sse({**base, "choices": [{"index": idx, "text": "", "finish_reason": ch.get("finish_reason")}]})
    if include_usage and obj.get("usage") is not None:
        yield _sse({**base, "choices": [], "usage": obj["usage"]})
    yield b"data: [DONE]\n\n"


# --- wiring into the routes ----------------------------------------------------------------


def cache_of(
    request: Request, redis: Redis, keys: Keys, opts: ResponseCacheOptions, registry: CollectorRegistry
) -> ResponseCache:
    """The app's one :class:`ResponseCache`, built on first use (per app, never at import)."""
    cache: ResponseCache | None = getattr(request.app.state, "response_cache", None)
    if cache is None:
        cache = ResponseCache(redis, keys, opts, registry=registry)
        request.app.state.response_cache = cache
    return cache


def answerable(cache: ResponseCache, body: Mapping[str, Any], header: str | None) -> bool:
    """Whether the cache is on and may answer (and store) this request (``header``: its
    ``X-Turnout-Cache``); a request it may not answer is routed without asking it."""
    return cache.opts.enabled and eligible(body, header, cache_all=cache.opts.cache_all)


async def cached_or_handle(
    request: Request,
    cache: ResponseCache,
    kind: str,
    body: Mapping[str, Any],
    *,
    quality: float | None,
    client: str | None,
    handle: Callable[[], Awaitable[Response]],
    on_hit: Callable[[Cached], Cached] | None = None,
) -> Response:
    """Answer from the cache when the request is eligible and stored, else ``handle()`` and store
    a successful non-streaming answer. ``on_hit`` sees a hit first (and may rewrite it: the
    pipeline gives it the request's own response id and reports it)."""
    if not answerable(cache, body, request.headers.get(CACHE_HEADER)):
        return await handle()
    model = body.get("model")
    digest = cache_digest(
        kind,
        body,
        model=model if isinstance(model, str) else None,
        quality=quality,
        client=client if cache.opts.per_client else None,
    )
    stream = body.get("stream") is True
    hit = await cache.get(kind, digest)
    if hit is not None:
        if on_hit is not None:
            hit = on_hit(hit)
        headers = {**{_title(k): v for k, v in hit.headers.items()}, CACHE_HEADER: "hit"}
        if stream:
            opts = body.get("stream_options")
            usage = isinstance(opts, dict) and opts.get("include_usage") is True
            return StreamingResponse(
                replay_sse(hit, include_usage=usage), media_type="text/event-stream", headers=headers
            )
        return Response(hit.body, media_type="application/json", headers=headers)
    resp = await handle()
    if not stream and resp.status_code == 200 and not isinstance(resp, StreamingResponse):
        cache.store_later(kind, digest, bytes(resp.body), resp.headers)  # written after the response goes
        resp.headers[CACHE_HEADER] = "miss"
    return resp


def _title(h: str) -> str:
    return "-".join(p.capitalize() for p in h.split("-"))
