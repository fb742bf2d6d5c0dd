"""Turnout's own backend clients (``turnout.common.backends.clients``, used by the profiler
and the gpu-agent) against the simulated fleet, in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from turnout.common.backends.clients import OllamaClient, OpenAICompatClient
from turnout.common.backends.config import BackendConfig, BackendKind
from turnout.common.errors import BackendStatusError
from turnout.common.http import make_session
from turnout.fakefleet.config import FleetConfig
from turnout.fakefleet.server import Fleet

pytestmark = pytest.mark.integration

FLEET_YAML = Path(__file__).resolve().parents[1] / "fixtures" / "fleet" / "test_fleet.yaml"
GiB = 2**30


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    async with Fleet(FleetConfig.load(FLEET_YAML)) as f:
        yield f


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    s = make_session()
    try:
        yield s
    finally:
        await s.close()


async def test_ollama_client_discovers_describes_loads_and_unloads(
    fleet: Fleet, session: aiohttp.ClientSession
) -> None:
    cfg = BackendConfig(name="fleet-ollama", kind=BackendKind.OLLAMA, url=fleet.url("ollama"), exclude=("flaky*",))
    client = OllamaClient(cfg, session)
    models = {m.name: m for m in await client.list_models()}
    assert "flaky:1b" not in models and {"tiny:1b", "vision:7b", "embed:latest"} <= set(models)
    assert models["tiny:1b"].details["parameter_size"] == "1.2B"
    described = await client.describe(models["vision:7b"])
    assert (described.context_length, described.capabilities) == (4096, ("completion", "vision"))
    assert await client.loaded() == []
    await client.preload("coder:7b")
    loaded = await client.loaded()
    assert [(m.name, m.vram_bytes) for m in loaded] == [("coder:7b", 5 * GiB)]
    await client.unload("coder:7b")
    assert await client.loaded() == []
    vectors = await client.embed("embed:latest", ["a", "b"])
    assert len(vectors) == 2 and len(vectors[0]) == 384
    with pytest.raises(BackendStatusError) as err:
        await client.preload("big:14b")  # fine alone ...
        await client.preload("coder:7b")  # ... 8 + 5 GiB does not fit in 10
    assert err.value.status == 500 and b"requires more system memory" in err.value.body


async def test_openai_compat_client_lists_with_context_length_and_embeds(
    fleet: Fleet, session: aiohttp.ClientSession
) -> None:
    cfg = BackendConfig(name="fleet-openai", kind=BackendKind.OPENAI, url=fleet.url("openai"))
    client = OpenAICompatClient(cfg, session)
    models = {m.name: m for m in await client.list_models()}
    assert set(models) == {"Small-Instruct-3B", "Vision-4B", "embed-small"}
    assert models["Small-Instruct-3B"].context_length == 32768
    vectors = await client.embed("embed-small", ["x", "y", "z"])
    assert [len(v) for v in vectors] == [384, 384, 384]
    assert await client.loaded() == []


async def test_zero_delay_streams_send_one_http_chunk_per_token(fleet: Fleet, session: aiohttp.ClientSession) -> None:
    """Real servers flush every token: one SSE event (OpenAI) or NDJSON line (Ollama) per HTTP
    chunk, also at zero delay, so that what relays them is measured per token."""
    openai_body = {"model": "Small-Instruct-3B", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with session.post(f"{fleet.url('openai')}/chat/completions", json=openai_body) as r:
        assert r.status == 200
        chunks = [data async for data, _ in r.content.iter_chunks()]
    events = b"".join(chunks).split(b"\n\n")[:-1]
    # role delta + first token in one write, then a write per token, then finish + [DONE]
    assert len(events) >= 5
    assert len(chunks) == len(events) - 2
    assert all(c.endswith(b"\n\n") for c in chunks)
    ollama_body = {"model": "tiny:1b", "messages": [{"role": "user", "content": "hi"}]}
    async with session.post(f"{fleet.url('ollama')}/api/chat", json=ollama_body) as r:
        assert r.status == 200
        chunks = [data async for data, _ in r.content.iter_chunks()]
    lines = b"".join(chunks).splitlines()
    assert len(lines) >= 3 and len(chunks) == len(lines)
