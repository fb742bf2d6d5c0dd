"""Workers that never stay dead: a sync and a profiler worker ride out a Redis blip (a private
redis-server stopped for 2 s and started again on the same port) and take jobs afterwards."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from turnout.common.arq import IMPORT_BENCHMARKS_FILE, create_job_pool
from turnout.common.arq_running import run_worker
from turnout.devstack.infra import Instance, start_redis
from turnout.sync.settings import SyncSettings
from turnout.sync.worker import build_worker

RUN_DIR = Path(__file__).resolve().parents[2] / ".run" / "test"


@pytest.fixture
def own_redis() -> Iterator[list[Instance]]:
    started = [start_redis(RUN_DIR, ephemeral=True)]
    try:
        yield started
    finally:
        for inst in started:
            inst.stop()


async def _wait_for(read: object, want: float, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if (read() or 0) >= want:  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"still {read()!r} (wanted {want}) after {timeout}s")  # type: ignore[operator]


async def test_the_sync_worker_survives_a_redis_blip(own_redis: list[Instance], database_url: str) -> None:
    redis = own_redis[0]
    settings = SyncSettings.load(
        redis_url=redis.url,
        database_url=database_url,
        key_prefix=f"sytest-{uuid.uuid4().hex[:8]}",
        sync={"consume_events": False, "benchmarks_at_startup": False, "poll_delay_s": 0.05,
              "public": {"at_startup": False, "on_schedule": False}, "benchmarks_on_schedule": False},
    )  # fmt: skip
    reg = CollectorRegistry()
    worker = build_worker(settings, registry=reg)
    stop = asyncio.Event()
    running = asyncio.create_task(run_worker(worker, stop=stop, service="sync", registry=reg))

    def imports() -> float | None:
        return reg.get_sample_value("turnout_sync_benchmark_imports_total", {"outcome": "skipped"})

    async def enqueue(job_id: str) -> None:
        pool = await create_job_pool(redis.url, settings.keys.sync_queue)
        try:
            await pool.enqueue_job(IMPORT_BENCHMARKS_FILE, _job_id=job_id)
        finally:
            await pool.aclose()

    try:
        await enqueue("before")
        await _wait_for(imports, 1, timeout=10)

        redis.stop()
        await asyncio.sleep(2.0)
        assert not running.done(), "the worker exited while Redis was away"
        own_redis.append(start_redis(RUN_DIR, port=redis.port, ephemeral=True))

        await enqueue("after")
        await _wait_for(imports, 2, timeout=15)
        assert not running.done()
        restarts = reg.get_sample_value("turnout_sync_task_restarts_total", {"task": "arq-worker"})
        assert restarts is not None and restarts >= 1
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=15)
