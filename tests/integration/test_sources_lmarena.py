"""The LMArena source against a loopback dataset-viewer server serving the leaderboard dataset."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from turnout.sync.errors import SourceUnavailable
from turnout.sync.sources import LmArenaOptions, LmArenaSource, SourceFormatError

from .sources_fakes import SourcesServer, sources_server_fixture  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def source(server: SourcesServer, **kw: object) -> LmArenaSource:
    opts = {"url": f"{server.url}/rows", "page_size": 10, "backoff_initial_s": 0.01, "backoff_max_s": 0.05, **kw}
    return LmArenaSource(LmArenaOptions.model_validate(opts))


async def test_ratings_per_category_across_pages(sources_server: SourcesServer, http: aiohttp.ClientSession) -> None:
    run = await source(sources_server).fetch(http)
    assert run.pages == 4  # 32 rows, 10 per page
    metrics = {r.metric for r in run.rows}
    assert metrics == {"elo_overall", "elo_coding", "elo_math"}  # multiturn is not configured
    q = sources_server.requests[0].query
    assert (q["dataset"], q["config"], q["split"]) == ("lmarena-ai/leaderboard-dataset", "text", "latest")


async def test_scores_are_win_rates_against_the_median(
    sources_server: SourcesServer, http: aiohttp.ClientSession
) -> None:
    run = await source(sources_server).fetch(http)
    overall = {r.raw_model: r for r in run.rows if r.metric == "elo_overall"}
    median = overall["llama-3.1-405b-instruct-bf16"].details["median_rating"]
    assert median == 1257.9 or median == pytest.approx(1257.9, abs=40)
    top, bottom = overall["gemini-2.5-pro"], overall["tiny-model-1b"]
    assert top.raw_value == 1460.2 and 0.5 < top.score < 1
    assert 0 < bottom.score < 0.5
    expected = 1 / (1 + 10 ** ((median - top.raw_value) / 400))
    assert top.score == pytest.approx(expected, abs=1e-6)
    assert top.details["votes"] == 20000 and top.details["rating_upper"] == 1465.6


async def test_malformed_rows_are_skipped_and_counted(
    sources_server: SourcesServer, http: aiohttp.ClientSession
) -> None:
    run = await source(sources_server).fetch(http)
    assert run.skipped == 2
    assert any("without model_name" in r for r in run.skip_reasons)
    assert any("broken-rating" in r for r in run.skip_reasons)


async def test_categories_and_vote_floor_are_configurable(
    sources_server: SourcesServer, http: aiohttp.ClientSession
) -> None:
    run = await source(sources_server, categories=["multiturn"], min_votes=15000).fetch(http)
    assert {r.metric for r in run.rows} == {"elo_multiturn"}
    assert all(r.details["votes"] >= 15000 for r in run.rows)
    everything = await source(sources_server, categories=[]).fetch(http)
    assert "elo_multiturn" in {r.metric for r in everything.rows}


async def test_retries_then_gives_up(sources_server: SourcesServer, http: aiohttp.ClientSession) -> None:
    sources_server.fail = [502]
    assert (await source(sources_server).fetch(http)).rows
    sources_server.fail = [503] * 5
    with pytest.raises(SourceUnavailable):
        await source(sources_server, max_attempts=2).fetch(http)


async def test_timeout_and_format_errors(sources_server: SourcesServer, http: aiohttp.ClientSession) -> None:
    sources_server.delay_s = 0.5
    with pytest.raises(SourceUnavailable, match="timed out"):
        await source(sources_server, timeout_s=0.1, max_attempts=1).fetch(http)
    sources_server.delay_s = 0
    sources_server.body = b"[]"
    with pytest.raises(SourceFormatError):
        await source(sources_server).fetch(http)
