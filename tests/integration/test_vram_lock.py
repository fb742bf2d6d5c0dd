"""The per-host VRAM lock and action log over a real Redis: two scorer replicas executing
orders for one host serialise; a lock is only released by its holder; it expires if the holder
dies; every order is recorded, newest first, capped."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from turnout.common.keys import Keys
from turnout.common.rpc.contract import RpcMethod
from turnout.common.schemas.vram import ModelOrderV1, OrderAction, OrderResultV1
from turnout.common.vram_lock import HostLock, pending_loads
from turnout.scorer.vram import PlannedOrder, VramOptions
from turnout.scorer.vram_actions import VramActions, recent_actions

pytestmark = pytest.mark.integration


class SlowAgent:
    """Answers orders after ``delay`` and logs when each started and ended."""

    def __init__(self, delay: float = 0.1, fail: set[str] | None = None) -> None:
        self.delay = delay
        self.fail = fail or set()
        self.spans: list[tuple[str, float, float]] = []

    async def call(
        self, method: RpcMethod[ModelOrderV1, OrderResultV1], body: ModelOrderV1, *, timeout: float
    ) -> OrderResultV1:
        t0 = time.monotonic()
        await asyncio.sleep(self.delay)
        self.spans.append((f"{method.name}:{body.action.value}:{body.model}", t0, time.monotonic()))
        ok = body.model not in self.fail
        return OrderResultV1(ok=ok, host=method.name.rsplit(".", 1)[-1], action=body.action, model=body.model,
                             error=None if ok else "backend said no")  # fmt: skip


def orders(host: str, *models: str) -> list[PlannedOrder]:
    *unloads, load = models
    return [PlannedOrder(OrderAction.UNLOAD, host, m, 4 << 30, f"make room for {load}") for m in unloads] + [
        PlannedOrder(OrderAction.LOAD, host, load, 8 << 30, "best candidate")
    ]


async def test_two_replicas_ordering_the_same_host_serialise(redis: Redis, keys: Keys) -> None:
    agent = SlowAgent(delay=0.05)
    opts = VramOptions(lock_wait_s=5.0, lock_ttl_s=5.0)
    a = VramActions(redis, keys, agent, replica="scorer-a", opts=opts)
    b = VramActions(redis, keys, agent, replica="scorer-b", opts=opts)
    ra, rb = await asyncio.gather(
        a.execute("gpu1", orders("gpu1", "old1", "new1")), b.execute("gpu1", orders("gpu1", "old2", "new2"))
    )
    assert ra.locked and rb.locked and ra.completed and rb.completed
    # the two sequences did not interleave: all of one, then all of the other
    labels = [s[0].removeprefix("gpu.order.gpu1:") for s in sorted(agent.spans, key=lambda s: s[1])]
    assert labels in (
        ["unload:old1", "load:new1", "unload:old2", "load:new2"],
        ["unload:old2", "load:new2", "unload:old1", "load:new1"],
    )
    spans = sorted(agent.spans, key=lambda s: s[1])
    assert all(spans[i][2] <= spans[i + 1][1] for i in range(len(spans) - 1)), "orders overlapped"
    assert await redis.get(keys.vram_lock("gpu1")) is None


async def test_different_hosts_do_not_wait_for_each_other(redis: Redis, keys: Keys) -> None:
    agent = SlowAgent(delay=0.2)
    act = VramActions(redis, keys, agent, replica="s", opts=VramOptions(lock_wait_s=0.0))
    t0 = time.monotonic()
    r1, r2 = await asyncio.gather(act.execute("h1", orders("h1", "m")), act.execute("h2", orders("h2", "m")))
    assert r1.completed and r2.completed
    assert time.monotonic() - t0 < 0.35


async def test_a_replica_that_cannot_get_the_lock_in_time_gives_up_without_orders(redis: Redis, keys: Keys) -> None:
    holder = HostLock(redis, keys.vram_lock("gpu1"), ttl_s=10)
    assert await holder.acquire()
    agent = SlowAgent()
    run = await VramActions(redis, keys, agent, replica="s", opts=VramOptions(lock_wait_s=0.1)).execute(
        "gpu1", orders("gpu1", "x", "y")
    )
    assert (run.locked, run.completed, run.actions, agent.spans) == (False, False, [], [])
    assert await holder.release()


async def test_lock_is_released_only_by_its_holder_and_expires(redis: Redis, keys: Keys) -> None:
    key = keys.vram_lock("gpu9")
    first = HostLock(redis, key, ttl_s=0.2)
    second = HostLock(redis, key, ttl_s=5)
    assert await first.acquire()
    assert not await second.acquire()
    assert 0 < await redis.pttl(key) <= 200
    await asyncio.sleep(0.3)  # the first holder "died": its lock expired
    assert await second.acquire(wait_s=0.5)
    assert not await first.release(), "a stale holder must not free the new holder's lock"
    assert await redis.get(key) == second.token.encode()
    assert await second.release()
    assert await redis.get(key) is None


async def test_a_held_lock_is_kept_alive_during_a_long_order(redis: Redis, keys: Keys) -> None:
    lock = HostLock(redis, keys.vram_lock("slow"), ttl_s=0.15)
    async with lock.held() as got:
        assert got
        await asyncio.sleep(0.4)  # longer than the TTL: the keeper extends it
        assert await redis.get(lock.key) == lock.token.encode()
    assert await redis.get(lock.key) is None


async def test_each_order_is_recorded_newest_first_and_the_log_is_capped(redis: Redis, keys: Keys) -> None:
    agent = SlowAgent(delay=0.0)
    act = VramActions(redis, keys, agent, replica="scorer-x", opts=VramOptions(actions_kept=3))
    await act.execute("gpu1", orders("gpu1", "a", "b"))
    await act.execute("gpu1", orders("gpu1", "c", "d"))
    log = await recent_actions(redis, keys)
    assert [(x.action, x.model, x.ok, x.requested_by) for x in log] == [
        (OrderAction.LOAD, "d", True, "scorer-x"),
        (OrderAction.UNLOAD, "c", True, "scorer-x"),
        (OrderAction.LOAD, "b", True, "scorer-x"),
    ]
    assert log[1].reason == "make room for d" and log[1].freed_bytes == 4 << 30
    assert log[0].needed_bytes == 8 << 30


async def test_a_failed_unload_abandons_the_load(redis: Redis, keys: Keys) -> None:
    agent = SlowAgent(delay=0.0, fail={"stuck"})
    run = await VramActions(redis, keys, agent, replica="s", opts=VramOptions()).execute(
        "gpu1", orders("gpu1", "stuck", "other", "big")
    )
    assert (run.completed, [(a.model, a.ok, a.error) for a in run.actions]) == (
        False,
        [("stuck", False, "backend said no")],
    )
    assert await pending_loads(redis, keys, "gpu1") == {}


async def test_a_model_that_became_busy_is_not_unloaded(redis: Redis, keys: Keys) -> None:
    async def busy(host: str, model: str) -> bool:
        return model == "serving"

    agent = SlowAgent(delay=0.0)
    run = await VramActions(redis, keys, agent, replica="s", opts=VramOptions(), busy=busy).execute(
        "gpu1", orders("gpu1", "serving", "big")
    )
    assert [(a.model, a.ok, a.error) for a in run.actions] == [
        ("serving", False, "skipped: the model is serving a request")
    ]
    assert agent.spans == []


async def test_a_load_is_pending_while_it_runs_and_until_it_expires(redis: Redis, keys: Keys) -> None:
    act = VramActions(redis, keys, SlowAgent(delay=0.3), replica="s", opts=VramOptions())
    run = asyncio.create_task(act.execute("gpu1", orders("gpu1", "big")))
    await asyncio.sleep(0.1)
    assert await pending_loads(redis, keys, "gpu1") == {"big": 8 << 30}
    assert (await run).completed
    assert await pending_loads(redis, keys, "gpu1") == {}, "a load the agent confirmed is no longer pending"
    await act.reserve("gpu1", "other", 1 << 30, ttl_s=60)
    assert await pending_loads(redis, keys, "gpu1") == {"other": 1 << 30}
    assert await pending_loads(redis, keys, "gpu1", now=time.time() + 3600) == {}


async def test_the_profiler_holds_the_host_lock_and_reserves_the_bytes_while_it_loads(redis, keys):
    from turnout.profiler.errors import ProfilingFailed
    from turnout.profiler.profiling import ProfileTarget, ProfilingOptions, loading_on_host

    target = ProfileTarget(
        model_id=1, model="m:7b", backend="b", host="gpu9", upstream="m:7b", digest=None,
        size_bytes=5 << 30, params_b=7.0, context_length=None, reason="new",
    )  # fmt: skip
    opts = ProfilingOptions(vram_lock_wait_s=0.1)
    async with loading_on_host(redis, keys, target, opts):
        assert await redis.exists(keys.vram_lock("gpu9"))
        assert not await HostLock(redis, keys.vram_lock("gpu9"), ttl_s=5).acquire(0.05)  # the planner waits
        assert await pending_loads(redis, keys, "gpu9") == {"m:7b": 5 << 30}  # and counts the load
    assert not await redis.exists(keys.vram_lock("gpu9"))

    planner = HostLock(redis, keys.vram_lock("gpu9"), ttl_s=5)
    assert await planner.acquire()
    with pytest.raises(ProfilingFailed, match="VRAM lock of host gpu9"):
        async with loading_on_host(redis, keys, target, opts):
            pytest.fail("loaded while the planner held the host")
    await planner.release()


async def test_every_recorded_order_is_counted_by_action_and_outcome(redis: Redis, keys: Keys) -> None:
    from prometheus_client import CollectorRegistry

    from turnout.scorer.metrics import ScorerMetrics

    metrics = ScorerMetrics.create(CollectorRegistry())

    async def busy(host: str, model: str) -> bool:
        return model == "serving"

    def count(action: str, outcome: str) -> float:
        return metrics.vram_orders.labels(action, outcome)._value.get()

    act = VramActions(
        redis, keys, SlowAgent(delay=0.0, fail={"stuck"}), replica="s", opts=VramOptions(), busy=busy,
        counter=metrics.vram_orders,
    )  # fmt: skip
    await act.execute("gpu1", orders("gpu1", "idle", "big"))  # unload ok, load ok
    await act.execute("gpu1", orders("gpu1", "serving", "big"))  # unload skipped: busy
    await act.execute("gpu1", orders("gpu1", "stuck", "big"))  # unload failed
    assert (count("unload", "ok"), count("load", "ok")) == (1, 1)
    assert (count("unload", "skipped"), count("unload", "failed"), count("load", "failed")) == (1, 1, 0)
