"""The OpenRouter model-list source against a loopback server speaking its /api/v1/models."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from turnout.sync.errors import SourceUnavailable
from turnout.sync.sources import OpenRouterOptions, OpenRouterSource, SourceFormatError
from turnout.sync.sources.openrouter import context_score, price_score

from .sources_fakes import SourcesServer, sources_server_fixture  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def source(server: SourcesServer, **kw: object) -> OpenRouterSource:
    opts = {"url": f"{server.url}/api/v1/models", "backoff_initial_s": 0.01, "backoff_max_s": 0.05, **kw}
    return OpenRouterSource(OpenRouterOptions.model_validate(opts))


async def test_context_prices_and_modalities(sources_server: SourcesServer, http: aiohttp.ClientSession) -> None:
    run = await source(sources_server).fetch(http)
    by = {(r.raw_model, r.metric): r for r in run.rows}
    ctx = by[("meta-llama/llama-3.1-8b-instruct", "context_length")]
    assert (ctx.raw_value, ctx.kind) == (131072, "context")
    assert ctx.score == pytest.approx(context_score(131072))
    assert ctx.aliases == ("meta-llama/Meta-Llama-3.1-8B-Instruct", "Meta: Llama 3.1 8B Instruct")
    price = by[("meta-llama/llama-3.1-8b-instruct", "price_completion_usd_per_mtok")]
    assert (price.raw_value, price.kind) == (0.03, "price")
    assert price.score == pytest.approx(1 / 1.03)
    free = by[("meta-llama/llama-3.1-8b-instruct:free", "price_prompt_usd_per_mtok")]
    assert free.score == 1.0
    vl = by[("qwen/qwen2.5-vl-72b-instruct", "context_length")]
    assert vl.details["input_modalities"] == ["text", "image"]
    assert "tools" in vl.details["supported_parameters"]
    gpt = by[("openai/gpt-4o", "price_prompt_usd_per_mtok")]
    assert gpt.raw_value == 2.5 and gpt.aliases == ("OpenAI: GPT-4o",)


async def test_variable_pricing_and_malformed_entries(
    sources_server: SourcesServer, http: aiohttp.ClientSession
) -> None:
    run = await source(sources_server).fetch(http)
    auto = {r.metric for r in run.rows if r.raw_model == "openrouter/auto"}
    assert auto == {"context_length"}  # -1 prices mean "variable": skipped, not stored
    assert run.skipped == 2  # no id; neither a context length nor a price
    assert "weird/model" not in {r.raw_model for r in run.rows}


def test_normalisation_curves() -> None:
    assert context_score(2048) == 0.0
    assert context_score(1048576) == 1.0
    assert context_score(4_000_000) == 1.0
    assert 0.4 < context_score(32768) < 0.5
    assert price_score(0) == 1.0 and price_score(1.0) == 0.5


async def test_errors(sources_server: SourcesServer, http: aiohttp.ClientSession) -> None:
    sources_server.fail = [500, 500]
    assert (await source(sources_server).fetch(http)).rows
    sources_server.fail = [500] * 3
    with pytest.raises(SourceUnavailable):
        await source(sources_server, max_attempts=3).fetch(http)
    sources_server.body = b'{"data": {}}'
    with pytest.raises(SourceFormatError):
        await source(sources_server).fetch(http)
