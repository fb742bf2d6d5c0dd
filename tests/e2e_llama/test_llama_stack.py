"""Real llama.cpp servers behind the whole stack: real tokens, real usage, a real crash, real speeds."""

from __future__ import annotations

import statistics
import time
from typing import Any

import asyncpg
import openai
import pytest

from tests.e2e_llama.conftest import LlamaE2E, db_fetch
from turnout.common.backends.names import parse_model_name
from turnout.llamafleet.models import RAND_6M, RAND_600M, SMOLLM2

# generous: the first test's setup may compile llama.cpp once (about 8 minutes); every wait
# inside has its own bound (server readiness, client timeouts)
pytestmark = [pytest.mark.e2e, pytest.mark.llama, pytest.mark.timeout(1500)]

TINY, SMOL, BIG = RAND_6M.alias, SMOLLM2.alias, RAND_600M.alias
SMOL_REPLICAS = {"llama-smol", "llama-smol-b"}
BY_SIZE = [TINY, SMOL, BIG]
NO_STOP = {"0": -100, "2": -100}
"""logit_bias that keeps SmolLM2's tokenizer from ending early (<|endoftext|>, <|im_end|>)."""


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def content_of(chunk: Any) -> str:
    return (chunk.choices[0].delta.content or "") if chunk.choices else ""


def db_rows(llama: LlamaE2E, sql: str) -> list[asyncpg.Record]:
    return db_fetch(llama.database_url, sql)


def test_discovery_catalogs_the_real_models_with_the_sizes_their_names_give(llama: LlamaE2E) -> None:
    assert set(BY_SIZE) <= set(llama.models)
    rows = db_rows(
        llama,
        "SELECT m.name, m.params_b, array_agg(b.name ORDER BY b.name) AS backends FROM models m "
        "JOIN deployments d ON d.model_id = m.id JOIN backends b ON b.id = d.backend_id "
        "WHERE d.active GROUP BY m.name, m.params_b",
    )
    found = {r["name"]: (r["params_b"], list(r["backends"])) for r in rows}
    assert found == {
        TINY: (0.006, ["llama-tiny"]),
        SMOL: (0.135, ["llama-smol", "llama-smol-b"]),
        BIG: (0.6, ["llama-big"]),
    }


def test_openai_sdk_streams_real_tokens_from_llama_cpp_through_the_gateway(
    llama: LlamaE2E, client: openai.OpenAI
) -> None:
    messages = user("Name three colours of the rainbow.")
    raw = client.chat.completions.with_raw_response.create(
        model=SMOL, messages=messages, max_tokens=12, temperature=0, stream=True
    )
    backend = raw.headers["x-turnout-backend"]
    assert raw.headers["x-turnout-model"] == SMOL
    assert backend in SMOL_REPLICAS
    chunks = list(raw.parse())
    pieces = [content_of(c) for c in chunks if content_of(c)]
    assert len(pieces) >= 8, pieces  # streamed token by token, not in one piece
    assert {c.model for c in chunks} == {SMOL}
    assert len({c.id for c in chunks}) == 1
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]

    with llama.direct(backend) as direct:  # the same server, greedy: the same tokens
        ref = direct.chat.completions.create(model=SMOL, messages=messages, max_tokens=12, temperature=0)
    assert "".join(pieces) == ref.choices[0].message.content


def test_usage_in_a_reply_is_counted_by_the_real_server(llama: LlamaE2E, client: openai.OpenAI) -> None:
    messages = user("Write one sentence about trains.")
    raw = client.chat.completions.with_raw_response.create(model=TINY, messages=messages, max_tokens=20, temperature=0)
    assert raw.headers["x-turnout-backend"] == "llama-tiny"
    reply = raw.parse()
    with llama.direct("llama-tiny") as direct:
        ref = direct.chat.completions.create(model=TINY, messages=messages, max_tokens=20, temperature=0)
    assert reply.usage is not None and ref.usage is not None
    assert reply.usage.model_dump() == ref.usage.model_dump()
    # SmolLM2's chat template wraps the 6 words in a system prompt and role markers: a real
    # tokenizer count, far above any characters/4 estimate of the message itself
    assert reply.usage.prompt_tokens > 25
    assert reply.usage.completion_tokens == 20
    assert reply.choices[0].message.content == ref.choices[0].message.content


def test_streamed_usage_counts_the_tokens_llama_cpp_streamed(llama: LlamaE2E, client: openai.OpenAI) -> None:
    messages = user("Hi there")
    chunks = list(
        client.chat.completions.create(
            model=TINY, messages=messages, max_tokens=24, temperature=0, logit_bias=NO_STOP, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    with llama.direct("llama-tiny") as direct:
        ref = direct.chat.completions.create(
            model=TINY, messages=messages, max_tokens=24, temperature=0, logit_bias=NO_STOP
        )
    assert ref.usage is not None and ref.usage.completion_tokens == 24
    assert sum(1 for c in chunks if content_of(c)) == 24
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.completion_tokens == 24


def test_a_server_killed_mid_stream_gives_a_clean_error_and_the_next_request_goes_elsewhere(
    llama: LlamaE2E, client: openai.OpenAI
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=SMOL, messages=user("Tell me a long story about a lighthouse keeper."), max_tokens=400,
        temperature=0, stream=True,
    )  # fmt: skip
    victim = raw.headers["x-turnout-backend"]
    assert victim in SMOL_REPLICAS
    (other,) = SMOL_REPLICAS - {victim}
    pieces: list[str] = []
    try:
        with pytest.raises(openai.APIError) as err:
            for chunk in raw.parse():
                if text := content_of(chunk):
                    pieces.append(text)
                    if len(pieces) == 5:
                        llama.server(victim).kill()
        assert 5 <= len(pieces) < 400
        assert not isinstance(err.value, openai.APIConnectionError)  # an error event, not a torn connection
        assert victim in err.value.message
        assert not llama.server(victim).alive

        nxt = client.chat.completions.with_raw_response.create(
            model=SMOL, messages=user("Say hello."), max_tokens=8, temperature=0
        )
        assert nxt.headers["x-turnout-backend"] == other
        assert nxt.parse().choices[0].message.content
    finally:
        llama.fleet.restart(victim)
    assert llama.server(victim).alive


def _measure(client: openai.OpenAI, model: str, prompt: str, max_tokens: int) -> tuple[float, float]:
    """(time to first content token in s, tokens/s after it) of one streamed request, client-side."""
    t0 = time.perf_counter()
    first = last = 0.0
    n = 0
    stream = client.chat.completions.create(
        model=model, messages=user(prompt), max_tokens=max_tokens, temperature=0, stream=True, logit_bias=NO_STOP
    )
    for chunk in stream:
        if content_of(chunk):
            now = time.perf_counter()
            n += 1
            first = first or now
            last = now
    assert n >= max_tokens // 2, f"{model} streamed {n} pieces for {max_tokens} tokens"
    return first - t0, (n - 1) / (last - first)


def test_measured_speed_and_ttft_through_the_gateway_order_the_models_by_size(
    llama: LlamaE2E, client: openai.OpenAI
) -> None:
    """Measured client-side through the gateway, with no profiling running beside it (the last
    test checks what the profiler itself stored)."""
    sizes = [parse_model_name(m).params_b or 0.0 for m in BY_SIZE]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3
    ttft: dict[str, list[float]] = {m: [] for m in BY_SIZE}
    tps: dict[str, list[float]] = {m: [] for m in BY_SIZE}
    for i in range(3):
        for model in BY_SIZE:
            t, s = _measure(client, model, f"Describe the number {i * 7 + 3} in a few words.", max_tokens=32)
            ttft[model].append(t)
            tps[model].append(s)
    med_ttft = {m: statistics.median(v) for m, v in ttft.items()}
    med_tps = {m: statistics.median(v) for m, v in tps.items()}
    report = ", ".join(f"{m}: ttft {med_ttft[m] * 1000:.0f} ms, {med_tps[m]:.0f} tok/s" for m in BY_SIZE)
    assert sorted(BY_SIZE, key=lambda m: -med_tps[m]) == BY_SIZE, report
    assert sorted(BY_SIZE, key=lambda m: med_ttft[m]) == BY_SIZE, report


def test_profiler_profiles_order_the_models_by_size(llama: LlamaE2E) -> None:
    """What the profiler stored for the real servers (the fixture waited for it before any test)."""
    stored = llama.profiled
    if not set(BY_SIZE) <= stored.keys():
        pytest.skip(f"the profiler stored profiles for {sorted(stored)} only (is runtime profiling on?)")
    ttft = {m: stored[m][1] for m in BY_SIZE}
    tps = {m: stored[m][0] for m in BY_SIZE}
    report = ", ".join(f"{m}: ttft {ttft[m]} ms, {tps[m]} tok/s" for m in BY_SIZE)
    assert all(v is not None for v in ttft.values()), report
    assert sorted(BY_SIZE, key=lambda m: ttft[m] or 0.0) == BY_SIZE, report
    # llama-cpp-python streams carry neither usage nor timings: the profiler counts content chunks
    assert all(v is not None and v > 0 for v in tps.values()), report
    assert sorted(BY_SIZE, key=lambda m: -(tps[m] or 0.0)) == BY_SIZE, report
