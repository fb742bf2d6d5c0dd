"""Orders from the router to a host's gpu-agent over the real RPC (real Redis), carried out on a
loopback fake Ollama that speaks the real ``/api/generate`` keep_alive semantics and
``/api/ps``, and fails a load that does not fit the way Ollama does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from turnout.common.backends.clients import OllamaClient
from turnout.common.backends.config import BackendConfig, BackendKind
from turnout.common.errors import RpcUnavailable
from turnout.common.keys import Keys
from turnout.common.rpc.client import RpcClient
from turnout.common.rpc.contract import gpu_order_method
from turnout.common.rpc.server import RpcServer
from turnout.common.schemas.vram import ModelOrderV1, OrderAction, OrderResultV1
from turnout.gpu_agent.orders import OrderExecutor, same_model
from turnout.scorer.vram import PlannedOrder, VramOptions
from turnout.scorer.vram_actions import VramActions, recent_actions

pytestmark = pytest.mark.integration

GiB = 1024**3


@dataclass
class FakeOllama:
    """The residency part of Ollama: models with sizes, a VRAM capacity, what is loaded."""

    sizes: dict[str, int]
    capacity: int
    load_delay: float = 0.0
    unload_lag: float = 0.0
    """Ollama answers the keep_alive 0 call at once and frees the runner a moment later."""
    loaded: dict[str, float] = field(default_factory=dict)
    calls: list[dict[str, object]] = field(default_factory=list)

    def used(self) -> int:
        return sum(self.sizes[m] for m in self.loaded)

    async def generate(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append(body)
        name = body.get("model", "")
        if ":" not in name:
            name += ":latest"
        if name not in self.sizes:
            return web.json_response({"error": f"model '{body.get('model')}' not found"}, status=404)
        created = "2026-11-22T21:00:00.000000Z"
        if body.get("keep_alive") in (0, "0", "0s"):
            if self.unload_lag:
                asyncio.get_running_loop().call_later(self.unload_lag, self.loaded.pop, name, None)
            else:
                self.loaded.pop(name, None)
            return web.json_response(
                {"model": name, "created_at": created, "response": "", "done": True, "done_reason": "unload"}
            )
        if name not in self.loaded:
            need, free = self.sizes[name], self.capacity - self.used()
            if need > free:
                return web.json_response(
                    {"error": f"model requires more system memory ({need / GiB:.1f} GiB) than is available "
                              f"({free / GiB:.1f} GiB)"},
                    status=500,
                )  # fmt: skip
            await asyncio.sleep(self.load_delay)
            self.loaded[name] = time.time()
        return web.json_response(
            {"model": name, "created_at": created, "response": "", "done": True, "done_reason": "load"}
        )

    async def ps(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "models": [
                    {
                        "name": m,
                        "model": m,
                        "size": self.sizes[m],
                        "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
                        "details": {"format": "gguf", "family": "llama", "quantization_level": "Q4_K_M"},
                        "expires_at": "2026-11-22T21:35:00.000000Z",
                        "size_vram": self.sizes[m],
                    }
                    for m in self.loaded
                ]
            }
        )


@pytest.fixture
async def ollama() -> AsyncIterator[tuple[FakeOllama, str]]:
    fake = FakeOllama(
        sizes={"llama3.2:3b": 3 * GiB, "qwen2.5:7b": 6 * GiB, "qwen2.5:14b": 10 * GiB, "llama3.2:latest": 2 * GiB},
        capacity=12 * GiB,
    )
    app = web.Application()
    app.add_routes([web.post("/api/generate", fake.generate), web.get("/api/ps", fake.ps)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield fake, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@dataclass
class Agent:
    executor: OrderExecutor
    server: RpcServer
    published: list[float]


@pytest.fixture
async def agent(redis_url: str, keys: Keys, ollama: tuple[FakeOllama, str]) -> AsyncIterator[Agent]:
    _, url = ollama
    published: list[float] = []

    async def publish_now() -> None:
        published.append(time.time())

    async with aiohttp.ClientSession() as session:
        backend = OllamaClient(BackendConfig(name="gpu1", kind=BackendKind.OLLAMA, url=url), session)
        executor = OrderExecutor(backend, "gpu1", poll_s=0.01, on_change=publish_now)
        server = RpcServer(redis_url, keys, replica_id="agent-gpu1", registry=CollectorRegistry())
        executor.register(server)
        task = asyncio.create_task(server.serve())
        for _ in range(500):
            if server.connected:
                break
            await asyncio.sleep(0.01)
        try:
            yield Agent(executor, server, published)
        finally:
            await server.stop()
            await asyncio.wait_for(task, timeout=10)


@pytest.fixture
async def rpc(redis_url: str, keys: Keys) -> AsyncIterator[RpcClient]:
    client = RpcClient(redis_url, keys, registry=CollectorRegistry(), watch=(gpu_order_method("gpu1"),))
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def order(rpc: RpcClient, action: OrderAction, model: str, **kw: object) -> OrderResultV1:
    body = ModelOrderV1(action=action, model=model, reason="test", requested_by="pytest", **kw)  # type: ignore[arg-type]
    return await rpc.call(gpu_order_method("gpu1"), body, timeout=10)


async def test_load_then_unload_round_trip(ollama: tuple[FakeOllama, str], agent: Agent, rpc: RpcClient) -> None:
    fake, _ = ollama
    loaded = await order(rpc, OrderAction.LOAD, "qwen2.5:7b")
    assert (loaded.ok, loaded.host, loaded.action, loaded.error) == (True, "gpu1", OrderAction.LOAD, None)
    assert [(m.name, m.vram_bytes) for m in loaded.loaded_models] == [("qwen2.5:7b", 6 * GiB)]
    assert list(fake.loaded) == ["qwen2.5:7b"]

    unloaded = await order(rpc, OrderAction.UNLOAD, "qwen2.5:7b")
    assert (unloaded.ok, unloaded.loaded_models) == (True, [])
    # the wire calls are exactly Ollama's: an empty generate loads, keep_alive 0 unloads
    assert fake.calls == [{"model": "qwen2.5:7b"}, {"model": "qwen2.5:7b", "keep_alive": 0}]
    assert len(agent.published) == 2, "each order publishes the new state at once"


async def test_unload_waits_until_ollama_has_really_freed_the_model(
    ollama: tuple[FakeOllama, str], agent: Agent, rpc: RpcClient
) -> None:
    fake, _ = ollama
    fake.loaded["llama3.2:3b"] = time.time()
    fake.unload_lag = 0.15
    t0 = time.monotonic()
    result = await order(rpc, OrderAction.UNLOAD, "llama3.2:3b")
    assert result.ok and result.loaded_models == []
    assert time.monotonic() - t0 >= 0.15
    assert fake.loaded == {}


async def test_unloading_a_model_that_is_not_loaded_succeeds(agent: Agent, rpc: RpcClient) -> None:
    result = await order(rpc, OrderAction.UNLOAD, "qwen2.5:14b")
    assert (result.ok, result.error) == (True, None)


async def test_a_load_that_does_not_fit_fails_the_way_ollama_fails(
    ollama: tuple[FakeOllama, str], agent: Agent, rpc: RpcClient
) -> None:
    fake, _ = ollama
    fake.loaded["qwen2.5:7b"] = time.time()
    result = await order(rpc, OrderAction.LOAD, "qwen2.5:14b")
    assert result.ok is False
    assert result.error is not None and "HTTP 500" in result.error
    assert [m.name for m in result.loaded_models] == ["qwen2.5:7b"]


async def test_unknown_model_and_bare_names(ollama: tuple[FakeOllama, str], agent: Agent, rpc: RpcClient) -> None:
    missing = await order(rpc, OrderAction.LOAD, "nope:1b")
    assert missing.ok is False and missing.error is not None and "HTTP 404" in missing.error
    bare = await order(rpc, OrderAction.LOAD, "llama3.2")  # Ollama resolves it to llama3.2:latest
    assert bare.ok and [m.name for m in bare.loaded_models] == ["llama3.2:latest"]
    assert same_model("llama3.2:latest", "llama3.2") and not same_model("llama3.2:3b", "llama3.2")


async def test_an_order_that_takes_too_long_reports_a_timeout(
    ollama: tuple[FakeOllama, str], agent: Agent, rpc: RpcClient
) -> None:
    fake, _ = ollama
    fake.load_delay = 1.0
    result = await order(rpc, OrderAction.LOAD, "llama3.2:3b", timeout_s=0.2)
    assert result.ok is False and result.error == "load llama3.2:3b: not done within 0.2s"


async def test_orders_for_a_host_without_a_live_agent_fail_fast(redis_url: str, keys: Keys) -> None:
    client = RpcClient(redis_url, keys, registry=CollectorRegistry(), watch=(gpu_order_method("ghost"),))
    await client.start()
    try:
        with pytest.raises(RpcUnavailable, match="no live server for gpu.order.ghost.v1"):
            await client.call(gpu_order_method("ghost"), ModelOrderV1(action=OrderAction.UNLOAD, model="x"), timeout=5)
    finally:
        await client.close()


async def test_the_router_frees_memory_then_loads_through_vram_actions(
    redis: Redis, keys: Keys, ollama: tuple[FakeOllama, str], agent: Agent, rpc: RpcClient
) -> None:
    """The scorer's executor drives the real agent: unload LRU, then load, all recorded."""
    fake, _ = ollama
    fake.capacity = 13 * GiB
    fake.loaded.update({"llama3.2:3b": 1.0, "qwen2.5:7b": 2.0})  # 9 of 13 GiB: 14b (10) needs an unload
    actions = VramActions(redis, keys, rpc, replica="scorer-1", opts=VramOptions(order_timeout_s=5))
    plan = [
        PlannedOrder(OrderAction.UNLOAD, "gpu1", "qwen2.5:7b", 6 * GiB, "free 6.0 GiB for qwen2.5:14b"),
        PlannedOrder(OrderAction.LOAD, "gpu1", "qwen2.5:14b", 10 * GiB, "best candidate"),
    ]
    # without the unload the load would not fit: prove the order matters
    run = await actions.execute("gpu1", plan)
    assert run.completed, [a.error for a in run.actions]
    assert sorted(fake.loaded) == ["llama3.2:3b", "qwen2.5:14b"]
    assert fake.used() <= fake.capacity
    log = await recent_actions(redis, keys)
    assert [(a.action, a.model, a.ok, a.requested_by) for a in log] == [
        (OrderAction.LOAD, "qwen2.5:14b", True, "scorer-1"),
        (OrderAction.UNLOAD, "qwen2.5:7b", True, "scorer-1"),
    ]


async def test_the_running_agent_serves_orders_on_the_simulated_fleet_and_publishes_at_once(
    redis: Redis, redis_url: str, keys: Keys, key_prefix: str
) -> None:
    """The whole agent (``running_agent``): simulated GPU from the fakefleet listener, orders over
    the RPC, the new residency published right after each order (no waiting for the next tick)."""
    from pathlib import Path

    from turnout.common.schemas.fleet import HostStateV1
    from turnout.fakefleet.config import FleetConfig
    from turnout.fakefleet.server import Fleet
    from turnout.gpu_agent.app import running_agent
    from turnout.gpu_agent.settings import GpuAgentSettings

    fleet_yaml = Path(__file__).resolve().parents[1] / "fixtures" / "fleet" / "test_fleet.yaml"
    async with Fleet(FleetConfig.load(fleet_yaml)) as fleet:
        settings = GpuAgentSettings.load(
            redis_url=redis_url,
            key_prefix=key_prefix,
            backends=f"sim:ollama={fleet.url('ollama')}",
            gpu_agent={"host": "sim-host", "backend": "sim", "readers": ["simulated"], "interval_s": 30,
                       "ttl_s": 60, "ops_host": "127.0.0.1", "ops_port": 0},
        )  # fmt: skip
        async with running_agent(settings, registry=CollectorRegistry()):
            client = RpcClient(redis_url, keys, registry=CollectorRegistry(), watch=(gpu_order_method("sim-host"),))
            await client.start()
            try:
                for _ in range(200):
                    if client.server_alive(gpu_order_method("sim-host")):
                        break
                    await asyncio.sleep(0.02)
                result = await client.call(
                    gpu_order_method("sim-host"),
                    ModelOrderV1(action=OrderAction.LOAD, model="coder:7b", reason="test"),
                    timeout=10,
                )
                assert result.ok, result.error
                state = HostStateV1.model_validate_json(await redis.get(keys.fleet_host("sim-host")))  # type: ignore[arg-type]
                assert [m.name for m in state.loaded_models] == ["coder:7b"]
                (gpu,) = state.gpus
                assert (gpu.vendor, gpu.memory_total_bytes, gpu.memory_used_bytes) == ("simulated", 10 * GiB, 5 * GiB)
                result = await client.call(
                    gpu_order_method("sim-host"),
                    ModelOrderV1(action=OrderAction.UNLOAD, model="coder:7b", reason="test"),
                    timeout=10,
                )
                assert result.ok and result.loaded_models == []
                state = HostStateV1.model_validate_json(await redis.get(keys.fleet_host("sim-host")))  # type: ignore[arg-type]
                assert state.loaded_models == [] and state.gpus[0].memory_used_bytes == 0
            finally:
                await client.close()
