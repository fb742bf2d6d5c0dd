"""What the stack leaves behind: routing decisions in Postgres, gpu-agent host state in Redis."""

from __future__ import annotations

import openai
import pytest
from redis import Redis

from tests.e2e.conftest import E2E
from tests.e2e.support import decision, eventually, request_id
from turnout.common.schemas.catalog import CatalogSnapshotV1
from turnout.common.schemas.fleet import HostStateV1

pytestmark = pytest.mark.e2e


def test_a_decision_and_its_outcome_are_stored_in_postgres(e2e: E2E, client: openai.OpenAI) -> None:
    rid = request_id()
    raw = client.chat.completions.with_raw_response.create(
        model="turnout/auto",
        messages=[{"role": "user", "content": "Explain recursion in one sentence."}],
        max_tokens=32,
        extra_headers={"X-Request-ID": rid},
    )
    completion = raw.parse()
    row = decision(e2e, rid)
    assert (row["model"], row["backend"], row["status"], row["outcome"], row["kind"]) == (
        raw.headers["x-turnout-model"],
        raw.headers["x-turnout-backend"],
        200,
        "ok",
        "chat",
    )
    assert row["route_source"] == "scorer"
    assert row["requested_model"] == "turnout/auto"
    assert row["response_id"] == completion.id
    assert row["stream"] is False
    assert row["latency_ms"] > 0
    assert row["candidates"] and row["candidates"][0]["model"] == raw.headers["x-turnout-model"]
    assert completion.usage is not None and row["completion_tokens"] == completion.usage.completion_tokens


def test_a_streamed_request_is_stored_too(e2e: E2E, client: openai.OpenAI) -> None:
    rid = request_id()
    stream = client.chat.completions.create(
        model="turnout/auto",
        messages=[{"role": "user", "content": "hello"}],
        stream=True,
        extra_headers={"X-Request-ID": rid},
    )
    for _ in stream:
        pass
    row = decision(e2e, rid)
    assert (row["stream"], row["status"], row["outcome"]) == (True, 200, "ok")
    assert row["ttft_ms"] is not None and row["ttft_ms"] > 0


def test_the_scorers_catalog_carries_the_prefill_speed_the_profiler_measured(e2e: E2E, redis_url: str) -> None:
    # default_fleet.yaml: llama3.1:8b (Ollama listener: prompt_eval counters) 3,000 prompt tokens/s,
    # Qwen2.5-3B (OpenAI listener, vLLM-like: timed by the client) 5,000
    r = Redis.from_url(redis_url)
    try:

        def measured() -> dict[str, float | None] | None:
            raw = r.get(e2e.keys.catalog_snapshot)
            if not raw:
                return None
            models = {m.name: m.prefill_tokens_per_s for m in CatalogSnapshotV1.model_validate_json(raw).models}
            return models if models.get("llama3.1:8b") else None

        got = eventually(measured, timeout=30, what="prefill speeds in the scorer's catalog")
    finally:
        r.close()
    assert got["llama3.1:8b"] == pytest.approx(3000, rel=0.2)
    assert got["Qwen2.5-3B-Instruct-Q4_K_M"] == pytest.approx(5000, rel=0.4)
    assert got["nomic-embed-text:latest"] is None  # embedding models are not profiled


def _host_states(redis_url: str, e2e: E2E) -> list[HostStateV1]:
    r = Redis.from_url(redis_url)
    try:
        hosts = [h.decode() for h in r.zrange(e2e.keys.fleet_hosts, 0, -1)]
        states = []
        for host in hosts:
            key = e2e.keys.fleet_host(host)
            kind = r.type(key).decode()
            if kind == "string":
                raw = r.get(key)
            elif kind == "hash":
                raw = r.hget(key, "data") or r.hget(key, "state")
            else:
                continue
            if raw:
                states.append(HostStateV1.model_validate_json(raw))
        return states
    finally:
        r.close()


def test_the_gpu_agent_publishes_host_state_to_redis(e2e: E2E, redis_url: str, client: openai.OpenAI) -> None:
    # a request on the Ollama listener makes a model resident there
    client.chat.completions.create(model="llama3.2:1b", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    states = eventually(lambda: _host_states(redis_url, e2e), timeout=20, what="host state in Redis")
    (state,) = [s for s in states if s.backend == "fleet-ollama"]
    assert state.ts > 0
    assert state.host == e2e.urls.fleet.raw["host_labels"]["ollama"]  # type: ignore[union-attr]
    # the devstack gives the agent a simulated GPU sized like the Ollama listener's VRAM budget
    assert state.memory_total_bytes == e2e.urls.fleet.raw["vram_total_bytes"]["ollama"]  # type: ignore[union-attr]
    state = eventually(
        lambda: next(
            (s for s in _host_states(redis_url, e2e) if "llama3.2:1b" in {m.name for m in s.loaded_models}), None
        ),
        timeout=20,
        what="llama3.2:1b among the loaded models",
    )
    (loaded,) = [m for m in state.loaded_models if m.name == "llama3.2:1b"]
    assert loaded.size_bytes > 0
    r = Redis.from_url(redis_url)
    try:
        ttl = r.ttl(e2e.keys.fleet_host(state.host))
    finally:
        r.close()
    assert 0 < ttl <= 120, "host state must expire when the agent dies"
