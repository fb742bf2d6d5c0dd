"""Stopping the RPC client and server ends every task they started, whenever the stop comes.

redis-py writes each command through ``asyncio.wait_for``, which on Python 3.11 drops a
cancellation that arrives as the write completes (see :mod:`turnout.common.aio`). A heartbeat
loop cancelled then went on beating, and the ``close()``/``serve()`` that waited for it hung
(1 in 60 runs of a link test under CPU load). These tests cancel at every loop-iteration offset
across a few commands of a loop that sends without pause, so the unlucky moment is always among
them."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry

from turnout.common.keys import Keys
from turnout.common.rpc import server as server_module
from turnout.common.rpc.client import RpcClient
from turnout.common.rpc.contract import ROUTE_V1
from turnout.common.rpc.server import RpcContext, RpcServer
from turnout.common.schemas.route import PromptAnalysisV1, RouteReplyV1, RouteRequestV1

pytestmark = pytest.mark.integration

OFFSETS = range(40)
"""Loop iterations between the start and the stop: one ``SMEMBERS`` round trip spans a few."""


async def test_closing_a_client_ends_its_heartbeat_watch_whenever_the_close_comes(redis_url: str, keys: Keys) -> None:
    slow: list[tuple[int, float]] = []
    for offset in OFFSETS:
        # heartbeat_poll_s=0: the watch sends its commands back to back, so a close always lands in one
        c = RpcClient(redis_url, keys, watch=(ROUTE_V1,), heartbeat_poll_s=0, registry=CollectorRegistry())
        await c.start()
        for _ in range(offset):
            await asyncio.sleep(0)
        t0 = time.monotonic()
        async with asyncio.timeout(15):
            await c.close()
        if time.monotonic() - t0 > 1.0:
            slow.append((offset, round(time.monotonic() - t0, 1)))
    assert slow == []  # (offset, seconds) of each close that waited on a task that went on


async def test_stopping_a_server_ends_its_heartbeat_whenever_the_stop_comes(
    redis_url: str, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "HEARTBEAT_EVERY_S", 0)  # beats back to back

    async def handler(req: RouteRequestV1, ctx: RpcContext) -> RouteReplyV1:
        return RouteReplyV1(candidates=[], analysis=PromptAnalysisV1(signals=[req.text]))

    slow: list[tuple[int, float]] = []
    for offset in OFFSETS:
        server = RpcServer(redis_url, keys, replica_id="r", registry=CollectorRegistry())
        server.register(ROUTE_V1, handler)
        task = asyncio.create_task(server.serve())
        while not server.connected:
            await asyncio.sleep(0.005)
        for _ in range(offset):
            await asyncio.sleep(0)
        t0 = time.monotonic()
        async with asyncio.timeout(15):  # a SIGTERM: stop taking work, then cancel what is left
            await server.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if time.monotonic() - t0 > 1.0:
            slow.append((offset, round(time.monotonic() - t0, 1)))
    assert slow == []
