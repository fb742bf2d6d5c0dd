"""Closed by default, over a real socket: the admin API, JSON-only bodies, bounds, CORS, keys."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from pydantic import SecretStr

from tests.integration import test_gateway_fakes as fakes
from tests.integration.test_gateway_fakes import FakeScorer, Fleet, fixed, run_gateway
from turnout.devstack.infra import free_port

pytestmark = pytest.mark.integration

fleet = fakes.fleet
make_settings = fakes.make_settings

CHAT = {"model": "turnout/auto", "messages": [{"role": "user", "content": "hi"}]}


def err(message: str, type_: str, code: str | None, param: str | None = None) -> dict[str, object]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


UNSUPPORTED = err("Content-Type must be application/json", "invalid_request_error", "unsupported_media_type")


async def test_admin_answers_loopback_without_a_key_and_only_the_key_with_one(fleet: Fleet, make_settings):
    async with run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        open_on_loopback = await http.get("/admin/circuits")
    settings = make_settings().model_copy(update={"admin_key": SecretStr("adm-123")})
    async with run_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        anonymous = await http.post("/admin/reload", json={})
        wrong = await http.get("/admin/circuits", headers={"authorization": "Bearer nope"})
        right = await http.get("/admin/circuits", headers={"authorization": "Bearer adm-123"})
    assert open_on_loopback.status_code == 200
    needs_key = err(
        "This endpoint needs the admin key: 'Authorization: Bearer <TURNOUT_ADMIN_KEY>'",
        "invalid_request_error",
        "invalid_api_key",
    )
    assert (anonymous.status_code, anonymous.json()) == (401, needs_key)
    assert (wrong.status_code, wrong.json()) == (401, needs_key)
    assert right.status_code == 200


async def test_the_admin_allow_list_refuses_other_networks(fleet: Fleet, make_settings):
    settings = make_settings(admin_allow_cidrs=["10.0.0.0/8"]).model_copy(update={"admin_key": SecretStr("adm-123")})
    async with run_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        refused = await http.get("/admin/circuits", headers={"authorization": "Bearer adm-123"})
    async with run_gateway(make_settings(admin_allow_cidrs=["127.0.0.0/8"])) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as http:
            allowed = await http.get("/admin/circuits")
    assert (refused.status_code, refused.json()) == (
        403,
        err("The admin API is not open to this address", "invalid_request_error", "forbidden"),
    )
    assert allowed.status_code == 200


async def test_explain_needs_only_the_admin_key_when_client_keys_are_configured(
    redis_url, keys, fleet: Fleet, make_settings
):
    settings = make_settings(api_keys=["client-key"]).model_copy(update={"admin_key": SecretStr("adm-1")})
    async with run_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        r = await http.get("/admin/explain", params={"prompt": "hi"}, headers={"authorization": "Bearer adm-1"})
    # no scorer runs: the call gets through auth and fails at the RPC (503), not at 401
    assert (r.status_code, r.json()["error"]["code"]) == (503, "no_backend_available")


async def test_bodies_that_are_not_json_are_refused_with_415(fleet: Fleet, make_settings):
    async with run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        text = await http.post(
            "/v1/chat/completions", content=b'{"messages": []}', headers={"content-type": "text/plain"}
        )
        form = await http.post("/admin/reload", data={"a": "b"})
        none = await http.post("/admin/cache/invalidate")
        feedback = await http.post("/v1/feedback", content=b"{}", headers={"content-type": "text/plain;charset=UTF-8"})
        ollama = await http.post(
            "/api/chat", content=b"{}", headers={"content-type": "application/x-www-form-urlencoded"}
        )
        suffixed = await http.post("/v1/feedback", content=b"{}", headers={"content-type": "application/merge+json"})
    for r in (text, form, none, feedback, ollama):
        assert (r.status_code, r.json()) == (415, UNSUPPORTED)
    assert suffixed.status_code == 400  # parsed as JSON: the missing field is the problem


async def test_nul_bytes_huge_numbers_and_long_names_are_400(fleet: Fleet, make_settings):
    async with run_gateway(make_settings(max_n=4, max_messages=3)) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        nul_query = await http.get("/admin/dlq?queue=%00")
        nul_other = await http.get("/admin/benchmarks?x=a%00b")
        huge_tokens = await http.get("/admin/explain", params={"prompt": "hi", "max_tokens": str(10**30)})
        huge_id = await http.post(f"/admin/dlq/{10**30}/retry", json={})
        long_model = await http.post("/v1/chat/completions", json={**CHAT, "model": "m" * 257})
        long_ollama = await http.post("/api/generate", json={"model": "m" * 257, "prompt": "x"})
        big_n = await http.post("/v1/chat/completions", json={**CHAT, "n": 5})
        many = await http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}] * 4})
        big_max = await http.post("/v1/completions", json={"prompt": "x", "max_tokens": 10**12})
    assert (nul_query.status_code, nul_query.json()) == (
        400,
        err("NUL bytes are not allowed in the path or query string", "invalid_request_error", "invalid_value"),
    )
    assert nul_other.status_code == 400
    assert (huge_tokens.status_code, huge_tokens.json()["error"]["param"]) == (400, "max_tokens")
    assert (huge_id.status_code, huge_id.json()["error"]["param"]) == (400, "dead_letter_id")
    assert (long_model.status_code, long_model.json()) == (
        400,
        err("'model' must be at most 256 characters", "invalid_request_error", "invalid_value", "model"),
    )
    assert (long_ollama.status_code, long_ollama.json()) == (400, {"error": "'model' must be at most 256 characters"})
    assert (big_n.status_code, big_n.json()) == (
        400,
        err("'n' must be at most 4", "invalid_request_error", "invalid_value", "n"),
    )
    assert (many.status_code, many.json()) == (
        400,
        err("'messages' must contain at most 3 messages", "invalid_request_error", "invalid_value", "messages"),
    )
    assert (big_max.status_code, big_max.json()["error"]["message"]) == (400, "'max_tokens' must be at most 10000000")


async def test_cors_is_off_by_default_and_answers_preflights_for_allowed_origins(fleet: Fleet, make_settings):
    preflight = {
        "origin": "https://app.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }
    async with run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        off = await http.options("/v1/chat/completions", headers=preflight)
        off_get = await http.get("/health", headers={"origin": "https://app.example"})
    async with run_gateway(make_settings(cors_allow_origins=["https://app.example"])) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as http:
            ok = await http.options("/v1/chat/completions", headers=preflight)
            other = await http.options("/v1/chat/completions", headers={**preflight, "origin": "https://evil.example"})
            simple = await http.get("/health", headers={"origin": "https://app.example"})
    assert off.status_code == 405
    assert "access-control-allow-origin" not in off.headers and "access-control-allow-origin" not in off_get.headers
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://app.example"
    assert ok.headers["access-control-allow-methods"] == "GET, POST"
    assert ok.headers["access-control-allow-headers"] == (
        "Accept, Accept-Language, Content-Language, Content-Type, authorization, content-type, x-request-id, "
        "x-turnout-quality"
    )
    assert (other.status_code, other.text) == (400, "Disallowed CORS origin")
    assert simple.headers["access-control-allow-origin"] == "https://app.example"


async def test_client_keys_may_be_configured_as_sha256_hashes(redis_url, keys, fleet: Fleet, make_settings):
    digest = "sha256:" + hashlib.sha256(b"the-real-key").hexdigest()
    scorer = FakeScorer(redis_url, keys, fixed(("fake-8b", "alpha", "gpt-fake-8b")))
    async with scorer.running(), run_gateway(make_settings(api_keys=[digest])) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as http:
            good = await http.post("/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer the-real-key"})
            the_hash = await http.post("/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {digest}"})
    assert good.status_code == 200
    assert (the_hash.status_code, the_hash.json()["error"]["message"]) == (401, "Incorrect API key provided")
    assert scorer.seen[0].client == "key-" + digest[7:17]


async def test_errors_name_the_backend_never_its_address(redis_url, keys, fleet: Fleet, make_settings):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    backends = [{"name": "gone", "kind": "openai", "url": dead}]
    scorer = FakeScorer(redis_url, keys, fixed(("m", "gone", "up")))
    async with scorer.running(), run_gateway(make_settings(backends=backends)) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as http:
            r = await http.post("/v1/chat/completions", json=CHAT)
    assert (r.status_code, r.json()["error"]["message"]) == (503, "gone: unreachable (ClientConnectorError)")
    assert "127.0.0.1" not in r.text


async def test_metrics_leave_the_api_port_when_a_metrics_port_is_set(fleet: Fleet, make_settings):
    async with run_gateway(make_settings(metrics_port=free_port())) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        r = await http.get("/metrics")
    assert r.status_code == 404
