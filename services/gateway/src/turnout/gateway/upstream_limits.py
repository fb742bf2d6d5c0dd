"""How long an attempt may wait on a backend, and how many may be open at once.

**Read bounds per model.** A stream's time to first byte and the gap between two chunks are
bounded by the model's measured profile (the catalog's ``ttft_ms`` and ``tokens_per_s``,
averaged over its profile categories), not by one flat timeout:

* first byte: ``ttfb_factor × ttft``, clamped to ``[read_min_s, read_max_s]``;
* between chunks: ``gap_factor / tokens_per_s``, clamped the same way;
* a non-streamed reply arrives whole, so it may take the first byte plus the whole generation:
  ``ttfb + gap_factor × max_tokens / tokens_per_s`` (``max_tokens`` unknown: 1024), clamped.

**A model that must load first.** When the scorer's reply says a candidate's model is not resident
on its backend (``CandidateV1.load_s``: the VRAM planner's estimate of the load, needed or under
way), that attempt's bound grows by the estimate, at most ``load_wait_max_s`` and never past
``read_max_s``: a cold load of a large model outlasts a first-byte bound taken from a warm profile,
and giving up stops the load (Ollama runs it under the request). A resident model keeps its bound.
Likewise a candidate with requests queued ahead of it (``CandidateV1.wait_s``: the scorer's
expected wait for a free slot) adds that wait, within the same cap: an attempt that gives up on a
queue the scorer knew of loses its place in it, and its next candidate is usually busy too.

One bound per attempt is given to aiohttp as ``sock_read`` (which covers the wait for the
response headers and every read after): the larger of the first-byte and gap bounds.

A model with **no profile yet** (just discovered, its profiling queued) is not given the flat
``read_max_s``: a hung new model would hold every slot sent to it for two minutes. It gets
``read_unprofiled_s`` for the first byte and each gap (long enough for a cold load into VRAM), and
a non-streamed reply with a known ``max_tokens`` that plus ``max_tokens / unprofiled_min_tokens_per_s``
(the slowest generation still taken for healthy); ``max_tokens`` unknown: ``read_max_s``. All
clamped to ``[read_min_s, read_max_s]``. A hung model thus frees its connection slot and the
request moves to the next candidate within its own bound (a stream: only before its first byte).

**Connection slots.** At most ``max_connections`` requests per backend at once; the next one
waits at most ``slot_wait_s`` for a slot, then goes to the next candidate, and when none is
left the client gets 503 with ``Retry-After``. (aiohttp's own pool would make it wait without
bound.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from turnout.common.schemas.catalog import CatalogModelV1
from turnout.common.schemas.route import CandidateV1

DEFAULT_MAX_TOKENS = 1024


@dataclass(frozen=True, slots=True)
class ReadBounds:
    """The factors and clamps that turn a model's profile into read timeouts."""

    ttfb_factor: float = 10.0
    gap_factor: float = 50.0
    read_min_s: float = 10.0
    read_max_s: float = 120.0
    read_unprofiled_s: float = 30.0
    unprofiled_min_tokens_per_s: float = 10.0
    load_wait_max_s: float = 60.0
    """The most a candidate's expected load time (``CandidateV1.load_s``) adds to its bound."""

    def clamp(self, seconds: float) -> float:
        """``seconds`` clamped to ``[read_min_s, read_max_s]``."""
        return min(max(seconds, self.read_min_s), self.read_max_s)

    def read_timeout_s(
        self, model: CatalogModelV1 | None, *, stream: bool, max_tokens: int | None = None, load_s: float | None = None
    ) -> float:
        """The attempt's bound; ``load_s``: the model must load first, expected to take that long."""
        base = self._read_timeout_s(model, stream=stream, max_tokens=max_tokens)
        return base + self.load_allowance_s(base, load_s)

    def load_allowance_s(self, base_s: float, load_s: float | None) -> float:
        """What an expected load of ``load_s`` adds to a bound of ``base_s``: at most
        ``load_wait_max_s``, and never past ``read_max_s``."""
        if not load_s or load_s <= 0:
            return 0.0
        return max(0.0, min(load_s, self.load_wait_max_s, self.read_max_s - base_s))

    def _read_timeout_s(self, model: CatalogModelV1 | None, *, stream: bool, max_tokens: int | None) -> float:
        if model is None or not model.ttft_ms or not model.tokens_per_s:
            if stream:
                return self.clamp(self.read_unprofiled_s)
            if max_tokens is None:
                return self.read_max_s
            return self.clamp(self.read_unprofiled_s + max_tokens / self.unprofiled_min_tokens_per_s)
        ttfb = self.clamp(self.ttfb_factor * model.ttft_ms / 1000)
        gap = self.clamp(self.gap_factor / model.tokens_per_s)
        if stream:
            return max(ttfb, gap)
        tokens = max_tokens or DEFAULT_MAX_TOKENS
        return self.clamp(ttfb + self.gap_factor * tokens / model.tokens_per_s)


def expected_delay_s(cand: CandidateV1) -> float | None:
    """What the scorer expects a candidate to spend before its first byte beyond a warm, idle
    model's: its load (``load_s``) and the wait for a slot (``wait_s``); ``None`` for neither.
    :meth:`ReadBounds.read_timeout_s` takes it as ``load_s`` (added, capped)."""
    return (cand.load_s or 0.0) + (cand.wait_s or 0.0) or None


class TimeoutCache:
    """``aiohttp.ClientTimeout`` per (model, stream, ``max_tokens`` of a whole reply, caps),
    rebuilt when the catalog changes: an attempt allocates nothing for its timeouts (building one
    measured ~4 µs). At most ``max_entries`` (clients choose ``max_tokens``); past that it starts
    over."""

    def __init__(self, bounds: ReadBounds, connect_s: float, *, max_entries: int = 4096) -> None:
        self.bounds = bounds
        self._connect_s = connect_s
        self._max_entries = max_entries
        self._models: Mapping[str, CatalogModelV1] = {}
        self._cache: dict[tuple[str, bool, int | None, float, float], aiohttp.ClientTimeout] = {}

    def use_catalog(self, by_name: Mapping[str, CatalogModelV1]) -> None:
        """Read bounds from this catalog from now on (the cache empties when it changed)."""
        if by_name is not self._models:
            self._models = by_name
            self._cache = {}

    def get(
        self,
        model: str,
        *,
        stream: bool,
        max_tokens: int | None,
        connect_cap_s: float,
        read_cap_s: float,
        load_s: float | None = None,
    ) -> aiohttp.ClientTimeout:
        """``load_s``: the model must load first (the scorer's estimate): the bound grows by it, capped."""
        if load_s:
            return self._build(model, stream, max_tokens, connect_cap_s, read_cap_s, load_s)
        tokens = None if stream else max_tokens  # a stream's bounds do not depend on its length
        key = (model, stream, tokens, connect_cap_s, read_cap_s)
        t = self._cache.get(key)
        if t is None:
            if len(self._cache) >= self._max_entries:
                self._cache = {}
            t = self._cache[key] = self._build(model, stream, tokens, connect_cap_s, read_cap_s)
        return t

    def _build(
        self,
        model: str,
        stream: bool,
        max_tokens: int | None,
        connect_cap_s: float,
        read_cap_s: float,
        load_s: float | None = None,
    ) -> aiohttp.ClientTimeout:
        read = self.bounds.read_timeout_s(self._models.get(model), stream=stream, max_tokens=max_tokens, load_s=load_s)
        return aiohttp.ClientTimeout(
            total=None, sock_connect=min(self._connect_s, connect_cap_s), sock_read=min(read, read_cap_s)
        )


class Slots:
    """A bounded number of requests per backend, with a bounded wait for a slot."""

    def __init__(self, limit: int, wait_s: float) -> None:
        self.limit = limit
        self.wait_s = wait_s
        self._sems: dict[str, asyncio.Semaphore] = {}

    def _sem(self, backend: str) -> asyncio.Semaphore:
        sem = self._sems.get(backend)
        if sem is None:
            sem = self._sems[backend] = asyncio.Semaphore(self.limit)
        return sem

    async def acquire(self, backend: str) -> bool:
        """Take a slot on ``backend``, waiting at most ``wait_s``; ``False`` when none freed."""
        sem = self._sem(backend)
        if not sem.locked():
            await sem.acquire()  # free: returns at once
            return True
        try:
            async with asyncio.timeout(self.wait_s):
                await sem.acquire()
        except TimeoutError:
            return False
        return True

    def release(self, backend: str) -> None:
        """Give a slot on ``backend`` back."""
        self._sem(backend).release()

    def in_use(self, backend: str) -> int:
        """Slots taken on ``backend`` now."""
        sem = self._sems.get(backend)
        return 0 if sem is None else self.limit - sem._value
