"""The Open LLM Leaderboard source against a loopback dataset-viewer server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from turnout.sync.errors import SourceUnavailable
from turnout.sync.sources import HfLeaderboardOptions, HfLeaderboardSource, SourceError, SourceFormatError

from .sources_fakes import SourcesServer, sources_server_fixture  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def source(server: SourcesServer, **kw: object) -> HfLeaderboardSource:
    opts = {"url": f"{server.url}/rows", "page_size": 3, "backoff_initial_s": 0.01, "backoff_max_s": 0.05, **kw}
    return HfLeaderboardSource(HfLeaderboardOptions.model_validate(opts))


async def test_pages_through_every_row(sources_server: SourcesServer, http: aiohttp.ClientSession) -> None:
    run = await source(sources_server).fetch(http)
    assert run.pages == 4  # 11 rows, 3 per page
    offsets = [int(r.query["offset"]) for r in sources_server.requests]
    assert offsets == [0, 3, 6, 9]
    models = {r.raw_model for r in run.rows}
    assert models == {
        "meta-llama/Llama-3.1-8B-Instruct",
        "Qwen/Qwen2.5-7B-Instruct",
        "mistralai/Mistral-7B-Instruct-v0.3",
        "google/gemma-2-9b-it",
        "meta-llama/Llama-3.1-70B-Instruct",
        "microsoft/Phi-3-mini-4k-instruct",
    }


async def test_scores_are_the_published_figure_over_100(
    sources_server: SourcesServer, http: aiohttp.ClientSession
) -> None:
    run = await source(sources_server).fetch(http)
    by = {(r.raw_model, r.metric): r for r in run.rows}
    ifeval = by[("Qwen/Qwen2.5-7B-Instruct", "ifeval")]
    assert (ifeval.raw_value, ifeval.score) == (75.85, 0.7585)
    assert ifeval.details["raw_accuracy"] == 0.7585
    assert ifeval.details["params_b"] == 7.62
    assert by[("Qwen/Qwen2.5-7B-Instruct", "average")].score == pytest.approx(0.352)
    assert {m for (name, m) in by if name == "google/gemma-2-9b-it"} == {
        "average", "ifeval", "bbh", "math_lvl5", "gpqa", "musr", "mmlu_pro",
    }  # fmt: skip


async def test_duplicate_precisions_keep_the_best(sources_server: SourcesServer, http: aiohttp.ClientSession) -> None:
    run = await source(sources_server).fetch(http)
    avg = [r for r in run.rows if r.raw_model == "meta-llama/Llama-3.1-8B-Instruct" and r.metric == "average"]
    assert len(avg) == 1 and avg[0].raw_value == 23.76 and avg[0].details["precision"] == "bfloat16"
    assert any("duplicate" in n for n in run.notes)


async def test_malformed_and_flagged_rows_are_skipped_and_counted(
    sources_server: SourcesServer, http: aiohttp.ClientSession
) -> None:
    run = await source(sources_server).fetch(http)
    assert run.skipped == 3  # no name, flagged, a non-numeric IFEval
    reasons = " | ".join(run.skip_reasons)
    assert "without a model name" in reasons and "flagged" in reasons and "IFEval is not a number" in reasons
    phi = {r.metric for r in run.rows if r.raw_model == "microsoft/Phi-3-mini-4k-instruct"}
    assert "ifeval" not in phi and "bbh" in phi


async def test_community_models_only_when_asked(sources_server: SourcesServer, http: aiohttp.ClientSession) -> None:
    run = await source(sources_server, official_only=False).fetch(http)
    assert "someone/Llama-3.1-8B-Instruct-finetune" in {r.raw_model for r in run.rows}


async def test_rate_limits_and_server_errors_are_retried(
    sources_server: SourcesServer, http: aiohttp.ClientSession
) -> None:
    sources_server.fail = [429, 503]
    sources_server.retry_after = "0"
    run = await source(sources_server).fetch(http)
    assert run.pages == 4
    assert len(sources_server.requests) == 6


async def test_a_source_that_keeps_failing_raises(sources_server: SourcesServer, http: aiohttp.ClientSession) -> None:
    sources_server.fail = [500] * 10
    with pytest.raises(SourceUnavailable, match="after 3 attempts"):
        await source(sources_server, max_attempts=3).fetch(http)


async def test_a_slow_source_times_out(sources_server: SourcesServer, http: aiohttp.ClientSession) -> None:
    sources_server.delay_s = 1.0
    with pytest.raises(SourceUnavailable, match="timed out"):
        await source(sources_server, timeout_s=0.2, max_attempts=2).fetch(http)


async def test_a_page_in_another_format_fails_the_run(
    sources_server: SourcesServer, http: aiohttp.ClientSession
) -> None:
    sources_server.body = b'{"items": []}'
    with pytest.raises(SourceFormatError, match="no 'rows' list"):
        await source(sources_server).fetch(http)
    sources_server.body = b"<html>maintenance</html>"
    with pytest.raises(SourceFormatError, match="not JSON"):
        await source(sources_server).fetch(http)


async def test_an_unknown_dataset_is_an_error_not_a_retry(
    sources_server: SourcesServer, http: aiohttp.ClientSession
) -> None:
    with pytest.raises(SourceError, match="HTTP 404"):
        await source(sources_server, dataset="nobody/nothing").fetch(http)
    assert len(sources_server.requests) == 1


async def test_max_pages_bounds_a_run(sources_server: SourcesServer, http: aiohttp.ClientSession) -> None:
    run = await source(sources_server, max_pages=2).fetch(http)
    assert run.pages == 2
    assert any("max_pages" in n for n in run.notes)
