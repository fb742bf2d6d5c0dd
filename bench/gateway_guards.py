"""What the gateway's guards cost per request: shared rate limits, circuit admission, slots, and the
disconnect watch of a non-streamed request, each against a baseline measured in the same run.

``python bench/gateway_guards.py`` starts a private ``redis-server`` and measures, interleaved in
``--rounds`` rounds (medians printed; the shared dev box drifts):

* **rate limits** (``limits`` SlidingWindowCounter over its async redis-py storage, two budgets:
  requests and tokens per key, the gateway's :class:`RateLimiter.admit`) against the floor of
  any shared counter: one Redis round trip (``PING`` on a redis-py client), and against a
  hand-written one-call Lua window (``INCRBY`` + ``PEXPIRE`` in one ``EVALSHA`` per budget,
  both budgets pipelined) — what writing our own would save;
* **circuit admission** with every circuit closed (the common case: two dict lookups), slot
  acquire + release, and the disconnect watch (a listener task per non-streamed request),
  against an empty ``await`` of a coroutine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from turnout.common.circuits import CircuitStore
from turnout.common.keys import Keys
from turnout.common.schemas.route import RequestKind
from turnout.devstack.infra import start_redis
from turnout.gateway.circuits import Breakers
from turnout.gateway.forwarding import Exchange
from turnout.gateway.metrics import build_metrics
from turnout.gateway.pipeline import _Watch
from turnout.gateway.rate_limits import RateLimiter, RateLimitOptions
from turnout.gateway.upstream_limits import Slots

LUA_WINDOW = """
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if n == tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return n
"""


async def per_call_us(fn: Callable[[], Awaitable[object]], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - t0) / n * 1e6


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-guards-") as run_dir:
        instance = start_redis(Path(run_dir))
        try:
            await run(instance.url, args.rounds, args.n)
        finally:
            instance.stop()


async def run(redis_url: str, rounds: int, n: int) -> None:
    keys = Keys("bench-guards")
    redis = Redis.from_url(redis_url)
    metrics = build_metrics(CollectorRegistry())
    opts = RateLimitOptions(requests_per_minute_per_key=10**9, tokens_per_minute_per_key=10**12)
    limiter = RateLimiter(opts, redis_url, keys, metrics)
    lua = redis.register_script(LUA_WINDOW)
    breakers = Breakers(CircuitStore(redis, keys), metrics)
    slots = Slots(256, 1.0)

    async def ping() -> None:
        await redis.ping()

    async def limits_admit() -> None:
        await limiter.admit("key-1", None, 40)

    async def lua_admit() -> None:
        async with redis.pipeline(transaction=False) as pipe:
            await lua(keys=["bench-guards:rl:r"], args=[1, 60000], client=pipe)
            await lua(keys=["bench-guards:rl:t"], args=[40, 60000], client=pipe)
            await pipe.execute()

    async def nothing() -> None:
        return None

    async def admit() -> None:
        await breakers.admit("backend", "model")

    async def slot() -> None:
        await slots.acquire("backend")
        slots.release("backend")

    ex = Exchange(RequestKind.CHAT, {}, False, "r", "c")
    waiting: set[_Watch] = set()

    async def receive() -> dict[str, object]:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def watch() -> None:
        w = _Watch(ex, receive, waiting)
        w.stop()

    cases: dict[str, Callable[[], Awaitable[object]]] = {
        "redis PING (floor)": ping,
        "limits: 2 budgets": limits_admit,
        "Lua window: 2 budgets": lua_admit,
        "empty await (floor)": nothing,
        "circuit admit, all closed": admit,
        "slot acquire+release": slot,
        "disconnect watch": watch,
    }
    for fn in cases.values():  # warm-up
        await per_call_us(fn, 200)
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            results[name].append(await per_call_us(fn, n))
    med = {name: statistics.median(v) for name, v in results.items()}
    for name, us in med.items():
        print(f"{name:28s} {us:8.1f} µs/request")
    print(
        f"limits / PING = {med['limits: 2 budgets'] / med['redis PING (floor)']:.2f}x; "
        f"limits / Lua window = {med['limits: 2 budgets'] / med['Lua window: 2 budgets']:.2f}x"
    )
    print(
        "guards without Redis over an empty await: "
        f"+{med['circuit admit, all closed'] - med['empty await (floor)']:.1f} µs (circuits), "
        f"+{med['slot acquire+release'] - med['empty await (floor)']:.1f} µs (slots), "
        f"+{med['disconnect watch'] - med['empty await (floor)']:.1f} µs (watch)"
    )
    await limiter.close()
    await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main())
