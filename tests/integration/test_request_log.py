"""The request log end to end: the gateway publishes redacted prompts and replies, the sync
consumer stores them, ``/admin/requests`` filters and pages them, ``/admin/requests/{id}`` shows
the decision and every attempt; admin actions land in the audit log; ``/admin/profiles`` pages
the profiles."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from tests.integration.stack_support import ADMIN_KEY, Stack, running_stack
from turnout.common.db.models import Model, Profile
from turnout.common.db.session import engine_scope, make_sessionmaker
from turnout.common.schemas.events import EVENT_FIELD

pytestmark = pytest.mark.integration

SECRET_PROMPT = "Write a Rust LRU cache. My key is sk-proj-abcdefghijklmnop0123456789, mail bob@example.com"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
async def stack(redis_url: str, db: str, key_prefix: str) -> AsyncIterator[Stack]:
    async with running_stack(redis_url, db, key_prefix, request_log={"enabled": True, "max_chars": 2000}) as s:
        yield s


async def _chat(http: httpx.AsyncClient, text: str, *, stream: bool = False) -> str:
    body = {"model": "turnout/auto", "messages": [{"role": "user", "content": text}], "stream": stream}
    resp = await http.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    return resp.headers["x-request-id"]


async def test_prompts_and_replies_are_stored_redacted_with_the_decision_and_attempts(stack: Stack, redis: Redis):
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        code_id = await _chat(http, SECRET_PROMPT)
        hello_id = await _chat(http, "Hello there!", stream=True)
        await _wait_for_events(redis, stack, 2)
        raw = b"".join(f[EVENT_FIELD.encode()] for _, f in await redis.xrange(stack.keys.request_events))
        assert b"sk-proj-abcdefghijklmnop" not in raw and b"bob@example.com" not in raw  # never reaches Redis
        assert await stack.store_events() == 2

        page = (await http.get("/admin/requests", headers=AUTH)).json()
        assert [(r["request_id"], r["model"], r["backend"], r["category"], r["status"]) for r in page["data"]] == [
            (hello_id, "m-beta", "beta", "general", 200),
            (code_id, "m-alpha", "alpha", "code", 200),
        ]
        assert page["next_before"] is None
        assert page["data"][1]["top_reasons"] == ["best code quality 0.84", "resident on gpu0"]
        assert page["data"][1]["logged"] is True

        doc = (await http.get(f"/admin/requests/{code_id}", headers=AUTH)).json()
        assert doc["prompt"] == ("user: Write a Rust LRU cache. My key is [REDACTED:api_key], mail [REDACTED:email]")
        assert doc["reply"] == "Hello from the fake backend."
        assert doc["decision"]["source"] == "scorer"
        assert doc["decision"]["analysis"] == {
            "category": "code",
            "complexity": 0.72,
            "level": "hard",
            "signals": ["code_keywords"],
        }
        assert [(c["model"], c["score"], c["chosen"], c["reasons"]) for c in doc["decision"]["candidates"]] == [
            ("m-alpha", 0.91, True, ["best code quality 0.84", "resident on gpu0"]),
            ("m-beta", 0.52, False, ["lower quality 0.41"]),
        ]
        assert [(a["n"], a["model"], a["backend"], a["outcome"]) for a in doc["attempts"]] == [
            (1, "m-alpha", "alpha", "ok")
        ]
        assert doc["attempts"][0]["latency_ms"] > 0
        assert (doc["prompt_tokens"], doc["completion_tokens"]) == (7, 5)

        streamed = (await http.get(f"/admin/requests/{hello_id}", headers=AUTH)).json()
        assert (streamed["stream"], streamed["prompt"], streamed["reply"]) == (
            True,
            "user: Hello there!",
            "Hello from the fake backend.",
        )
        assert streamed["ttft_ms"] is not None


async def test_filters_and_pages(stack: Stack, redis: Redis):
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        ids = [await _chat(http, f"def f{i}(): pass") for i in range(3)]
        ids.append(await _chat(http, "Hi"))
        await _wait_for_events(redis, stack, 4)
        assert await stack.store_events() == 4

        async def ids_for(**params: object) -> list[str]:
            got = (await http.get("/admin/requests", params=params, headers=AUTH)).json()
            return [r["request_id"] for r in got["data"]]

        assert await ids_for(model="m-alpha") == ids[2::-1]
        assert await ids_for(backend="beta") == [ids[3]]
        assert await ids_for(status=200, model="m-beta") == [ids[3]]
        assert await ids_for(status=500) == []
        assert await ids_for(client="127.0.0.1") == ids[::-1]
        assert await ids_for(client="key-nobody") == []
        assert await ids_for(since="2099-01-01T00:00:00Z") == []
        assert await ids_for(until="2099-01-01T00:00:00Z", since="0") == ids[::-1]

        first = (await http.get("/admin/requests", params={"limit": 3}, headers=AUTH)).json()
        assert [r["request_id"] for r in first["data"]] == ids[:0:-1]
        rest = (
            await http.get("/admin/requests", params={"limit": 3, "before": first["next_before"]}, headers=AUTH)
        ).json()
        assert ([r["request_id"] for r in rest["data"]], rest["next_before"]) == ([ids[0]], None)

        bad = await http.get("/admin/requests", params={"since": "yesterday"}, headers=AUTH)
        assert bad.status_code == 400
        assert bad.json()["error"]["message"] == "'since' must be ISO 8601 or Unix seconds, not 'yesterday'"
        missing = await http.get("/admin/requests/nope", headers=AUTH)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        assert (await http.get("/admin/requests")).status_code == 401


async def test_a_failover_shows_every_attempt(stack: Stack, redis: Redis):
    stack.alpha.mode = "status"
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        rid = await _chat(http, "fix this rust borrow error")
        await _wait_for_events(redis, stack, 1)
        await stack.store_events()
        doc = (await http.get(f"/admin/requests/{rid}", headers=AUTH)).json()
    assert [(a["n"], a["backend"], a["outcome"]) for a in doc["attempts"]] == [
        (1, "alpha", "status_5xx"),
        (2, "beta", "ok"),
    ]
    assert (doc["model"], doc["backend"]) == ("m-beta", "beta")
    assert [c["chosen"] for c in doc["decision"]["candidates"]] == [False, True]


async def test_without_the_request_log_nothing_of_the_text_is_stored(redis_url, db, key_prefix, redis):
    async with (
        running_stack(redis_url, db, key_prefix) as stack,
        httpx.AsyncClient(base_url=stack.url, timeout=10) as http,
    ):
        rid = await _chat(http, SECRET_PROMPT)
        await _wait_for_events(redis, stack, 1)
        raw = (await redis.xrange(stack.keys.request_events))[0][1][EVENT_FIELD.encode()]
        assert set(orjson.loads(raw)) & {"prompt", "reply", "_body", "_reply"} == set()
        await stack.store_events()
        doc = (await http.get(f"/admin/requests/{rid}", headers=AUTH)).json()
    assert (doc["prompt"], doc["reply"], doc["logged"]) == (None, None, False)


async def test_admin_actions_are_audited(stack: Stack):
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        ok = await http.post("/admin/cache/invalidate", params={"which": "response"}, headers=AUTH, json={})
        assert ok.status_code == 200
        refused = await http.post("/admin/reload", headers={"Authorization": "Bearer wrong"}, json={})
        assert refused.status_code == 401
        await http.post("/admin/explain", json={"messages": [{"role": "user", "content": "hi"}]}, headers=AUTH)
        await http.get("/admin/requests", headers=AUTH)  # reads are not actions
        log = (await http.get("/admin/audit-log", headers=AUTH)).json()
        rows = [(r["actor"], r["action"], r["detail"]["status"], r["detail"]["query"]) for r in log["data"]]
        assert rows == [
            ("anonymous@127.0.0.1", "POST /admin/reload", 401, {}),
            ("admin-key", "POST /admin/cache/invalidate", 200, {"which": "response"}),
        ]
        assert log["data"][1]["detail"]["request_id"] == ok.headers["x-request-id"]
        only = await http.get("/admin/audit-log", params={"action": "POST /admin/reload", "limit": 1}, headers=AUTH)
        assert [r["action"] for r in only.json()["data"]] == ["POST /admin/reload"]
        assert (await http.get("/admin/audit-log")).status_code == 401


async def test_profiles_page_and_filter_by_model(stack: Stack):
    async with engine_scope(stack.db) as engine, make_sessionmaker(engine)() as session, session.begin():
        for name in ("m-alpha", "m-beta"):
            model = Model(name=name, family="m")
            session.add(model)
            await session.flush()
            for cat, score in (("code", 0.8), ("general", 0.6)):
                session.add(
                    Profile(
                        model_id=model.id, suite_version="v3", category=cat, score=score, n_prompts=10,
                        grader="rubric", ttft_ms=120.0, tokens_per_s=42.0,
                        prefill_tokens_per_s=1500.0 if name == "m-beta" else None,
                    )
                )  # fmt: skip
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        page = (await http.get("/admin/profiles", params={"limit": 3}, headers=AUTH)).json()
        assert (page["total"], page["limit"], page["offset"]) == (4, 3, 0)
        assert [(p["model"], p["category"], p["score"]) for p in page["data"]] == [
            ("m-alpha", "code", 0.8),
            ("m-alpha", "general", 0.6),
            ("m-beta", "code", 0.8),
        ]
        beta = (await http.get("/admin/profiles", params={"model": "m-beta", "offset": 1}, headers=AUTH)).json()
        assert beta["total"] == 2
        assert [
            (p["model"], p["category"], p["tokens_per_s"], p["prefill_tokens_per_s"], p["grader"]) for p in beta["data"]
        ] == [("m-beta", "general", 42.0, 1500.0, "rubric")]
        assert page["data"][0]["prefill_tokens_per_s"] is None  # not measured


async def _wait_for_events(redis: Redis, stack: Stack, n: int) -> None:
    from tests.integration.test_gateway_fakes import eventually

    async def arrived() -> bool:
        return int(await redis.xlen(stack.keys.request_events)) >= n

    await eventually(arrived)
