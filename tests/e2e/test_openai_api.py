"""The OpenAI SDK against the whole stack: chat (plain and streaming), embeddings, models,
and capability-aware routing (images land on a vision model, tools on a tools model)."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
from sqlalchemy import func, select

from tests.e2e.conftest import E2E
from tests.e2e.support import PNG_B64, TOOLS, decision, eventually, fleet_listener_of, fleet_models, request_id
from turnout.common.db.models import Feedback, RoutingDecision
from turnout.common.db.session import engine_scope, make_sessionmaker
from turnout.embeddings.static import default_embedder
from turnout.scorer.learned import LearnedIndex, decode_embedding
from turnout.scorer.learned_loader import load_feedback

pytestmark = pytest.mark.e2e

VIRTUAL = "turnout/auto"


def test_models_lists_the_virtual_model_and_every_fleet_model(client: openai.OpenAI, fleet: httpx.Client) -> None:
    ids = [m.id for m in client.models.list().data]
    assert ids[0] == VIRTUAL
    assert set(fleet_models(fleet)) <= set(ids)


def test_non_streaming_chat_is_routed_and_says_where(client: openai.OpenAI, fleet: httpx.Client) -> None:
    rid = request_id()
    raw = client.chat.completions.with_raw_response.create(
        model=VIRTUAL,
        messages=[{"role": "user", "content": "Say hello in one short sentence."}],
        max_tokens=32,
        extra_headers={"X-Request-ID": rid},
    )
    completion = raw.parse()
    model, backend = raw.headers["x-turnout-model"], raw.headers["x-turnout-backend"]
    assert raw.headers["x-request-id"] == rid
    assert model in fleet_models(fleet)
    assert backend == f"fleet-{fleet_listener_of(fleet)[model]}"
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert (
        completion.usage is not None and completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    )


def test_streaming_chat_arrives_in_chunks_with_usage_last(client: openai.OpenAI) -> None:
    with client.chat.completions.with_streaming_response.create(
        model=VIRTUAL,
        messages=[{"role": "user", "content": "Count from one to ten in words."}],
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=64,
    ) as raw:
        assert raw.headers["content-type"].startswith("text/event-stream")
        assert raw.headers["x-turnout-model"]
        chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert text
    assert {c.id for c in chunks} == {chunks[0].id}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["stop"], ["length"])


def test_a_concrete_model_name_is_honoured(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="llama3.1:8b", messages=[{"role": "user", "content": "hi"}], max_tokens=8
    )
    assert raw.headers["x-turnout-model"] == "llama3.1:8b"
    assert raw.headers["x-turnout-backend"] == "fleet-ollama"
    assert raw.parse().model == "llama3.1:8b"


def test_unknown_model_is_404_in_openai_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="no-such-model:1b", messages=[{"role": "user", "content": "hi"}])
    assert exc.value.status_code == 404
    assert isinstance(exc.value.body, dict) and exc.value.body.get("code") == "model_not_found"


def test_embeddings_land_on_an_embedding_model(client: openai.OpenAI, fleet: httpx.Client) -> None:
    raw = client.embeddings.with_raw_response.create(model=VIRTUAL, input=["first text", "second text"])
    result = raw.parse()
    assert "embedding" in fleet_models(fleet)[raw.headers["x-turnout-model"]]
    assert [d.index for d in result.data] == [0, 1]
    assert len(result.data[0].embedding) == len(result.data[1].embedding) > 0
    assert result.data[0].embedding != result.data[1].embedding


@pytest.mark.parametrize("ids", [[101, 7592, 102], [[101, 7592], [102]]], ids=["one", "several"])
def test_token_id_embeddings_on_a_fleet_whose_embedding_models_are_all_on_ollama_are_refused_with_why(
    client: openai.OpenAI, fleet: httpx.Client, ids: list[int] | list[list[int]]
) -> None:
    """Ollama takes embedding input as text: the scorer knows the simulated fleet's only embedding
    model is served by Ollama, so token ids get a 400 that says what to do — not a request to a
    backend that cannot take it."""
    embeds = {
        p: n for p, n in fleet.get("/_fleet/stats").json()["listeners"]["ollama"]["endpoints"].items() if "embed" in p
    }
    with pytest.raises(openai.BadRequestError) as exc:
        client.embeddings.create(model=VIRTUAL, input=ids)
    body = exc.value.body
    assert isinstance(body, dict) and body["code"] == "unservable" and body["type"] == "invalid_request_error"
    assert body["message"] == (
        "token-id input needs a backend that accepts token ids (an OpenAI-compatible server such as vLLM or "
        "llama.cpp); the models that could serve this request are served only by Ollama, which takes text: "
        "send the input as text"
    )
    after = fleet.get("/_fleet/stats").json()["listeners"]["ollama"]["endpoints"]
    assert {p: n for p, n in after.items() if "embed" in p} == embeds  # nothing was sent to Ollama
    # the same texts are embedded as usual
    assert len(client.embeddings.create(model=VIRTUAL, input="hello world").data) == 1


def test_a_request_with_an_image_lands_on_a_vision_model(client: openai.OpenAI, fleet: httpx.Client) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=VIRTUAL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                ],
            }
        ],
        max_tokens=32,
    )
    model = raw.headers["x-turnout-model"]
    assert "vision" in fleet_models(fleet)[model], model
    assert raw.parse().choices[0].message.content


def test_a_request_with_tools_lands_on_a_tools_model(client: openai.OpenAI, fleet: httpx.Client) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=VIRTUAL,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=TOOLS,  # type: ignore[arg-type]
        max_tokens=64,
    )
    model = raw.headers["x-turnout-model"]
    assert "tools" in fleet_models(fleet)[model], model
    choice = raw.parse().choices[0]
    assert choice.message.content or choice.message.tool_calls


def test_legacy_completions(client: openai.OpenAI) -> None:
    raw = client.completions.with_raw_response.create(model=VIRTUAL, prompt="Once upon a time", max_tokens=16)
    completion = raw.parse()
    assert raw.headers["x-turnout-model"]
    assert completion.choices[0].text


def test_feedback_is_accepted_for_a_response_id(client: openai.OpenAI, http: httpx.Client) -> None:
    completion = client.chat.completions.create(model=VIRTUAL, messages=[{"role": "user", "content": "hi"}])
    r = http.post("/v1/feedback", json={"response_id": completion.id, "score": 1.0, "comment": "good"})
    assert r.status_code == 202, r.text


def test_every_service_runs_as_a_process(e2e: E2E) -> None:
    running = {name for name, proc in e2e.stack.procs.items() if proc.returncode is None}
    assert running == {"fleet", "scorer", "profiler", "sync", "gpu-agent", "gateway"}


def test_every_service_serves_health_ready_and_metrics(e2e: E2E) -> None:
    for name, base in {"gateway": e2e.gateway, **e2e.urls.ops}.items():
        with httpx.Client(base_url=base, timeout=5) as c:
            assert c.get("/health").status_code == 200, name
            assert c.get("/ready").status_code == 200, (name, c.get("/ready").text)
            metrics = c.get("/metrics")
            assert metrics.status_code == 200, name
            assert "turnout_" in metrics.text, name


def test_feedback_on_a_reply_reaches_the_learned_index(e2e: E2E, client: openai.OpenAI, http: httpx.Client) -> None:
    """The scorer's reply carries the prompt embedding, the gateway stores it with the decision,
    and the scorer's loader turns feedback on that reply into a learned-index outcome."""
    rid = request_id()
    raw = client.chat.completions.with_raw_response.create(
        model=VIRTUAL,
        messages=[{"role": "user", "content": "Name three rivers in Europe and their lengths."}],
        extra_headers={"X-Request-Id": rid},
    )
    completion = raw.parse()
    stored = decision(e2e, rid)
    assert isinstance(stored["analysis"].get("embedding"), str), stored["analysis"]
    assert decode_embedding(stored["analysis"]["embedding"]).shape == (default_embedder().dims,)
    r = http.post("/v1/feedback", json={"response_id": completion.id, "score": -1.0})
    assert r.status_code == 202, r.text

    async def load() -> tuple[int, int, bool]:
        async with engine_scope(e2e.database_url) as engine, make_sessionmaker(engine)() as session:
            ours = await session.scalar(select(func.count()).where(Feedback.response_id == completion.id))
            with_embedding = await session.scalar(
                select(func.count())
                .select_from(Feedback)
                .join(RoutingDecision, RoutingDecision.response_id == Feedback.response_id)
                .where(RoutingDecision.analysis["embedding"].as_string().is_not(None))
            )
            summary = await load_feedback(session, LearnedIndex(default_embedder().dims))
            return summary.outcomes, int(with_embedding or 0), bool(ours)

    def stored_feedback() -> tuple[int, int, bool] | None:
        got = asyncio.run(load())
        return got if got[2] else None

    outcomes, with_embedding, _ = eventually(stored_feedback, what="the feedback row")
    assert outcomes == with_embedding >= 1
