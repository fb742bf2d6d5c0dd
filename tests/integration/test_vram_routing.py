"""VRAM-aware routing in the scorer over a real Redis, with real order RPCs to agents whose
backends are loopback fake Ollamas: the planner's choice goes first, room is made by unloading
LRU idle unpinned models, busy models are left alone, and every order is recorded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from tests.integration.test_gpu_orders import FakeOllama
from turnout.common.backends.clients import OllamaClient
from turnout.common.backends.config import BackendConfig, BackendKind
from turnout.common.inflight import write_inflight
from turnout.common.keys import Keys
from turnout.common.rpc.client import RpcClient
from turnout.common.rpc.server import RpcServer
from turnout.common.schemas.fleet import GpuStateV1, HostStateV1
from turnout.common.schemas.route import CandidateV1, RouteReplyV1
from turnout.common.schemas.vram import OrderAction
from turnout.gpu_agent.orders import OrderExecutor
from turnout.scorer.catalog import ModelSpec, ModelTable
from turnout.scorer.vram import Decision, DecisionKind, VramOptions
from turnout.scorer.vram_actions import VramActions, recent_actions
from turnout.scorer.vram_routing import VramCoordinator

pytestmark = pytest.mark.integration

GiB = 1024**3
SIZES = {"small:3b": 3 * GiB, "mid:8b": 6 * GiB, "big:14b": 10 * GiB, "coder:7b": 5 * GiB}


class Host:
    """A fake Ollama, an order executor on the RPC, and an agent loop publishing HostStateV1."""

    def __init__(self, name: str, capacity: int, redis: Redis, keys: Keys) -> None:
        self.name = name
        self.fake = FakeOllama(sizes=dict(SIZES), capacity=capacity)
        self.redis = redis
        self.keys = keys
        self.url = ""

    async def publish(self) -> None:
        state = HostStateV1(
            host=self.name,
            backend=f"ollama-{self.name}",
            gpus=[GpuStateV1(index=0, memory_total_bytes=self.fake.capacity, memory_used_bytes=self.fake.used(),
                             memory_free_bytes=self.fake.capacity - self.fake.used())],
            loaded_models=[{"name": m, "size_bytes": SIZES[m], "vram_bytes": SIZES[m]} for m in self.fake.loaded],  # type: ignore[misc]
            ts=time.time(),
        )  # fmt: skip
        await self.redis.set(self.keys.fleet_host(self.name), state.model_dump_json(), ex=30)
        await self.redis.zadd(self.keys.fleet_hosts, {self.name: time.time()})

    async def start(self, stack: AsyncExitStack, redis_url: str, session: aiohttp.ClientSession) -> None:
        app = web.Application()
        app.add_routes([web.post("/api/generate", self.fake.generate), web.get("/api/ps", self.fake.ps)])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        backend = OllamaClient(
            BackendConfig(name=f"ollama-{self.name}", kind=BackendKind.OLLAMA, url=self.url), session
        )
        executor = OrderExecutor(backend, self.name, poll_s=0.01, on_change=self.publish)
        server = RpcServer(redis_url, self.keys, replica_id=f"agent-{self.name}", registry=CollectorRegistry())
        executor.register(server)
        task = asyncio.create_task(server.serve())

        async def stop() -> None:
            await server.stop()
            await asyncio.wait_for(task, timeout=10)

        stack.push_async_callback(stop)
        for _ in range(500):
            if server.connected:
                break
            await asyncio.sleep(0.01)
        await self.publish()


@pytest.fixture
async def fleet(redis_url: str, redis: Redis, keys: Keys) -> AsyncIterator[tuple[dict[str, Host], VramCoordinator]]:
    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())
        hosts = {"h1": Host("h1", 12 * GiB, redis, keys), "h2": Host("h2", 12 * GiB, redis, keys)}
        for h in hosts.values():
            await h.start(stack, redis_url, session)
        rpc = RpcClient(redis_url, keys, registry=CollectorRegistry())
        await rpc.start()
        stack.push_async_callback(rpc.close)
        opts = VramOptions(budget_fraction=1.0, score_margin=0.1, pinned={"h1": ["small:3b"]}, order_timeout_s=5)
        actions = VramActions(redis, keys, rpc, replica="scorer-test", opts=opts)
        coord = VramCoordinator(opts, redis=redis, keys=keys, actions=actions, evict_wait_s=2.0)
        coord.update_catalog(ModelTable.build([ModelSpec(m, vram_bytes=b) for m, b in SIZES.items()]))  # profiled sizes
        stack.push_async_callback(coord.close)
        yield hosts, coord


def reply(*cands: tuple[str, str, float]) -> RouteReplyV1:
    return RouteReplyV1(
        candidates=[CandidateV1(model=m, backend=f"ollama-{h}", upstream_model=m, score=s) for m, h, s in cands]
    )


async def test_a_resident_model_within_the_margin_is_preferred(
    fleet: tuple[dict[str, Host], VramCoordinator], redis: Redis, keys: Keys
) -> None:
    hosts, coord = fleet
    hosts["h1"].fake.loaded.update({"mid:8b": 1.0, "small:3b": 2.0})  # 9 of 12 GiB
    await hosts["h1"].publish()
    await coord.refresh()
    out = await coord.route(reply(("big:14b", "h1", 1.0), ("mid:8b", "h1", 0.95), ("small:3b", "h1", 0.5)))
    # the fallbacks: the loaded one before the one that would need a load (attempt_order)
    assert [c.model for c in out.candidates] == ["mid:8b", "small:3b", "big:14b"]
    assert out.candidates[0].reasons[-1].startswith("vram: big:14b is not loaded and does not fit on h1; mid:8b")
    assert await recent_actions(redis, keys) == []


async def test_outside_the_margin_lru_idle_unpinned_models_are_unloaded_then_routed(
    fleet: tuple[dict[str, Host], VramCoordinator], redis: Redis, keys: Keys
) -> None:
    hosts, coord = fleet
    h1 = hosts["h1"]
    h1.fake.capacity = 14 * GiB
    h1.fake.loaded.update({"small:3b": 1.0, "mid:8b": 2.0})  # pinned small + mid: 9 of 14, big needs 10
    await h1.publish()
    await coord.refresh()
    out = await coord.route(reply(("big:14b", "h1", 1.0), ("mid:8b", "h1", 0.5)))
    assert out.candidates[0].model == "big:14b"
    assert out.candidates[0].reasons[-1] == "vram: unload mid:8b on h1 to load big:14b"
    # mid was unloaded; the load follows in the background
    for _ in range(200):
        if "big:14b" in h1.fake.loaded:
            break
        await asyncio.sleep(0.02)
    assert sorted(h1.fake.loaded) == ["big:14b", "small:3b"]
    assert h1.fake.used() <= h1.fake.capacity
    for _ in range(100):
        log = await recent_actions(redis, keys)
        if len(log) == 2:
            break
        await asyncio.sleep(0.02)
    assert [(a.host, a.action, a.model, a.ok) for a in log] == [
        ("h1", OrderAction.LOAD, "big:14b", True),
        ("h1", OrderAction.UNLOAD, "mid:8b", True),
    ]


async def test_a_busy_model_is_not_unloaded_and_a_candidate_that_fits_elsewhere_goes_first(
    fleet: tuple[dict[str, Host], VramCoordinator], redis: Redis, keys: Keys
) -> None:
    hosts, coord = fleet
    h1 = hosts["h1"]
    h1.fake.loaded.update({"small:3b": 1.0, "mid:8b": 2.0})
    await h1.publish()
    await write_inflight(redis, keys, "gateway-1", {("ollama-h1", "mid:8b"): 1})  # a gateway streams from mid:8b
    await coord.refresh()
    assert (await coord.is_busy("h1", "mid:8b"), await coord.is_busy("h1", "small:3b")) == (True, False)
    out = await coord.route(reply(("big:14b", "h1", 1.0), ("big:14b", "h2", 0.7)))
    assert [(c.model, c.backend) for c in out.candidates] == [("big:14b", "ollama-h2"), ("big:14b", "ollama-h1")]
    assert "mid:8b" in h1.fake.loaded
    assert await recent_actions(redis, keys) == []


async def test_a_candidate_whose_model_is_not_loaded_carries_its_expected_load_time(
    fleet: tuple[dict[str, Host], VramCoordinator],
) -> None:
    hosts, coord = fleet
    hosts["h1"].fake.loaded.update({"mid:8b": 1.0})
    await hosts["h1"].publish()
    await coord.refresh()
    cands = reply(("mid:8b", "h1", 1.0), ("big:14b", "h2", 0.9), ("mid:8b", "h2", 0.8))
    need = {(o.model, o.host): o.need_bytes for o in coord.options(cands.candidates)}
    out = await coord.route(cands)
    loads = {(c.model, c.backend): c.load_s for c in out.candidates}
    assert loads == {
        ("mid:8b", "ollama-h1"): None,  # loaded: the gateway keeps its profiled first-byte bound
        ("big:14b", "ollama-h2"): round(coord.cfg.load_s(need[("big:14b", "h2")]), 2),
        ("mid:8b", "ollama-h2"): round(coord.cfg.load_s(need[("mid:8b", "h2")]), 2),
    }
    assert loads[("big:14b", "ollama-h2")] > loads[("mid:8b", "ollama-h2")] > coord.cfg.load_fixed_s  # type: ignore[operator]
    # routed to h2's big:14b (it fits: the backend loads it), the next decision sees that load
    # under way — not yet reported by the agent — and still counts it as a load
    first = await coord.route(reply(("big:14b", "h2", 1.0)))
    assert first.candidates[0].load_s == loads[("big:14b", "ollama-h2")]
    again = await coord.route(reply(("big:14b", "h2", 1.0)))
    assert again.candidates[0].load_s == loads[("big:14b", "ollama-h2")]
    assert again.candidates[0].reasons[-1] == "vram: big:14b is loaded on h2"
    # once the agent reports it loaded, no load is expected
    hosts["h2"].fake.loaded.update({"big:14b": 3.0})
    await hosts["h2"].publish()
    await coord.refresh()
    done = await coord.route(reply(("big:14b", "h2", 1.0)))
    assert done.candidates[0].load_s is None


async def test_a_loaded_model_with_too_many_requests_ahead_gives_way_to_a_loaded_one(
    fleet: tuple[dict[str, Host], VramCoordinator], redis: Redis, keys: Keys
) -> None:
    hosts, coord = fleet
    hosts["h1"].fake.loaded.update({"big:14b": 1.0})
    hosts["h2"].fake.loaded.update({"mid:8b": 1.0})
    for h in hosts.values():
        await h.publish()
    await coord.refresh()
    cands = reply(("big:14b", "h1", 1.0), ("coder:7b", "h2", 0.8), ("mid:8b", "h2", 0.7))
    out = await coord.route(cands, waits=[12.0, 0.0, 1.0])  # the engine's expected waits (s)
    assert [c.model for c in out.candidates] == ["mid:8b", "big:14b", "coder:7b"]  # loaded ones first
    # each carries its expected wait for the gateway's first-byte bound (none expected: None)
    assert [c.wait_s for c in out.candidates] == [1.0, 12.0, None]
    assert out.candidates[0].reasons[-1] == (
        "vram: big:14b on h1 has ~12 s of requests ahead (> 5 s); mid:8b is loaded on h2 with ~1 s"
    )
    assert await recent_actions(redis, keys) == []  # nothing loaded for it
    # without waits, or within the limit, the best loaded model keeps the request
    assert (await coord.route(cands)).candidates[0].model == "big:14b"
    assert (await coord.route(cands, waits=[4.0, 0.0, 1.0])).candidates[0].model == "big:14b"


async def test_requests_decided_while_unloads_make_room_do_not_go_to_the_model_that_waits_for_it(
    fleet: tuple[dict[str, Host], VramCoordinator], redis: Redis, keys: Keys
) -> None:
    """A burst: the first request orders unloads to load big:14b; the ones decided before those
    unloads are done must not be sent to big:14b (the backend has no room for it yet: out of
    memory), yet its reserved bytes stay counted; once the room is made, requests go to it."""
    hosts, coord = fleet
    h1 = hosts["h1"]
    h1.fake.capacity = 14 * GiB
    h1.fake.unload_lag = 1.0  # Ollama frees the runner a moment after the keep_alive 0 call
    h1.fake.loaded.update({"small:3b": 1.0, "mid:8b": 2.0})  # pinned small + mid: 9 of 14, big needs 10
    await h1.publish()
    await coord.refresh()
    burst = reply(("big:14b", "h1", 1.0), ("coder:7b", "h2", 0.5))
    first = asyncio.create_task(coord.route(burst))
    for _ in range(200):  # the unload order is out; the room is not made yet
        if any(c.get("keep_alive") == 0 for c in h1.fake.calls):
            break
        await asyncio.sleep(0.01)
    assert "mid:8b" in h1.fake.loaded
    during = [await coord.route(burst) for _ in range(3)]
    assert h1.fake.capacity - h1.fake.used() < SIZES["big:14b"]  # still no room on h1 when they were decided
    assert [(c.candidates[0].model, c.candidates[0].backend) for c in during] == [("coder:7b", "ollama-h2")] * 3
    assert during[0].candidates[0].reasons[-1] == (
        "vram: big:14b waits for unloads on h1: coder:7b needs 5.8 GiB, h2 has 12.0 GiB free"
    )
    # the reserved bytes still count on h1: a model that would need them is not sent there either
    assert coord.preview(reply(("coder:7b", "h1", 1.0)))[1] == Decision(
        0, DecisionKind.NO_ROOM, "coder:7b cannot fit on h1 and nothing can be unloaded"
    )
    out = await first
    assert out.candidates[0].model == "big:14b"  # the room was made within evict_wait_s
    after = await coord.route(burst)
    assert (after.candidates[0].model, after.candidates[0].backend) == ("big:14b", "ollama-h1")
