"""Names as clients write them: tag-less names, models the rules hide, key and address together."""

from __future__ import annotations

import httpx
import pytest

from tests.integration import test_gateway_fakes as fakes
from tests.integration.test_gateway_fakes import FakeScorer, catalog_model, fixed, run_gateway, snapshot
from turnout.common.schemas.catalog import CatalogSnapshotV1

pytestmark = pytest.mark.integration

fleet = fakes.fleet
make_settings = fakes.make_settings


async def test_blocked_models_are_not_listed(redis, keys, make_settings):
    snap = CatalogSnapshotV1.model_validate_json(
        snapshot(
            catalog_model("llama3.2:3b", "olla", "llama3.2:3b", 3),
            catalog_model("secret:70b", "alpha", "secret:70b", 70),
        )
    )
    snap.hidden = ["secret:70b"]
    await redis.set(keys.catalog_snapshot, snap.model_dump_json())
    async with run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        await fakes.eventually(lambda: _listed(http, "llama3.2:3b"))
        v1 = (await http.get("/v1/models")).json()
        tags = (await http.get("/api/tags")).json()
        one = await http.get("/v1/models/secret:70b")
        tagless = await http.get("/v1/models/llama3.2")  # as a request's model would resolve
        tagless_hidden = await http.get("/v1/models/secret")

    assert [m["id"] for m in v1["data"]] == ["turnout/auto", "llama3.2:3b"]
    assert [m["name"] for m in tags["models"]] == ["turnout/auto", "llama3.2:3b"]
    assert one.status_code == 404
    assert (tagless.status_code, tagless.json()["id"]) == (200, "llama3.2:3b")
    assert tagless_hidden.status_code == 404


async def _listed(http: httpx.AsyncClient, name: str) -> bool:
    return name in [m["id"] for m in (await http.get("/v1/models")).json()["data"]]


async def test_a_tagless_name_is_found_without_a_scorer(redis, keys, fleet, make_settings):
    await redis.set(keys.catalog_snapshot, snapshot(catalog_model("qwen3:4b", "alpha", "qwen3:4b", 4)))
    async with run_gateway(make_settings(route_timeout_s=0.05)) as gw:
        client = gw.openai(api_key="x")
        reply = await client.chat.completions.with_raw_response.create(
            model="qwen3", messages=[{"role": "user", "content": "hi"}]
        )
    assert reply.headers["x-turnout-model"] == "qwen3:4b"
    assert fleet.alpha.received[0]["model"] == "qwen3:4b"


async def test_the_scorer_sees_the_key_and_the_address_together(redis_url, keys, fleet, make_settings):
    scorer = FakeScorer(redis_url, keys, fixed(("m", "alpha", "gpt-fake-8b")))
    async with scorer.running(), run_gateway(make_settings(api_keys=["k-one-1234"])) as gw:
        client = gw.openai(api_key="k-one-1234")
        await client.chat.completions.create(model="turnout/auto", messages=[{"role": "user", "content": "hi"}])
    seen = scorer.seen[0]
    assert seen.client is not None and seen.client.startswith("key-")
    assert seen.client_ip == "127.0.0.1"
