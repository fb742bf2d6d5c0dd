"""The gpu-agent in-process against a real Redis and the simulated fleet's Ollama listener,
with GPUs from a recorded NVML scenario."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from tests.conftest import RUN_DIR
from tests.fixtures.gpu.fake_nvml import FakeNvml
from turnout.common.keys import Keys
from turnout.common.schemas.fleet import HostStateV1
from turnout.devstack.infra import free_port, start_redis
from turnout.fakefleet.config import FleetConfig
from turnout.fakefleet.server import Fleet
from turnout.gpu_agent.app import running_agent
from turnout.gpu_agent.nvml import NvmlReader
from turnout.gpu_agent.settings import GpuAgentSettings

pytestmark = pytest.mark.integration

FLEET_YAML = Path(__file__).resolve().parents[1] / "fixtures" / "fleet" / "test_fleet.yaml"
GiB = 2**30
HOST = "gpu-test-1"
T = TypeVar("T")


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    async with Fleet(FleetConfig.load(FLEET_YAML)) as f:
        yield f


def agent_settings(redis_url: str, key_prefix: str, backends: str, backend: str, **opts: Any) -> GpuAgentSettings:
    return GpuAgentSettings.load(
        redis_url=redis_url,
        key_prefix=key_prefix,
        backends=backends,
        gpu_agent={
            "host": HOST,
            "backend": backend,
            "interval_s": 0.2,
            "ttl_s": 1.0,
            "ops_host": "127.0.0.1",
            "ops_port": 0,
            **opts,
        },
    )


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float = 5.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {probe}")
        await asyncio.sleep(0.05)


async def published(redis: Redis, keys: Keys) -> HostStateV1 | None:
    raw = await redis.get(keys.fleet_host(HOST))
    return HostStateV1.model_validate_json(raw) if raw else None


async def test_agent_publishes_host_state_with_ttl_and_notifies_changes(
    redis: Redis, redis_url: str, keys: Keys, key_prefix: str, fleet: Fleet
) -> None:
    async with httpx.AsyncClient(base_url=fleet.url("ollama")) as http:
        (await http.post("/api/generate", json={"model": "tiny:1b"})).raise_for_status()  # load it
        backends = f"fleet-ollama:ollama={fleet.url('ollama')}"
        settings = agent_settings(redis_url, key_prefix, backends, "fleet-ollama", ttl_s=3.0)
        pubsub = redis.pubsub()
        await pubsub.subscribe(keys.fleet_changed)
        await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
        registry = CollectorRegistry()
        reader = NvmlReader(FakeNvml.named("h100x2"))
        async with running_agent(settings, reader=reader, registry=registry) as running:
            state = await eventually(lambda: published(redis, keys))
            assert (state.host, state.backend, state.backend_url, state.backend_ok, state.gpu_error) == (
                HOST,
                "fleet-ollama",
                fleet.url("ollama"),
                True,
                None,
            )
            assert [(g.index, g.memory_total_bytes, g.memory_free_bytes) for g in state.gpus] == [
                (0, 85520809984, 85516615680),
                (1, 85520809984, 42139410432),
            ]
            assert [(m.name, m.size_bytes, m.vram_bytes) for m in state.loaded_models] == [
                ("tiny:1b", 2 * GiB, 2 * GiB)
            ]
            assert state.loaded_models[0].expires_at is not None
            assert 0 < await redis.pttl(keys.fleet_host(HOST)) <= 3000
            assert await redis.zscore(keys.fleet_hosts, HOST) == pytest.approx(state.ts, abs=2.0)
            note = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2.0)
            assert note is not None and note["data"] == HOST.encode()

            # steady state: the key is refreshed, but no change is announced
            await asyncio.sleep(0.7)
            assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1) is None
            assert (await published(redis, keys)).ts > state.ts  # type: ignore[union-attr]

            # the model goes: the next state says so and is announced
            (await http.post("/api/generate", json={"model": "tiny:1b", "keep_alive": 0})).raise_for_status()

            async def unloaded() -> HostStateV1 | None:
                s = await published(redis, keys)
                return s if s is not None and not s.loaded_models else None

            await eventually(unloaded)
            note = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2.0)
            assert note is not None and note["data"] == HOST.encode()

            ops = f"http://127.0.0.1:{running.ops_port}"
            async with httpx.AsyncClient(base_url=ops) as ops_http:
                assert (await ops_http.get("/ready")).status_code == 200
                assert (await ops_http.get("/state")).json()["host"] == HOST
                metrics = (await ops_http.get("/metrics")).text
            labels = f'gpu="1",host="{HOST}",uuid="GPU-a07c5e3d-12b4-4f9e-8d6c-91e2b3f4a5d6",vendor="nvidia"'
            assert f"turnout_gpu_memory_used_bytes{{{labels}}} 4.3381399552e+10" in metrics
            assert f"turnout_gpu_utilization_ratio{{{labels}}} 0.87" in metrics
            assert 'model="tiny:1b"' not in metrics  # unloaded: its series is gone
            ok = registry.get_sample_value("turnout_gpu_agent_publishes_total", {"outcome": "ok"})
            assert ok is not None and ok >= 3
        await pubsub.aclose()

    # stopped: the key is left to expire (a restart must not make the host flicker out)
    assert await redis.exists(keys.fleet_host(HOST)) == 1

    async def gone() -> bool:
        return await redis.exists(keys.fleet_host(HOST)) == 0

    await eventually(gone, timeout=5.0)
    assert await redis.zscore(keys.fleet_hosts, HOST) is not None  # the host set keeps it a while


async def test_loaded_model_metrics_follow_the_backend(
    redis: Redis, redis_url: str, keys: Keys, key_prefix: str, fleet: Fleet
) -> None:
    settings = agent_settings(redis_url, key_prefix, f"fleet-ollama:ollama={fleet.url('ollama')}", "fleet-ollama")
    registry = CollectorRegistry()
    sample = {"host": HOST, "model": "coder:7b"}
    async with (
        httpx.AsyncClient(base_url=fleet.url("ollama")) as http,
        running_agent(settings, reader=NvmlReader(FakeNvml.named("h100x2")), registry=registry),
    ):
        (await http.post("/api/generate", json={"model": "coder:7b"})).raise_for_status()

        async def gauge() -> float | None:
            return registry.get_sample_value("turnout_gpu_agent_loaded_model_vram_bytes", sample)

        assert await eventually(gauge) == 5 * GiB
        (await http.post("/api/generate", json={"model": "coder:7b", "keep_alive": 0})).raise_for_status()

        async def removed() -> bool:
            return await gauge() is None

        await eventually(removed)


async def test_no_gpu_openai_backend_and_a_backend_that_goes_down(
    redis: Redis, redis_url: str, keys: Keys, key_prefix: str, fleet: Fleet
) -> None:
    settings = agent_settings(redis_url, key_prefix, f"fleet-openai:openai={fleet.url('openai')}", "fleet-openai")
    async with running_agent(settings, reader=NvmlReader(FakeNvml.named("no-driver")), registry=CollectorRegistry()):
        state = await eventually(lambda: published(redis, keys))
        assert (state.gpus, state.gpu_error, state.backend_ok, state.loaded_models) == (
            [],
            "NVML: Driver Not Loaded",
            True,
            [],
        )
        async with httpx.AsyncClient(base_url=fleet.root_url("openai")) as http:
            r = await http.post("/_fleet/fail", json={"listener": "openai", "mode": "500"})
            r.raise_for_status()

        async def down() -> HostStateV1 | None:
            s = await published(redis, keys)
            return s if s is not None and not s.backend_ok else None

        assert (await eventually(down)).backend == "fleet-openai"


async def test_agent_survives_redis_being_away_and_publishes_once_it_is_back(
    key_prefix: str, keys: Keys, fleet: Fleet
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    settings = agent_settings(url, key_prefix, f"fleet-ollama:ollama={fleet.url('ollama')}", "fleet-ollama")
    registry = CollectorRegistry()
    async with running_agent(settings, reader=NvmlReader(FakeNvml.named("h100x2")), registry=registry) as running:

        async def failing() -> bool:
            errors = registry.get_sample_value("turnout_gpu_agent_publishes_total", {"outcome": "error"})
            return errors is not None and errors >= 3

        await eventually(failing)
        assert not running.loop.done()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.ops_port}") as ops:
            assert (await ops.get("/ready")).status_code == 503
            assert (await ops.get("/health")).status_code == 200
        inst = await asyncio.to_thread(start_redis, RUN_DIR, port=port)
        try:
            client = Redis.from_url(url)
            try:
                state = await eventually(lambda: published(client, keys), timeout=10.0)
                assert len(state.gpus) == 2
            finally:
                await client.aclose()
        finally:
            await asyncio.to_thread(inst.stop)


async def test_ready_fails_on_a_gpu_node_that_shows_no_gpu_when_gpus_are_expected(
    redis: Redis, redis_url: str, keys: Keys, key_prefix: str, fleet: Fleet
) -> None:
    """``expect_gpus`` (the chart sets it on GPU nodes): a failed detection takes the pod out of
    readiness, while it still publishes; with the GPUs there it is ready."""
    backends = f"fleet-openai:openai={fleet.url('openai')}"
    for scenario, expect, status in (("no-driver", 1, 503), ("h100x2", 2, 200), ("h100x2", 3, 503)):
        settings = agent_settings(redis_url, key_prefix, backends, "fleet-openai", expect_gpus=expect)
        async with running_agent(
            settings, reader=NvmlReader(FakeNvml.named(scenario)), registry=CollectorRegistry()
        ) as running:
            await eventually(lambda: published(redis, keys))
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.ops_port}") as ops:
                r = await ops.get("/ready")
                assert (scenario, expect, r.status_code, r.json()["checks"]["gpus"]) == (
                    scenario,
                    expect,
                    status,
                    status == 200,
                )
        await redis.delete(keys.fleet_host(HOST))
