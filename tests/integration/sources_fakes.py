"""A loopback server for the benchmark-source tests (no tests here).

It serves the fixtures under ``tests/fixtures/sources`` in the real services' formats:

* ``GET /rows?dataset=&config=&split=&offset=&length=`` — the Hugging Face dataset viewer
  (``open-llm-leaderboard/contents`` and ``lmarena-ai/leaderboard-dataset``), paged for real;
* ``GET /api/v2/data/llms/models`` — Artificial Analysis (wants ``x-api-key: test-key``);
* ``GET /api/v1/models`` — OpenRouter.

Failures are injected per test: ``fail`` (statuses answered before the real response, e.g.
``[429, 503]``), ``delay_s`` (sleep before answering), ``body`` (a raw body instead of JSON).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sources"
API_KEY = "test-key"

DATASETS = {
    ("open-llm-leaderboard/contents", "default", "train"): "hf_leaderboard_contents.json",
    ("lmarena-ai/leaderboard-dataset", "text", "latest"): "lmarena_text_latest.json",
}


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@dataclass
class SourcesServer:
    url: str = ""
    fail: list[int] = field(default_factory=list)
    retry_after: str | None = None
    delay_s: float = 0.0
    body: bytes | None = None
    requests: list[web.Request] = field(default_factory=list)

    async def _gate(self, request: web.Request) -> web.Response | None:
        self.requests.append(request)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail:
            status = self.fail.pop(0)
            headers = {"retry-after": self.retry_after} if self.retry_after else {}
            return web.json_response({"error": f"injected {status}"}, status=status, headers=headers)
        if self.body is not None:
            return web.Response(body=self.body, content_type="application/json")
        return None

    async def rows(self, request: web.Request) -> web.Response:
        early = await self._gate(request)
        if early is not None:
            return early
        q = request.query
        name = DATASETS.get((q.get("dataset", ""), q.get("config", ""), q.get("split", "")))
        if name is None:
            return web.json_response({"error": "The dataset does not exist on the Hub."}, status=404)
        offset, length = int(q.get("offset", 0)), int(q.get("length", 100))
        if length > 100:
            return web.json_response({"error": "Parameter 'length' must not be greater than 100"}, status=422)
        data = load(name)
        page = data[offset : offset + length]
        features = [
            {"feature_idx": i, "name": k, "type": {"dtype": "string", "_type": "Value"}} for i, k in enumerate(data[0])
        ]
        return web.json_response(
            {
                "features": features,
                "rows": [{"row_idx": offset + i, "row": r, "truncated_cells": []} for i, r in enumerate(page)],
                "num_rows_total": len(data),
                "num_rows_per_page": 100,
                "partial": False,
            }
        )

    async def artificial_analysis(self, request: web.Request) -> web.Response:
        early = await self._gate(request)
        if early is not None:
            return early
        if request.headers.get("x-api-key") != API_KEY:
            return web.json_response({"error": "Invalid API key"}, status=401)
        return web.json_response(load("artificial_analysis_llms_models.json"))

    async def openrouter(self, request: web.Request) -> web.Response:
        early = await self._gate(request)
        if early is not None:
            return early
        return web.json_response(load("openrouter_models.json"))


@pytest.fixture(name="sources_server")
async def sources_server_fixture() -> AsyncIterator[SourcesServer]:
    """Import this into a test module (``from .sources_fakes import sources_server_fixture``)."""
    server = SourcesServer()
    app = web.Application()
    app.router.add_get("/rows", server.rows)
    app.router.add_get("/api/v2/data/llms/models", server.artificial_analysis)
    app.router.add_get("/api/v1/models", server.openrouter)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()
