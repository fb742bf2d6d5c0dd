"""``GET /admin/vram`` on a real gateway: hosts, GPUs, loaded models with pinned/busy flags,
budgets, policy and the action log, all read from Redis; the admin key guards it when set."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
from redis.asyncio import Redis

from tests.integration import test_gateway_fakes as fakes
from tests.integration.test_gateway_fakes import run_gateway
from turnout.common.keys import Keys
from turnout.common.schemas.fleet import GpuStateV1, HostStateV1, LoadedModelV1
from turnout.common.schemas.vram import HostBudgetV1, OrderAction, VramActionV1, VramStatusV1
from turnout.gateway.settings import GatewayOptions, GatewaySettings

pytestmark = pytest.mark.integration

fleet = fakes.fleet
make_settings = fakes.make_settings
GiB = 1024**3


async def seed(redis: Redis, keys: Keys) -> None:
    state = HostStateV1(
        host="gpu1",
        agent_version="0.1.0",
        backend="olla",
        backend_url="http://127.0.0.1:11434",
        gpus=[GpuStateV1(index=0, uuid="GPU-1", name="NVIDIA L4", memory_total_bytes=24 * GiB,
                         memory_used_bytes=14 * GiB, memory_free_bytes=10 * GiB)],
        loaded_models=[LoadedModelV1(name="llama3.1:8b", size_bytes=6 * GiB, vram_bytes=6 * GiB),
                       LoadedModelV1(name="qwen2.5:14b", size_bytes=8 * GiB, vram_bytes=8 * GiB)],
        ts=time.time(),
    )  # fmt: skip
    await redis.set(keys.fleet_host("gpu1"), state.model_dump_json())
    await redis.zadd(keys.fleet_hosts, {"gpu1": time.time()})
    status = VramStatusV1(
        ts=time.time(),
        replica="scorer-a",
        score_margin=0.15,
        pinned={"gpu1": ["llama3.1:8b"]},
        hosts=[HostBudgetV1(host="gpu1", budget_bytes=int(21.6 * GiB), used_bytes=14 * GiB,
                            available_bytes=int(7.6 * GiB), pinned=["llama3.1:8b"], busy=["qwen2.5:14b"],
                            last_used={"qwen2.5:14b": 1700000000.0})],
        decisions={"resident": 3, "evict": 1},
    )  # fmt: skip
    await redis.set(keys.vram_status, status.model_dump_json())
    for i, (action, model) in enumerate([(OrderAction.UNLOAD, "phi3:mini"), (OrderAction.LOAD, "qwen2.5:14b")]):
        act = VramActionV1(ts=1700000000.0 + i, host="gpu1", action=action, model=model, reason=f"why {i}", ok=True)
        await redis.lpush(keys.vram_actions, act.model_dump_json())  # type: ignore[misc]


async def test_admin_vram_shows_hosts_budgets_pinned_and_actions(
    redis: Redis, keys: Keys, make_settings: Callable[..., GatewaySettings]
) -> None:
    await seed(redis, keys)
    async with run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        body = (await http.get("/admin/vram")).json()
        limited = (await http.get("/admin/vram", params={"actions": 1})).json()
    (host,) = body["hosts"]
    assert (host["host"], host["backend"], host["managed"], host["budget_bytes"]) == (
        "gpu1",
        "olla",
        True,
        int(21.6 * GiB),
    )
    assert host["gpus"][0]["name"] == "NVIDIA L4" and host["memory_free_bytes"] == 10 * GiB
    assert [(m["name"], m["pinned"], m["busy"], m["last_used"]) for m in host["loaded_models"]] == [
        ("llama3.1:8b", True, False, None),
        ("qwen2.5:14b", False, True, 1700000000.0),
    ]
    assert body["policy"]["pinned"] == {"gpu1": ["llama3.1:8b"]} and body["policy"]["reported_by"] == "scorer-a"
    assert body["decisions"] == {"resident": 3, "evict": 1}
    assert [(a["action"], a["model"], a["reason"]) for a in body["actions"]] == [
        ("load", "qwen2.5:14b", "why 1"),
        ("unload", "phi3:mini", "why 0"),
    ]
    assert len(limited["actions"]) == 1


async def test_admin_vram_needs_the_admin_key_when_one_is_set(
    redis_url: str, database_url: str, key_prefix: str, fleet: fakes.Fleet
) -> None:
    settings = GatewaySettings.load(
        environment="test", redis_url=redis_url, database_url=database_url, key_prefix=key_prefix,
        backends=fleet.backends(), admin_key="adm-123", gateway=GatewayOptions(route_timeout_s=1.0),
    )  # fmt: skip
    async with run_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        anonymous = await http.get("/admin/vram")
        wrong = await http.get("/admin/vram", headers={"authorization": "Bearer nope"})
        right = await http.get("/admin/vram", headers={"authorization": "Bearer adm-123"})
    assert anonymous.status_code == wrong.status_code == 401
    assert anonymous.json()["error"]["message"].startswith("This endpoint needs the admin key")
    assert right.status_code == 200 and right.json()["hosts"] == []
