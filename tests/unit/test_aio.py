"""Ending background tasks: cancellation is the normal end, a crash is logged once with its traceback."""

from __future__ import annotations

import asyncio
import logging

import pytest

from turnout.common.aio import cancel_and_wait, wait_or_cancel
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
