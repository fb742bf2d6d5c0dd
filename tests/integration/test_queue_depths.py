"""Queue-depth gauges (what KEDA scales the workers on): jobs due in an arq queue and requests
waiting in an RPC list, read from a real Redis on each ``/metrics`` scrape."""

from __future__ import annotations

import socket
import time

import aiohttp
from prometheus_client import CollectorRegistry, Gauge
from redis.asyncio import Redis

from turnout.common.keys import Keys
from turnout.common.metrics import QueueDepths
from turnout.common.ops import build_ops_app, ops_server
from turnout.profiler.metrics import queue_depth_gauge


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_arq_depth_counts_due_jobs_and_list_depth_counts_items(redis: Redis, keys: Keys) -> None:
    registry = CollectorRegistry()
    gauge = Gauge("depth", "d", ["queue"], registry=registry)
    now_ms = int(time.time() * 1000)
    await redis.zadd(keys.profiler_queue, {"due-1": now_ms - 5000, "due-2": now_ms - 1, "retry": now_ms + 600_000})
    await redis.rpush(keys.rpc_queue("scorer.route", 1), b"a", b"b", b"c")
    depths = QueueDepths(
        gauge,
        lambda: redis,
        arq={"profiler": keys.profiler_queue},
        lists={"scorer.route.v1": keys.rpc_queue("scorer.route", 1)},
    )
    assert registry.get_sample_value("depth", {"queue": "profiler"}) == 0.0  # pre-initialised
    await depths.refresh()
    assert registry.get_sample_value("depth", {"queue": "profiler"}) == 2.0  # the deferred retry is not due
    assert registry.get_sample_value("depth", {"queue": "scorer.route.v1"}) == 3.0
    await redis.delete(keys.profiler_queue, keys.rpc_queue("scorer.route", 1))


async def test_no_client_yet_or_redis_down_keeps_the_last_value(redis: Redis, keys: Keys) -> None:
    registry = CollectorRegistry()
    gauge = Gauge("depth", "d", ["queue"], registry=registry)
    await redis.rpush(keys.sync_queue + ":list", b"x")
    client: list[Redis | None] = [None]
    depths = QueueDepths(gauge, lambda: client[0], lists={"q": keys.sync_queue + ":list"})
    await depths.refresh()
    assert registry.get_sample_value("depth", {"queue": "q"}) == 0.0
    client[0] = redis
    await depths.refresh()
    assert registry.get_sample_value("depth", {"queue": "q"}) == 1.0
    dead = Redis(host="127.0.0.1", port=_free_port(), socket_connect_timeout=0.5)
    client[0] = dead
    await depths.refresh()
    assert registry.get_sample_value("depth", {"queue": "q"}) == 1.0
    await dead.aclose()
    await redis.delete(keys.sync_queue + ":list")


async def test_metrics_endpoint_reads_the_depth_on_each_scrape(redis: Redis, keys: Keys) -> None:
    registry = CollectorRegistry()
    depths = QueueDepths(queue_depth_gauge(registry), lambda: redis, arq={"profiler": keys.profiler_queue})
    port = _free_port()
    app = build_ops_app("profiler", {}, registry=registry, refresh=[depths.refresh])
    url = f"http://127.0.0.1:{port}/metrics"
    async with ops_server(app, "127.0.0.1", port), aiohttp.ClientSession() as http:
        async with http.get(url) as r:
            assert 'turnout_profiler_queue_depth{queue="profiler"} 0.0' in await r.text()
        await redis.zadd(keys.profiler_queue, {"job": int(time.time() * 1000) - 10})
        async with http.get(url) as r:
            assert 'turnout_profiler_queue_depth{queue="profiler"} 1.0' in await r.text()
    await redis.delete(keys.profiler_queue)
