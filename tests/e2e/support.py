"""Helpers for the end-to-end tests: what the fleet serves, polling, tiny request bodies."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import httpx
import orjson

if TYPE_CHECKING:
    from tests.e2e.conftest import E2E

T = TypeVar("T")

# a 1x1 PNG
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


def request_id() -> str:
    return f"e2e-{uuid.uuid4().hex[:16]}"


def fleet_models(fleet_admin: httpx.Client) -> dict[str, set[str]]:
    """model name -> capabilities, from the simulated fleet's own configuration."""
    config = fleet_admin.get("/_fleet/config").raise_for_status().json()
    return {m["name"]: set(m.get("capabilities", [])) for li in config["listeners"] for m in li["models"]}


def fleet_listener_of(fleet_admin: httpx.Client) -> dict[str, str]:
    """model name -> the listener (backend) that serves it."""
    config = fleet_admin.get("/_fleet/config").raise_for_status().json()
    return {m["name"]: li["name"] for li in config["listeners"] for m in li["models"]}


def eventually(probe: Callable[[], T | None], *, timeout: float = 20.0, interval: float = 0.2, what: str = "") -> T:
    """Call ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or probe} (last: {last!r})")


def assert_openai_error(response: httpx.Response, status: int | tuple[int, ...]) -> dict[str, Any]:
    """The body is OpenAI's error shape; returns its ``error`` object."""
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert {"message", "type", "param", "code"} <= set(error), error
    assert isinstance(error["message"], str) and error["message"]
    return dict(error)


def _fetch_decision(database_url: str, rid: str) -> dict[str, Any] | None:
    async def go() -> dict[str, Any] | None:
        conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://", 1), timeout=5)
        try:
            row = await conn.fetchrow("SELECT * FROM routing_decisions WHERE request_id = $1", rid)
        finally:
            await conn.close()
        if row is None:
            return None
        out = dict(row)
        for k in ("attempts", "candidates", "analysis"):
            if isinstance(out.get(k), str):
                out[k] = orjson.loads(out[k])
        return out

    return asyncio.run(go())


def decision(e2e: E2E, rid: str, timeout: float = 20.0) -> dict[str, Any]:
    """The routing_decisions row of one request, once the sync worker has stored it."""
    return eventually(lambda: _fetch_decision(e2e.database_url, rid), timeout=timeout, what=f"routing decision {rid}")
