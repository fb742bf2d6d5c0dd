"""SIGTERM to a real ``python -m turnout.gateway``: /ready turns 503 at once, new requests are still
served during the pre-stop delay, a stream that ends within the grace completes, and one still open
when the grace runs out ends with an error event and is recorded as ``shutdown``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import base_env
from tests.integration import test_gateway_fakes as fakes
from tests.integration.test_gateway_fakes import Fleet, catalog_model, snapshot
from tests.integration.test_gateway_resilience import wait_events
from turnout.devstack.infra import free_port

pytestmark = pytest.mark.integration

fleet = fakes.fleet

PRESTOP_S = 1.0
GRACE_S = 2.5


async def _start(env: dict[str, str], port: int, log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as out:  # the child keeps its own descriptor
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "turnout.gateway", env=env, stdout=out, stderr=asyncio.subprocess.STDOUT
        )
    async with httpx.AsyncClient() as http:
        for _ in range(1200):  # a cold start on a loaded 2-core box can take seconds
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                    return proc
            if proc.returncode is not None:
                raise AssertionError(f"gateway exited with {proc.returncode}")
            await asyncio.sleep(0.05)
    proc.kill()
    raise AssertionError("gateway did not start:\n" + log.read_text()[-2000:])


async def test_sigterm_drains_streams_and_ends_the_rest_with_an_error_event(
    redis, redis_url, database_url, key_prefix, keys, fleet: Fleet, tmp_path: Path
):
    fleet.alpha.mode = "hang"  # a stream that never ends
    fleet.beta.mode = "drip"  # a stream that takes 1.5 s
    await redis.set(
        keys.catalog_snapshot,
        snapshot(catalog_model("endless", "alpha", "up", 8), catalog_model("finite", "beta", "up", 8)),
    )
    port = free_port()
    env = {
        **base_env(redis_url, database_url, key_prefix),
        "TURNOUT_BACKENDS": orjson.dumps(fleet.backends()).decode(),
        "TURNOUT_GATEWAY__PORT": str(port),
        "TURNOUT_GATEWAY__SCHEMA_WAIT_S": "0",
        "TURNOUT_GATEWAY__ROUTE_TIMEOUT_S": "0.05",
        "TURNOUT_GATEWAY__PRESTOP_DELAY_S": str(PRESTOP_S),
        "TURNOUT_GATEWAY__DRAIN_GRACE_S": str(GRACE_S),
        "TURNOUT_GATEWAY__INFLIGHT_PUBLISH_S": "0.05",
    }
    proc = await _start(env, port, tmp_path / "gateway.log")
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=15) as http:

            async def stream(model: str) -> tuple[list[str], float]:
                lines = []
                async with http.stream(
                    "POST",
                    "/v1/chat/completions",
                    json={"model": model, "stream": True, "messages": [{"role": "user", "content": "x"}]},
                ) as r:
                    async for line in r.aiter_lines():
                        if line:
                            lines.append(line)
                return lines, time.monotonic()

            endless = asyncio.ensure_future(stream("endless"))
            await asyncio.sleep(0.5)  # the endless stream has its first chunk
            finite = asyncio.ensure_future(stream("finite"))
            await asyncio.sleep(0.1)
            sigterm_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.1)
            ready = await http.get("/ready")
            served = await http.post(
                "/v1/chat/completions", json={"model": "finite", "messages": [{"role": "user", "content": "x"}]}
            )
            finite_lines, _ = await finite
            endless_lines, endless_end = await endless
            code = await asyncio.wait_for(proc.wait(), timeout=15)
            gone_at = time.monotonic()
        events = await wait_events(redis, keys, 3)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert (ready.status_code, ready.json()["status"]) == (503, "draining")
    assert served.status_code == 200  # within the pre-stop delay: still served
    assert finite_lines[-1] == "data: [DONE]"  # finished within the grace
    last = orjson.loads(endless_lines[-1].removeprefix("data: "))
    assert last == {
        "error": {
            "message": "the gateway is shutting down; retry the request",
            "type": "service_unavailable",
            "param": None,
            "code": "shutdown",
        }
    }
    assert PRESTOP_S + GRACE_S - 0.3 < endless_end - sigterm_at < PRESTOP_S + GRACE_S + 1.5
    assert code == 0 and gone_at - sigterm_at < PRESTOP_S + GRACE_S + 5
    by_model = {e.model: (e.status, e.outcome) for e in events if e.stream}
    assert by_model == {"endless": (200, "shutdown"), "finite": (200, "ok")}
    assert os.environ.get("TURNOUT_GATEWAY__PORT") != str(port)  # nothing leaked into this process
