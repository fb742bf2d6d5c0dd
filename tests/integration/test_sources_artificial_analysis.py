"""The Artificial Analysis source against a loopback server speaking its API (key in x-api-key)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from turnout.sync.errors import SourceUnavailable
from turnout.sync.sources import (
    ArtificialAnalysisOptions,
    ArtificialAnalysisSource,
    BenchmarkSourcesOptions,
    SourceAuthError,
    SourceFormatError,
    build_sources,
)

from .sources_fakes import API_KEY, SourcesServer, sources_server_fixture  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def source(server: SourcesServer, key: str | None = API_KEY, **kw: object) -> ArtificialAnalysisSource:
    opts = {
        "url": f"{server.url}/api/v2/data/llms/models",
        "api_key": key,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
        **kw,
    }
    return ArtificialAnalysisSource(ArtificialAnalysisOptions.model_validate(opts))


async def test_evaluations_become_rows(sources_server: SourcesServer, http: aiohttp.ClientSession) -> None:
    run = await source(sources_server).fetch(http)
    by = {(r.raw_model, r.metric): r for r in run.rows}
    index = by[("Llama 3.1 Instruct 8B", "artificial_analysis_intelligence_index")]
    assert (index.raw_value, index.score) == (16.9, 0.169)
    mmlu = by[("Llama 3.1 Instruct 8B", "mmlu_pro")]
    assert (mmlu.raw_value, mmlu.score) == (0.476, 0.476)
    assert mmlu.aliases == ("llama-3-1-instruct-8b",)
    assert mmlu.details["creator"] == "Meta"
    assert mmlu.details["pricing"]["price_1m_blended_3_to_1"] == 0.1
    assert mmlu.details["provider_tokens_per_s"] == 178.4
    assert ("Qwen2.5 Instruct 72B", "artificial_analysis_coding_index") not in by  # null: not evaluated
    assert len([k for k in by if k[0] == "Llama 3.1 Instruct 8B"]) == 10


async def test_the_key_is_sent_and_a_bad_key_is_an_auth_error(
    sources_server: SourcesServer, http: aiohttp.ClientSession
) -> None:
    await source(sources_server).fetch(http)
    assert sources_server.requests[0].headers["x-api-key"] == API_KEY
    with pytest.raises(SourceAuthError, match="401"):
        await source(sources_server, key="wrong").fetch(http)


async def test_malformed_entries_are_skipped_and_counted(
    sources_server: SourcesServer, http: aiohttp.ClientSession
) -> None:
    run = await source(sources_server).fetch(http)
    assert run.skipped == 3  # a non-numeric evaluation, an entry without a name, one without evaluations
    assert "Broken Model" not in {r.raw_model for r in run.rows}


async def test_rate_limit_retry_and_bad_format(sources_server: SourcesServer, http: aiohttp.ClientSession) -> None:
    sources_server.fail = [429]
    sources_server.retry_after = "0"
    assert (await source(sources_server).fetch(http)).rows
    sources_server.body = b'{"status": 200, "models": []}'
    with pytest.raises(SourceFormatError, match="'data' list"):
        await source(sources_server).fetch(http)


async def test_timeout(sources_server: SourcesServer, http: aiohttp.ClientSession) -> None:
    sources_server.delay_s = 0.5
    with pytest.raises(SourceUnavailable):
        await source(sources_server, timeout_s=0.1, max_attempts=2).fetch(http)


def test_without_a_key_the_source_is_not_built() -> None:
    assert "artificial_analysis" not in build_sources(BenchmarkSourcesOptions())
    with_key = BenchmarkSourcesOptions.model_validate({"artificial_analysis": {"api_key": "k"}})
    assert "artificial_analysis" in build_sources(with_key)
    off = BenchmarkSourcesOptions.model_validate({"lmarena": {"enabled": False}, "openrouter": {"enabled": False}})
    assert set(build_sources(off)) == {"hf_leaderboard"}
