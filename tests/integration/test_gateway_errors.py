"""Client errors come back as exact OpenAI-style error JSON, and the gateway stays up."""

from __future__ import annotations

import httpx
import pytest

from tests.integration import test_gateway_fakes as fakes
from tests.integration.test_gateway_fakes import (
    FakeScorer,
    Fleet,
    catalog_model,
    fixed,
    run_gateway,
    snapshot,
)
from turnout.common.schemas.route import RouteReplyV1

pytestmark = pytest.mark.integration

# shared fixtures (plain assignments: pytest finds them, ruff sees no redefinition)
fleet = fakes.fleet
make_settings = fakes.make_settings

JSON_HEADERS = {"content-type": "application/json"}
CHAT = {"model": "turnout/auto", "messages": [{"role": "user", "content": "hi"}]}


def err(message: str, type_: str, code: str | None, param: str | None = None) -> dict[str, object]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


async def test_malformed_json_wrong_types_and_missing_fields(fleet: Fleet, make_settings):
    async with run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        malformed = await http.post(
            "/v1/chat/completions", content=b'{"messages": [', headers={"content-type": "application/json"}
        )
        not_object = await http.post("/v1/chat/completions", json=[1, 2])
        wrong_type = await http.post("/v1/chat/completions", json={**CHAT, "temperature": "hot"})
        wrong_messages = await http.post("/v1/chat/completions", json={"messages": "hi"})
        wrong_bool = await http.post("/v1/chat/completions", json={**CHAT, "max_tokens": True})
        missing = await http.post("/v1/chat/completions", json={"model": "x"})
        empty = await http.post("/v1/chat/completions", json={"messages": []})
        bad_role = await http.post("/v1/chat/completions", json={"messages": [{"role": "robot", "content": "x"}]})
        bad_quality = await http.post("/v1/chat/completions", json=CHAT, headers={"X-Turnout-Quality": "2"})
        still_up = await http.get("/health")

    assert (malformed.status_code, malformed.json()) == (
        400,
        err("request body is not valid JSON", "invalid_request_error", "invalid_json"),
    )
    assert (not_object.status_code, not_object.json()) == (
        400,
        err("request body must be a JSON object", "invalid_request_error", "invalid_json"),
    )
    assert (wrong_type.status_code, wrong_type.json()) == (
        422,
        err("'temperature' must be a number", "invalid_request_error", "invalid_type", "temperature"),
    )
    assert (wrong_messages.status_code, wrong_messages.json()) == (
        422,
        err("'messages' must be an array", "invalid_request_error", "invalid_type", "messages"),
    )
    assert (wrong_bool.status_code, wrong_bool.json()["error"]["param"]) == (422, "max_tokens")
    assert (missing.status_code, missing.json()) == (
        400,
        err("'messages' is a required property", "invalid_request_error", "missing_required_parameter", "messages"),
    )
    assert (empty.status_code, empty.json()["error"]["code"]) == (400, "invalid_value")
    assert (bad_role.status_code, bad_role.json()["error"]["param"]) == (400, "messages[0].role")
    assert (bad_quality.status_code, bad_quality.json()) == (
        400,
        err("quality must be a number between 0 and 1", "invalid_request_error", "invalid_value", "X-Turnout-Quality"),
    )
    assert still_up.status_code == 200


async def test_a_body_over_the_limit_is_413_with_or_without_content_length(fleet: Fleet, make_settings):
    big = b'{"messages": [{"role": "user", "content": "' + b"x" * 5000 + b'"}]}'

    async def chunked():
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    expected = err("request body is larger than 4096 bytes", "invalid_request_error", "request_too_large")
    async with run_gateway(make_settings(max_body_bytes=4096)) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as http:
            with_length = await http.post("/v1/chat/completions", content=big, headers=JSON_HEADERS)
        async with httpx.AsyncClient(base_url=gw.url) as http:
            without_length = await http.post("/v1/chat/completions", content=chunked(), headers=JSON_HEADERS)
        async with httpx.AsyncClient(base_url=gw.url) as http:
            still_up = await http.get("/health")
    assert (with_length.status_code, with_length.json()) == (413, expected)
    assert (without_length.status_code, without_length.json()) == (413, expected)
    assert still_up.status_code == 200


async def test_unknown_route_and_wrong_method(fleet: Fleet, make_settings):
    async with run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        missing = await http.get("/v1/nothing")
        wrong = await http.get("/v1/chat/completions")
    assert (missing.status_code, missing.json()) == (404, err("Not Found", "invalid_request_error", "not_found"))
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (405, "method_not_allowed")


async def test_unknown_model_is_404_from_the_scorer_and_from_the_fallback(
    redis_url, redis, keys, fleet: Fleet, make_settings
):
    def decide(req):
        return RouteReplyV1(unservable=f"model '{req.requested_model}' not found", unservable_code="model_not_found")

    body = {**CHAT, "model": "nope:1b"}
    async with FakeScorer(redis_url, keys, decide).running(), run_gateway(make_settings()) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as http:
            scored = await http.post("/v1/chat/completions", json=body)
    async with run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        fallback = await http.post("/v1/chat/completions", json=body)
    assert (scored.status_code, scored.json()) == (
        404,
        err("model 'nope:1b' not found", "invalid_request_error", "model_not_found", "model"),
    )
    assert (fallback.status_code, fallback.json()) == (
        404,
        err("The model 'nope:1b' does not exist", "invalid_request_error", "model_not_found", "model"),
    )


async def test_unservable_is_400_with_the_scorers_reason(redis_url, keys, fleet: Fleet, make_settings):
    def decide(_):
        return RouteReplyV1(unservable="no vision model is available", unservable_code="unservable")

    async with FakeScorer(redis_url, keys, decide).running(), run_gateway(make_settings()) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as http:
            r = await http.post("/v1/chat/completions", json=CHAT)
    assert (r.status_code, r.json()) == (
        400,
        err("no vision model is available", "invalid_request_error", "unservable"),
    )


async def test_fallback_with_no_capable_model_is_400(redis, keys, fleet: Fleet, make_settings):
    await redis.set(keys.catalog_snapshot, snapshot(catalog_model("small-3b", "alpha", "small-3b", 3)))
    body = {**CHAT, "tools": [{"type": "function", "function": {"name": "f"}}]}
    async with run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        r = await http.post("/v1/chat/completions", json=body)
    assert (r.status_code, r.json()) == (
        400,
        err("no available model can serve this request (needs chat + tools)", "invalid_request_error", "unservable"),
    )


async def test_client_keys_are_required_when_configured(redis_url, keys, fleet: Fleet, make_settings):
    scorer = FakeScorer(redis_url, keys, fixed(("m-a", "alpha", "up-a")))
    async with scorer.running(), run_gateway(make_settings(api_keys=["k-one", "k-two"])) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as http:
            none = await http.post("/v1/chat/completions", json=CHAT)
            wrong = await http.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer nope"})
            ok = await http.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer k-two"})
            health = await http.get("/health")
    assert (none.status_code, none.json()) == (
        401,
        err("Missing API key: send 'Authorization: Bearer <key>'", "invalid_request_error", "invalid_api_key"),
    )
    assert (wrong.status_code, wrong.json()["error"]["message"]) == (401, "Incorrect API key provided")
    assert ok.status_code == 200
    assert scorer.seen[0].client is not None and scorer.seen[0].client.startswith("key-")
    assert health.status_code == 200
