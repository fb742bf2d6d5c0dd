"""The whole stack with the official ``openai`` (Responses API, reasoning model) and ``anthropic``
SDKs: the gateway translates both to chat and routes them like chat."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import openai
import pytest

from tests.e2e.conftest import E2E

pytestmark = pytest.mark.e2e

REASONER = "Qwen3-4B-Q4_K_M"
THOUGHT = "Let me think about this request step by step."


@pytest.fixture
def claude(e2e: E2E) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=e2e.gateway, api_key="unused", max_retries=0, timeout=30) as c:
        yield c


def test_responses_create_and_stream(client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(model="turnout/auto", input="Say hi.", instructions="Be brief.")
    whole = raw.parse()
    assert whole.status == "completed" and whole.output_text and whole.model == raw.headers["x-turnout-model"]
    events = list(client.responses.create(model="llama3.2:1b", input="Say hi.", stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == events[-1].response.output_text != ""


def test_responses_function_tools(client: openai.OpenAI) -> None:
    tool = {
        "type": "function",
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
    reply = client.responses.create(model="llama3.1:8b", input="What is the weather in Paris?", tools=[tool])
    calls = [o for o in reply.output if o.type == "function_call"]
    assert [c.name for c in calls] == ["get_weather"]
    assert set(json.loads(calls[0].arguments)) == {"city"}


def test_messages_create_and_stream(claude: anthropic.Anthropic) -> None:
    raw = claude.messages.with_raw_response.create(
        model="turnout/auto", max_tokens=100, system="Be brief.", messages=[{"role": "user", "content": "Say hi."}]
    )
    msg = raw.parse()
    assert msg.stop_reason == "end_turn" and msg.content[0].type == "text" and msg.content[0].text
    assert msg.model == raw.headers["x-turnout-model"]
    with claude.messages.stream(
        model="llama3.2:1b", max_tokens=100, messages=[{"role": "user", "content": "Say hi."}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == final.content[0].text != ""  # type: ignore[union-attr]


def test_messages_thinking_from_the_reasoning_model(claude: anthropic.Anthropic) -> None:
    msg = claude.messages.create(
        model=REASONER,
        max_tokens=200,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "Name three colors."}],
    )
    assert [b.type for b in msg.content] == ["thinking", "text"]
    assert msg.content[0].thinking == THOUGHT  # type: ignore[union-attr]
    assert "<think>" not in msg.content[1].text  # type: ignore[union-attr]


def test_reasoning_model_is_shaped_for_openai_clients(client: openai.OpenAI) -> None:
    ask = [{"role": "user", "content": "Name three colors."}]
    reply = client.chat.completions.create(model=REASONER, messages=ask)  # type: ignore[arg-type]
    assert "<think>" not in (reply.choices[0].message.content or "")
    assert (reply.choices[0].message.model_extra or {})["reasoning_content"] == THOUGHT
    chunks = list(client.chat.completions.create(model=REASONER, messages=ask, stream=True))  # type: ignore[arg-type]
    assert all(c.choices for c in chunks)  # no usage chunk unless include_usage is set
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == reply.choices[0].message.content
    as_json = client.chat.completions.create(
        model=REASONER,
        messages=ask,  # type: ignore[arg-type]
        response_format={"type": "json_object"},
    )
    assert set(json.loads(as_json.choices[0].message.content or "")) == {"answer"}  # fence scrubbed


def test_tagless_names_resolve_through_the_scorer(client: openai.OpenAI) -> None:
    ask = [{"role": "user", "content": "hi"}]
    raw = client.chat.completions.with_raw_response.create(model="qwen2.5-coder", messages=ask)  # type: ignore[arg-type]
    assert raw.headers["x-turnout-model"] == "qwen2.5-coder:7b"  # the only qwen2.5-coder in the fleet
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-family", messages=ask)  # type: ignore[arg-type]
