"""Ending background tasks: cancellation is the normal end, a crash is logged once with its traceback."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from turnout.common.aio import cancel_and_wait, raise_if_cancelling, wait_or_cancel
from turnout.common.ops import CheckRunner


async def _forever() -> None:
    await asyncio.sleep(3600)


async def _crash() -> None:
    raise KeyError("bug")


async def test_cancel_and_wait_logs_a_crashed_task_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    crashed = asyncio.create_task(_crash(), name="crashy")
    running = asyncio.create_task(_forever(), name="sleepy")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="turnout.common.aio"):
        await cancel_and_wait([crashed, running])
    assert running.cancelled()
    assert [(r.getMessage(), r.exc_info[0] if r.exc_info else None) for r in caplog.records] == [
        ("background task crashy failed", KeyError)
    ]


async def test_wait_or_cancel_lets_a_task_finish_and_cancels_one_that_does_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    quick = asyncio.create_task(asyncio.sleep(0.01, result="done"))
    slow = asyncio.create_task(_forever())
    with caplog.at_level(logging.ERROR, logger="turnout.common.aio"):
        await wait_or_cancel(quick, timeout_s=5)
        await wait_or_cancel(slow, timeout_s=0.01)
    assert quick.result() == "done"
    assert slow.cancelled()
    assert caplog.records == []


async def _drops_one_cancellation(*, checks: bool) -> None:
    """A loop whose first cancellation is lost, as ``asyncio.wait_for`` (redis-py's every command
    write) loses one on Python 3.11 when it meets the awaited result."""
    dropped = False
    while True:
        if checks:
            raise_if_cancelling()
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if dropped:
                raise
            dropped = True


async def test_cancel_and_wait_cancels_again_a_task_whose_cancellation_was_dropped() -> None:
    task = asyncio.create_task(_drops_one_cancellation(checks=False))
    await asyncio.sleep(0.02)
    t0 = time.monotonic()
    async with asyncio.timeout(5):
        await cancel_and_wait([task], grace_s=0.3)
    assert task.cancelled()
    assert 0.3 <= time.monotonic() - t0 < 1.0  # the grace, then the second cancellation ends it


async def test_a_loop_that_calls_raise_if_cancelling_ends_at_once_although_its_cancellation_was_dropped() -> None:
    task = asyncio.create_task(_drops_one_cancellation(checks=True))
    await asyncio.sleep(0.02)
    t0 = time.monotonic()
    async with asyncio.timeout(5):
        await cancel_and_wait([task], grace_s=3.0)
    assert task.cancelled()
    assert time.monotonic() - t0 < 0.5  # its next round, not the 3 s grace


async def test_cancel_and_wait_leaves_a_task_that_will_not_end_and_logs_where_it_is_stuck(
    caplog: pytest.LogCaptureFixture,
) -> None:
    released = asyncio.Event()

    async def stubborn() -> None:
        while not released.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                pass

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    t0 = time.monotonic()
    try:
        with caplog.at_level(logging.ERROR, logger="turnout.common.aio"):
            async with asyncio.timeout(5):
                await cancel_and_wait([task], grace_s=0.2)
        assert 0.4 <= time.monotonic() - t0 < 1.2  # twice the grace, not forever
        assert not task.done()
    finally:
        released.set()
        await task
    [record] = caplog.records
    assert record.getMessage().startswith(
        "background task stubborn still running 0.4s after it was cancelled; not waiting for it:\n"
    )
    assert "in stubborn" in record.getMessage() and "in sleep" in record.getMessage()


async def test_check_runner_logs_each_kind_of_failure_once_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner = CheckRunner(timeout_s=0.05)

    async def down() -> bool:
        raise ConnectionError("refused")

    async def ok() -> bool:
        return True

    async def hangs() -> bool:
        await asyncio.sleep(3600)
        return True

    with caplog.at_level(logging.WARNING, logger="turnout.common.ops"):
        results = [await runner.run("redis", down) for _ in range(3)]
        results += [await runner.run("postgres", ok), await runner.run("scorer", hangs)]
    assert results == [False, False, False, True, False]
    assert [(r.getMessage(), r.exc_info is not None) for r in caplog.records] == [
        ("readiness check redis failed: ConnectionError: refused", True),
        ("readiness check scorer failed: TimeoutError: ", True),
    ]
