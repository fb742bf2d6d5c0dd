"""Request and token budgets per API key and per client IP, shared by every gateway through Redis.

Kept by the ``limits`` library (sliding-window counters in Redis, its async ``redis-py``
storage, keys under ``keys.ratelimit("…")``), so every replica draws from one budget:

* ``requests_per_minute`` — one per model request;
* ``tokens_per_minute`` — the prompt's estimate (``est_prompt_tokens``) when the request
  arrives; when the reply's ``usage`` says more (prompt + completion), the difference is drawn
  too, so the next requests see it. (The library cannot give tokens back: an over-estimate is
  not refunded — the estimate is chars / 4, close to or under what backends count.)

A response-cache hit counts like any request: the limits are drawn before the cache is asked
(a client over its budget gets 429 even for a stored answer), and the cached reply's ``usage``
corrects the token budgets as a backend's would.

Each budget is per API key (the client id, when client keys are configured) and per client IP.
Over a budget: 429 ``rate_limit_exceeded`` with ``Retry-After`` and OpenAI's
``x-ratelimit-limit-*``, ``x-ratelimit-remaining-*`` and ``x-ratelimit-reset-*`` headers.

Redis unreachable: requests pass (fail open, counted in the log), each check bounded by
``redis_timeout_s`` — a limiter must not take the API down with it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItemPerMinute
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError

from turnout.common.keys import Keys
from turnout.common.links import LinkOptions, make_redis
from turnout.gateway.errors import RateLimited
from turnout.gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)


class RateLimitOptions(BaseModel):
    """Requests and tokens per minute, per API key and per client IP (unset: no limit)."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute_per_key: int | None = Field(default=None, ge=1, description="Per API key; unset: no limit")
    tokens_per_minute_per_key: int | None = Field(default=None, ge=1, description="Per API key; unset: no limit")
    requests_per_minute_per_ip: int | None = Field(default=None, ge=1, description="Per client IP; unset: no limit")
    tokens_per_minute_per_ip: int | None = Field(default=None, ge=1, description="Per client IP; unset: no limit")
    redis_timeout_s: float = Field(default=0.25, gt=0, description="Bound on each check; past it the request passes")

    @property
    def enabled(self) -> bool:
        """Whether any limit is set."""
        return any(
            v is not None
            for v in (
                self.requests_per_minute_per_key,
                self.tokens_per_minute_per_key,
                self.requests_per_minute_per_ip,
                self.tokens_per_minute_per_ip,
            )
        )


@dataclass(frozen=True, slots=True)
class _Budget:
    name: str
    """requests_per_key | tokens_per_key | requests_per_ip | tokens_per_ip (the metric's label)."""
    item: RateLimitItemPerMinute
    tokens: bool
    per_ip: bool


def storage_uri(redis_url: str) -> str:
    """The ``limits`` library's async storage URI for a Redis URL."""
    scheme, sep, rest = redis_url.partition("://")
    return f"async+{scheme}{sep}{rest}" if not scheme.startswith("async+") else redis_url


class RateLimiter:
    """The rate limits, shared by every gateway replica through Redis (sliding-window counters)."""

    def __init__(self, opts: RateLimitOptions, redis_url: str, keys: Keys, metrics: GatewayMetrics) -> None:
        self._opts = opts
        self._metrics = metrics
        # the library's client over our pool: the links' bounds (keepalive, timeouts that drop the
        # connection), and one we close (the library's own was never closed)
        t = opts.redis_timeout_s
        self._redis = make_redis(redis_url, LinkOptions(connect_timeout_s=t, command_timeout_s=t))
        self._storage = RedisStorage(
            storage_uri(redis_url),
            implementation="redispy",
            key_prefix=keys.ratelimit("v1"),
            connection_pool=self._redis.connection_pool,  # type: ignore[arg-type]  # documented; typed as str|float|bool
        )
        self._limiter = SlidingWindowCounterRateLimiter(self._storage)
        budgets = [
            ("requests_per_key", opts.requests_per_minute_per_key, False, False),
            ("tokens_per_key", opts.tokens_per_minute_per_key, True, False),
            ("requests_per_ip", opts.requests_per_minute_per_ip, False, True),
            ("tokens_per_ip", opts.tokens_per_minute_per_ip, True, True),
        ]
        self._budgets = [
            _Budget(name, RateLimitItemPerMinute(n), tokens, per_ip)
            for name, n, tokens, per_ip in budgets
            if n is not None
        ]

    def _who(self, b: _Budget, key_id: str | None, ip: str | None) -> str | None:
        return ip if b.per_ip else key_id

    async def admit(self, key_id: str | None, ip: str | None, est_tokens: int) -> None:
        """Draw one request and the prompt estimate from every budget that applies; 429 when one
        is spent (what the others drew stays drawn: the request did arrive)."""
        checks = []
        for b in self._budgets:
            who = self._who(b, key_id, ip)
            if who is None:
                continue
            cost = max(est_tokens, 1) if b.tokens else 1
            checks.append((b, who, cost))
        if not checks:
            return
        results = await self._bounded(*(self._limiter.hit(b.item, b.name, who, cost=cost) for b, who, cost in checks))
        if results is None:
            return
        for (b, who, _), ok in zip(checks, results, strict=True):
            if not ok:
                self._metrics.rate_limited.labels(b.name).inc()
                raise await self._refusal(b, who)

    async def settle(
        self, key_id: str | None, ip: str | None, est_tokens: int, usage: dict[str, object] | None
    ) -> None:
        """The reply's usage is known: draw what it used beyond the estimate."""
        if not usage:
            return
        total = usage.get("total_tokens")
        if not isinstance(total, int):
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
            total = (prompt if isinstance(prompt, int) else 0) + (completion if isinstance(completion, int) else 0)
        extra = total - max(est_tokens, 1)
        if extra <= 0:
            return
        calls = []
        for b in self._budgets:
            who = self._who(b, key_id, ip)
            if b.tokens and who is not None:
                calls.append(self._limiter.hit(b.item, b.name, who, cost=extra))
        if calls:
            await self._bounded(*calls)

    async def _bounded(self, *calls: object) -> list[bool] | None:
        try:
            async with asyncio.timeout(self._opts.redis_timeout_s):
                return list(await asyncio.gather(*calls))  # type: ignore[call-overload]
        except (RedisError, OSError, TimeoutError, Exception) as exc:  # the library wraps some errors
            log.warning("rate limits not checked (Redis: %s); request passes", type(exc).__name__)
            return None

    async def _refusal(self, b: _Budget, who: str) -> RateLimited:
        kind = "tokens" if b.tokens else "requests"
        limit = b.item.amount
        reset_s = 60.0
        remaining = 0
        stats = await self._bounded(self._limiter.get_window_stats(b.item, b.name, who))
        if stats:
            window = stats[0]
            reset_s = max(0.0, float(window.reset_time) - time.time())  # type: ignore[attr-defined]
            remaining = int(window.remaining)  # type: ignore[attr-defined]
        retry = max(1, math.ceil(reset_s))
        scope = "IP address" if b.per_ip else "API key"
        return RateLimited(
            f"Rate limit reached for this {scope}: {limit} {kind} per minute. Retry after {retry}s.",
            retry_after_s=retry,
            headers={
                f"x-ratelimit-limit-{kind}": str(limit),
                f"x-ratelimit-remaining-{kind}": str(remaining),
                f"x-ratelimit-reset-{kind}": f"{retry}s",
            },
        )

    async def close(self) -> None:
        """Close the budgets' Redis connections (the app's lifespan does, on shutdown)."""
        await self._redis.aclose()
