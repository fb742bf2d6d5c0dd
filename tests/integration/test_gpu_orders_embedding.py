"""Preloading an embedding model: the router's order says so, and the agent loads it through
Ollama's embeddings endpoint (the simulated fleet refuses ``/api/generate`` for an embedding
model, as Ollama does; before, such a load failed after the planner had freed memory for it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from turnout.common.backends.clients import OllamaClient
from turnout.common.backends.config import BackendConfig, BackendKind
from turnout.common.keys import Keys
from turnout.common.rpc.client import RpcClient
from turnout.common.rpc.contract import gpu_order_method
from turnout.common.rpc.server import RpcServer
from turnout.common.schemas.vram import OrderAction
from turnout.fakefleet.config import FleetConfig
from turnout.fakefleet.server import Fleet
from turnout.gpu_agent.orders import OrderExecutor
from turnout.scorer.vram import PlannedOrder, VramOptions
from turnout.scorer.vram_actions import VramActions, recent_actions

pytestmark = pytest.mark.integration

FLEET_YAML = Path(__file__).resolve().parents[1] / "fixtures" / "fleet" / "test_fleet.yaml"
MiB = 1024**2


@pytest.fixture
async def ollama_url() -> AsyncIterator[str]:
    async with Fleet(FleetConfig.load(FLEET_YAML)) as fleet:
        yield fleet.url("ollama")


@pytest.fixture
async def actions(redis_url: str, redis: Redis, keys: Keys, ollama_url: str) -> AsyncIterator[VramActions]:
    async with aiohttp.ClientSession() as session:
        backend = OllamaClient(BackendConfig(name="sim", kind=BackendKind.OLLAMA, url=ollama_url), session)
        server = RpcServer(redis_url, keys, replica_id="agent-sim", registry=CollectorRegistry())
        OrderExecutor(backend, "sim", poll_s=0.01).register(server)
        client = RpcClient(redis_url, keys, registry=CollectorRegistry(), watch=(gpu_order_method("sim"),))
        task = asyncio.create_task(server.serve())
        await client.start()
        try:
            for _ in range(500):
                if client.server_alive(gpu_order_method("sim")):
                    break
                await asyncio.sleep(0.01)
            yield VramActions(redis, keys, client, replica="scorer-1", opts=VramOptions(order_timeout_s=5))
        finally:
            await client.close()
            await server.stop()
            await asyncio.wait_for(task, timeout=10)


async def loaded(url: str) -> list[str]:
    async with aiohttp.ClientSession() as s, s.get(f"{url}/api/ps") as r:
        return [m["name"] for m in (await r.json())["models"]]


async def test_an_embedding_model_is_preloaded_through_the_embeddings_endpoint(
    actions: VramActions, ollama_url: str, redis: Redis, keys: Keys
) -> None:
    load = PlannedOrder(OrderAction.LOAD, "sim", "embed:latest", 512 * MiB, "embedding request", embedding=True)
    run = await actions.execute("sim", [load])
    assert run.completed, [a.error for a in run.actions]
    assert await loaded(ollama_url) == ["embed:latest"]
    [logged] = await recent_actions(redis, keys)
    assert (logged.action, logged.model, logged.ok, logged.error) == (OrderAction.LOAD, "embed:latest", True, None)


async def test_through_the_generate_endpoint_ollama_refuses_it(actions: VramActions, ollama_url: str) -> None:
    load = PlannedOrder(OrderAction.LOAD, "sim", "embed:latest", 512 * MiB, "as before the fix")
    run = await actions.execute("sim", [load])
    assert not run.completed
    assert run.actions[0].error == f"BackendStatusError: sim: POST {ollama_url}/api/generate -> HTTP 400"
    assert await loaded(ollama_url) == []
