"""Closing an arq worker while a job is past its own function (in ``on_job_end``, or writing its
result) — the window a SIGTERM or a lost Redis can land in. arq's ``close()`` gathers the running
jobs without ``return_exceptions``: such a job, cancelled there, made it raise ``CancelledError``
before ``on_shutdown`` and the pool's close. :func:`close_worker` ends cleanly instead."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from arq import Worker
from arq.worker import func

from turnout.common.arq import create_job_pool, dumps, loads
from turnout.common.arq_running import close_worker

pytestmark = pytest.mark.integration


async def test_a_job_cancelled_in_its_finishing_step_does_not_stop_the_close(redis_url: str, key_prefix: str) -> None:
    queue = f"{key_prefix}:arq-close"
    ending, shut = asyncio.Event(), asyncio.Event()

    async def job(ctx: dict[str, Any]) -> int:
        return 1

    async def on_job_end(ctx: dict[str, Any]) -> None:
        ending.set()
        await asyncio.Event().wait()  # held here until the close cancels it

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        shut.set()

    pool = await create_job_pool(redis_url, queue)
    worker = Worker(
        functions=[func(job, name="job")],
        redis_pool=pool,
        queue_name=queue,
        handle_signals=False,
        poll_delay=0.05,
        on_job_end=on_job_end,
        on_shutdown=on_shutdown,
        job_serializer=dumps,
        job_deserializer=loads,
    )
    running = asyncio.create_task(worker.async_run())
    try:
        await pool.enqueue_job("job", _job_id="held")
        async with asyncio.timeout(10):
            await ending.wait()
        async with asyncio.timeout(10):
            await close_worker(worker)  # arq's close() alone raises CancelledError here
        assert shut.is_set()  # on_shutdown ran
        assert worker.tasks == {}
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await pool.delete(*[k async for k in pool.scan_iter(f"{key_prefix}*")] or ["-"])
        await pool.aclose()
