"""The routing caches: the decision memo in the process, and the routing cache in Redis, shared
by every scorer replica — **off by default** (``routing.route_cache.enabled``).

Why off: the engine consults the memo first and Redis only on a local miss, but a Redis hit
returns a whole reply and so leaves the memo empty for that prompt, and every local miss pays a
round trip (redis-py's encode/parse and a wake-up of the loop) plus, on a Redis miss, a store.
``bench/route_cache_value.py`` (2 replicas sharing one Redis, 100 models, Zipf traces): with the
cache the process spends +50–80 % CPU per request (225 → 368–380 µs; 284 → 509–525 µs with more
distinct prompts), Redis 18–50 µs more, 0.9–2.2 Redis commands per request, wall p50 doubles, the
memo's hit rate falls from 63–85 % to 31–48 %; its exact hits (12–44 %) are mostly repeats the
memo would have served, and its semantic hits (5–12 %) give another prompt's decision (the first
choice differs on 1–2.4 % of requests). Turn it on where a decision costs much more than a
Redis round trip (an LLM classifier asked inline); each lookup is bounded by
``lookup_timeout_s`` (20 ms) and by half the request's remaining budget (none left: no lookup).
The bound is loose on purpose: a timeout cancels the command and redis-py drops that connection
(a reply half read cannot be reused), so a bound near the round trip would turn every slow
moment into reconnections.

* **decision memo** (:class:`DecisionMemo`) — per request features, the inputs of a decision
  that cost the most and depend on neither the fleet nor the load: analysis, embedding, rules'
  constraints, learned estimate (``engine.py``'s docstring says what is reused and why that is
  safe). A bounded LRU with a version per entry; hits and misses are counted
  (``turnout_scorer_decision_memo_lookups_total{outcome}``).

* **exact** — ``<prefix>:routecache:<version>:x:<sha256 of the normalised request features>``
  → the :class:`RouteReplyV1` JSON, ``PX ttl``. Features: kind, requested model, client, the
  text with whitespace collapsed, system prompt length, message count, images/tools/JSON mode,
  ``max_tokens`` and the quality preference (to 0.01).
* **semantic** — every stored decision is also appended (with its prompt embedding as float16)
  to the stream ``<prefix>:routecache:<version>:sem`` (``MAXLEN ~ capacity``). Each replica
  mirrors the stream in a bounded numpy matrix (pulling new entries at most every ``sync_s``)
  and looks up a new prompt by one batch cosine product restricted to entries with the same
  non-text features; the best match at or above ``threshold`` reuses that entry's exact reply.

``version`` is the catalog version (plus the rules version): a catalog change makes every old
key unreachable (they expire by TTL). :meth:`RoutingCache.invalidate` drops everything at once.
A cached decision reflects fleet state up to ``ttl_s`` old, hence the short default TTL; the
engine re-orders each model's replicas in a hit by the fleet's state now (load, residency), so a
hit never piles requests onto the replica that was best when it was stored.
Redis errors never fail a route: a lookup that fails or runs out of time is a miss (a timeout is
counted as ``outcome="timeout"``), a store that fails is skipped.
Stores run off the reply path (:meth:`RoutingCache.store_later`): one writer task drains a
bounded queue (``max_pending_writes``; past it a store is dropped, ``outcome="dropped"``) and ends
when it is empty; a writer that crashes is logged with its traceback, the next store starts another.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections import OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from turnout.common.keys import Keys
from turnout.common.schemas.route import RouteReplyV1, RouteRequestV1
from turnout.scorer.filters import Constraints
from turnout.scorer.prompt_analysis import PromptAnalysis
from turnout.scorer.terms import Learned

log = logging.getLogger(__name__)

_SPACE = re.compile(r"\s+")
KINDS = ("exact", "semantic")


@dataclass(frozen=True, slots=True)
class RouteCacheConfig:
    ttl_s: float = 30.0
    semantic: bool = True
    threshold: float = 0.97
    capacity: int = 4096
    sync_s: float = 0.5
    max_pending_writes: int = 1000
    lookup_timeout_s: float = 0.02
    """The most a lookup may take (fewer when the request's budget is short): past it, a miss."""


@dataclass(frozen=True)
class RouteCacheMetrics:
    lookups: Counter
    stores: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry = REGISTRY) -> RouteCacheMetrics:
        ns, sub = "turnout", "scorer"
        m = cls(
            lookups=Counter(
                "route_cache_lookups",
                "Routing-cache lookups by kind and outcome",
                ["kind", "outcome"],
                namespace=ns,
                subsystem=sub,
                registry=registry,
            ),
            stores=Counter(
                "route_cache_stores",
                "Routing decisions stored, by outcome",
                ["outcome"],
                namespace=ns,
                subsystem=sub,
                registry=registry,
            ),
        )
        for k in KINDS:
            for o in ("hit", "miss", "timeout"):
                m.lookups.labels(k, o)
        for o in ("ok", "error", "dropped"):
            m.stores.labels(o)
        return m


@dataclass(frozen=True, slots=True)
class Prepared:
    """What a decision computes before ranking (``engine.py``)."""

    analysis: PromptAnalysis
    constraints: Constraints
    learned: Learned | None
    embedding_wire: str | None
    """The embedding as the reply's analysis carries it (base64 float16)."""


class Same:
    """Compares equal to a ``Same`` of the very same object (never by value: a router prior's
    fields are arrays), and holds it, so that its id is not reused while a memo entry lives."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Same) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)


@dataclass(frozen=True)
class DecisionMemoMetrics:
    lookups: Counter
    hit: Counter = field(init=False)
    """``lookups{outcome="hit"}`` (and ``miss``), bound once: ``labels()`` per request shows."""
    miss: Counter = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hit", self.lookups.labels("hit"))
        object.__setattr__(self, "miss", self.lookups.labels("miss"))

    @classmethod
    def create(cls, registry: CollectorRegistry = REGISTRY) -> DecisionMemoMetrics:
        m = cls(
            lookups=Counter(
                "decision_memo_lookups",
                "In-process decision memo lookups by outcome (hit: analysis, embedding and k-NN reused)",
                ["outcome"],
                namespace="turnout",
                subsystem="scorer",
                registry=registry,
            )
        )
        for o in ("hit", "miss"):
            m.lookups.labels(o)
        return m


class DecisionMemo:
    """A bounded LRU of :class:`Prepared` per request-features key, each entry valid for one
    version (a tuple the engine builds); a stale entry is a miss and is replaced."""

    def __init__(self, size: int = 2048, metrics: DecisionMemoMetrics | None = None) -> None:
        self.size = size
        self.metrics = metrics
        self._entries: OrderedDict[Hashable, tuple[tuple[object, ...], Prepared]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def get(self, key: Hashable, version: tuple[object, ...]) -> Prepared | None:
        entry = self._entries.get(key)
        if entry is not None and entry[0] == version:
            self._entries.move_to_end(key)
            self.hits += 1
            if self.metrics is not None:
                self.metrics.hit.inc()
            return entry[1]
        self.misses += 1
        if self.metrics is not None:
            self.metrics.miss.inc()
        return None

    def put(self, key: Hashable, version: tuple[object, ...], prepared: Prepared) -> None:
        if self.size <= 0:
            return
        self._entries[key] = (version, prepared)
        self._entries.move_to_end(key)
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


def normalise_text(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def group_of(req: RouteRequestV1) -> str:
    """The non-text features: two prompts are only semantically interchangeable when these match."""
    q = "" if req.quality is None else f"{req.quality:.2f}"
    return (
        f"{req.kind.value}|{req.requested_model or ''}|{req.client or ''}|{req.system_chars}|{req.n_messages}|"
        f"{req.has_images:d}{req.has_tools:d}{req.json_mode:d}|{req.max_tokens or 0}|{q}"
        + ("|token-ids" if req.token_input else "")  # a text input's decision may name Ollama replicas
    )


def exact_digest(req: RouteRequestV1) -> str:
    h = hashlib.sha256(group_of(req).encode())
    h.update(b"\x00")
    h.update(normalise_text(req.text).encode("utf-8", "surrogatepass"))
    return h.hexdigest()


class _Mirror:
    """This replica's copy of one version's semantic stream."""

    def __init__(self, dims: int, capacity: int) -> None:
        self.emb = np.zeros((capacity, dims), dtype=np.float32)
        self.groups: list[str] = [""] * capacity
        self.keys: list[str] = [""] * capacity
        self.n = 0
        self.next = 0
        self.last_id = "0-0"
        self.synced_at = 0.0

    def add(self, e: npt.NDArray[np.float32], group: str, key: str) -> None:
        i = self.next
        self.emb[i] = e
        self.groups[i] = group
        self.keys[i] = key
        self.next = (i + 1) % self.emb.shape[0]
        self.n = min(self.n + 1, self.emb.shape[0])

    def best(self, e: npt.NDArray[np.float32], group: str) -> tuple[float, str] | None:
        if self.n == 0:
            return None
        sims = self.emb[: self.n] @ e
        same = np.fromiter((g == group for g in self.groups[: self.n]), dtype=bool, count=self.n)
        if not same.any():
            return None
        sims = np.where(same, sims, -np.inf)
        j = int(np.argmax(sims))
        return float(sims[j]), self.keys[j]


class RoutingCache:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        cfg: RouteCacheConfig | None = None,
        *,
        metrics: RouteCacheMetrics | None = None,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self._redis = redis
        self._base = keys.route_cache
        self.cfg = cfg or RouteCacheConfig()
        self.metrics = metrics or RouteCacheMetrics.create(registry)
        self._mirrors: dict[str, _Mirror] = {}
        self._sync_lock = asyncio.Lock()
        self._pending: deque[tuple[RouteRequestV1, str, RouteReplyV1, npt.NDArray[np.float32] | None]] = deque()
        self._writer: asyncio.Task[None] | None = None

    def exact_key(self, version: str, req: RouteRequestV1) -> str:
        return f"{self._base}:{version}:x:{exact_digest(req)}"

    def stream_key(self, version: str) -> str:
        return f"{self._base}:{version}:sem"

    # --- lookup -----------------------------------------------------------------------------

    async def get(
        self,
        req: RouteRequestV1,
        version: str,
        embedding: npt.NDArray[np.float32] | None = None,
        *,
        budget_s: float | None = None,
    ) -> tuple[RouteReplyV1, str] | None:
        """``(reply, "exact" | "semantic")`` or None on a miss. The whole lookup takes at most
        ``lookup_timeout_s``, or half of ``budget_s`` (what is left of the request's deadline)
        when that is less: past it, a miss; with no budget left, no lookup at all."""
        limit = self.cfg.lookup_timeout_s if budget_s is None else min(self.cfg.lookup_timeout_s, budget_s / 2)
        if limit <= 0:
            self.metrics.lookups.labels("exact", "timeout").inc()
            return None
        stage = ["exact"]
        try:
            async with asyncio.timeout(limit):
                return await self._get(req, version, embedding, stage)
        except TimeoutError:
            log.debug("route cache lookup took over %.1f ms: a miss", limit * 1000)
            self.metrics.lookups.labels(stage[0], "timeout").inc()
            return None

    async def _get(
        self, req: RouteRequestV1, version: str, embedding: npt.NDArray[np.float32] | None, stage: list[str]
    ) -> tuple[RouteReplyV1, str] | None:
        try:
            raw = await self._redis.get(self.exact_key(version, req))
        except (RedisError, OSError) as exc:
            log.debug("route cache lookup failed: %s", exc)
            raw = None
        reply = _decode(raw)
        if reply is not None:
            self.metrics.lookups.labels("exact", "hit").inc()
            return reply, "exact"
        self.metrics.lookups.labels("exact", "miss").inc()
        if not self.cfg.semantic or embedding is None:
            return None
        stage[0] = "semantic"
        try:
            mirror = await self._sync(version, embedding.shape[0])
            found = mirror.best(embedding.astype(np.float32), group_of(req))
            if found is not None and found[0] >= self.cfg.threshold:
                reply = _decode(await self._redis.get(found[1]))
        except (RedisError, OSError) as exc:
            log.debug("semantic route cache lookup failed: %s", exc)
            reply = None
        self.metrics.lookups.labels("semantic", "hit" if reply is not None else "miss").inc()
        return (reply, "semantic") if reply is not None else None

    async def _sync(self, version: str, dims: int) -> _Mirror:
        mirror = self._mirrors.get(version)
        if mirror is None:
            if len(self._mirrors) >= 2:  # an old catalog version: drop it
                self._mirrors.pop(next(iter(self._mirrors)))
            mirror = self._mirrors[version] = _Mirror(dims, self.cfg.capacity)
        now = time.monotonic()
        if now - mirror.synced_at < self.cfg.sync_s:
            return mirror
        async with self._sync_lock:
            if time.monotonic() - mirror.synced_at < self.cfg.sync_s:
                return mirror
            entries = await self._redis.xrange(
                self.stream_key(version), min=f"({mirror.last_id}", count=self.cfg.capacity
            )
            for entry_id, fields in entries:
                e = np.frombuffer(fields[b"e"], dtype=np.float16).astype(np.float32)
                if e.shape[0] == mirror.emb.shape[1]:
                    mirror.add(e, fields[b"g"].decode(), fields[b"k"].decode())
                mirror.last_id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            mirror.synced_at = time.monotonic()
        return mirror

    # --- store ------------------------------------------------------------------------------

    async def put(
        self, req: RouteRequestV1, version: str, reply: RouteReplyV1, embedding: npt.NDArray[np.float32] | None = None
    ) -> None:
        key = self.exact_key(version, req)
        ttl_ms = int(self.cfg.ttl_s * 1000)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(key, reply.model_dump_json(), px=ttl_ms)
                if self.cfg.semantic and embedding is not None:
                    skey = self.stream_key(version)
                    fields = {"e": embedding.astype(np.float16).tobytes(), "g": group_of(req), "k": key}
                    pipe.xadd(skey, fields, maxlen=self.cfg.capacity, approximate=True)  # type: ignore[arg-type]
                    pipe.pexpire(skey, max(ttl_ms * 20, 60_000))
                await pipe.execute()
            self.metrics.stores.labels("ok").inc()
        except (RedisError, OSError) as exc:
            self.metrics.stores.labels("error").inc()
            log.debug("route cache store failed: %s", exc)

    def store_later(
        self, req: RouteRequestV1, version: str, reply: RouteReplyV1, embedding: npt.NDArray[np.float32] | None = None
    ) -> bool:
        """Queue :meth:`put` for the background writer; False (and counted) when the queue is full."""
        if len(self._pending) >= self.cfg.max_pending_writes:
            self.metrics.stores.labels("dropped").inc()
            return False
        self._pending.append((req, version, reply, embedding))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_pending(), name="route-cache-writer")
            self._writer.add_done_callback(_writer_done)
        return True

    async def _write_pending(self) -> None:
        while self._pending:
            await self.put(*self._pending.popleft())

    async def flush(self) -> None:
        """Wait until every queued store is written (tests, shutdown)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def invalidate(self) -> int:
        """Delete every routing-cache key (all versions); returns how many were removed."""
        removed = 0
        batch: list[bytes | str] = []
        async for k in self._redis.scan_iter(match=f"{self._base}:*", count=500):
            batch.append(k)
            if len(batch) >= 500:
                removed += int(await self._redis.unlink(*batch))
                batch.clear()
        if batch:
            removed += int(await self._redis.unlink(*batch))
        self._mirrors.clear()
        return removed


def _writer_done(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("route cache writer crashed; the next store starts another", exc_info=task.exception())


def _decode(raw: bytes | str | None) -> RouteReplyV1 | None:
    if raw is None:
        return None
    try:
        return RouteReplyV1.model_validate_json(raw)
    except ValueError:
        return None
