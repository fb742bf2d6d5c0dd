"""Supervised background tasks: a crash is logged once with its traceback, counted, restarted
with back-off, and visible in the state that ``/ready`` bodies show."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from prometheus_client import CollectorRegistry

from turnout.common.supervise import Supervisor


async def test_a_crashing_loop_is_restarted_counted_and_logged_once_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    sup = Supervisor("scorer", registry, backoff_base_s=0.01, backoff_max_s=0.02)
    runs = 0
    healthy = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise RuntimeError("boom")
        healthy.set()
        await asyncio.Event().wait()  # then runs for good

    with caplog.at_level(logging.WARNING, logger="turnout.common.supervise"):
        sup.start("fleet-loop", flaky)
        await asyncio.wait_for(healthy.wait(), timeout=5)
        await asyncio.sleep(0)
        state = sup.state()
        await sup.stop()
    assert runs == 4
    assert state == {"fleet-loop": {"running": True, "restarts": 3, "last_error": "RuntimeError: boom"}}
    assert registry.get_sample_value("turnout_scorer_task_restarts_total", {"task": "fleet-loop"}) == 3
    with_traceback = [r for r in caplog.records if r.exc_info]
    assert [r.getMessage() for r in with_traceback] == ["background task fleet-loop crashed; restarting it"]
    assert sum("crashed again" in r.getMessage() for r in caplog.records) == 2


async def test_a_task_that_returns_is_done_not_restarted_and_the_series_starts_at_zero() -> None:
    registry = CollectorRegistry()
    sup = Supervisor("gpu-agent", registry)

    async def once() -> None:
        return None

    task = sup.start("agent-loop", once)
    await task
    assert sup.state() == {"agent-loop": {"running": False, "restarts": 0, "last_error": None}}
    assert sup.healthy() is True
    assert registry.get_sample_value("turnout_gpu_agent_task_restarts_total", {"task": "agent-loop"}) == 0
    await sup.stop()


async def test_a_loop_waiting_to_restart_is_not_healthy() -> None:
    sup = Supervisor("sync", CollectorRegistry(), backoff_base_s=5.0, backoff_max_s=5.0)

    async def broken() -> None:
        raise ConnectionError("redis away")

    sup.start("event-consumer", broken)
    await asyncio.sleep(0.05)
    assert sup.healthy() is False
    assert sup.state()["event-consumer"] == {
        "running": False,
        "restarts": 1,
        "last_error": "ConnectionError: redis away",
    }
    await sup.stop()


async def test_a_task_asked_to_stop_is_not_restarted_even_when_its_cancellation_was_lost() -> None:
    sup = Supervisor("scorer", CollectorRegistry(), backoff_base_s=0.01, backoff_max_s=0.02)
    runs = 0
    running = asyncio.Event()

    async def loses_the_cancellation() -> None:
        nonlocal runs
        runs += 1
        running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:  # what asyncio.wait_for does on 3.11 when it meets a result
            pass
        raise ConnectionError("redis away")  # and the loop then failed on its own

    sup.start("fleet-loop", loses_the_cancellation)
    await asyncio.wait_for(running.wait(), timeout=5)
    t0 = time.monotonic()
    async with asyncio.timeout(5):
        await sup.stop(grace_s=3.0)
    assert time.monotonic() - t0 < 0.5  # ended at once, not restarted to be cancelled again
    assert runs == 1
