"""The Responses and Messages APIs over a real socket, with the official ``openai`` and
``anthropic`` SDKs: text, streams (their exact event sequences), tools, images, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import httpx
import openai
import pytest

from tests.integration import test_gateway_fakes as fakes
from tests.integration.test_gateway_fakes import PNG_B64, REPLY_TEXT, FakeScorer, Fleet, fixed, run_gateway

pytestmark = pytest.mark.integration

fleet = fakes.fleet
make_settings = fakes.make_settings

ON_ALPHA = ("fake-8b", "alpha", "gpt-fake-8b")
ON_OLLA = ("llama3.2:3b", "olla", "llama3.2:3b")
TEXT = "".join(REPLY_TEXT)
WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}


class Sdk:
    """Makes the SDK clients of one test and closes them all after it (their httpx pools)."""

    def __init__(self) -> None:
        self.clients: list[openai.AsyncOpenAI | anthropic.AsyncAnthropic] = []

    def oai(self, url: str, key: str = "unused") -> openai.AsyncOpenAI:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=10)
        self.clients.append(client)
        return client

    def claude(self, url: str, key: str = "unused") -> anthropic.AsyncAnthropic:
        client = anthropic.AsyncAnthropic(base_url=url, api_key=key, max_retries=0, timeout=10)
        self.clients.append(client)
        return client


@pytest.fixture
async def sdk() -> AsyncIterator[Sdk]:
    made = Sdk()
    yield made
    for client in made.clients:
        await client.close()


# --- /v1/responses ------------------------------------------------------------------------------


async def test_responses_create_whole_and_streamed(sdk: Sdk, redis_url, keys, fleet: Fleet, make_settings):
    scorer = FakeScorer(redis_url, keys, fixed(ON_ALPHA))
    async with scorer.running(), run_gateway(make_settings()) as gw:
        client = sdk.oai(gw.url)
        raw = await client.responses.with_raw_response.create(
            model="turnout/auto", input="Say hello", instructions="be brief", max_output_tokens=50
        )
        whole = raw.parse()
        events = [e async for e in await client.responses.create(model="turnout/auto", input="Say hello", stream=True)]
        async with client.responses.stream(model="turnout/auto", input="Say hello") as stream:
            final = await stream.get_final_response()

    assert raw.headers["x-turnout-model"] == "fake-8b" and raw.headers["x-turnout-backend"] == "alpha"
    assert whole.id.startswith("resp_") and whole.status == "completed" and whole.model == "fake-8b"
    assert whole.output_text == TEXT
    assert whole.usage is not None and (whole.usage.input_tokens, whole.usage.output_tokens) == (7, 5)
    sent = fleet.alpha.received[0]
    assert sent["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "Say hello"},
    ]
    assert sent["max_tokens"] == 50
    assert scorer.seen[0].text == "Say hello"
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 5,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].response.output_text == TEXT and events[-1].response.usage.total_tokens == 12
    assert final.output_text == TEXT


async def test_responses_tools_round_trip_on_an_ollama_backend(sdk: Sdk, redis_url, keys, fleet: Fleet, make_settings):
    async with FakeScorer(redis_url, keys, fixed(ON_OLLA)).running(), run_gateway(make_settings()) as gw:
        client = sdk.oai(gw.url)
        first = await client.responses.create(model="turnout/auto", input="Weather in Paris?", tools=[WEATHER])
        call = first.output[0]
        second = await client.responses.create(
            model="turnout/auto",
            input=[
                {"role": "user", "content": "Weather in Paris?"},
                {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
                {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
            ],
        )

    assert call.type == "function_call" and (call.name, call.arguments) == ("get_weather", '{"city":"Paris"}')
    assert fleet.olla.received[0]["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    ]
    assert fleet.olla.received[1]["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ]
    assert second.output_text == TEXT


async def test_responses_images_and_refusals(sdk: Sdk, redis_url, keys, fleet: Fleet, make_settings):
    async with FakeScorer(redis_url, keys, fixed(ON_OLLA)).running(), run_gateway(make_settings()) as gw:
        client = sdk.oai(gw.url)
        image = {"type": "input_image", "image_url": f"data:image/png;base64,{PNG_B64}"}
        seen = await client.responses.create(
            model="turnout/auto",
            input=[{"role": "user", "content": [{"type": "input_text", "text": "what is it?"}, image]}],
        )
        with pytest.raises(openai.BadRequestError) as prev:
            await client.responses.create(model="turnout/auto", input="more", previous_response_id="resp_1")
        with pytest.raises(openai.BadRequestError) as builtin:
            await client.responses.create(model="turnout/auto", input="hi", tools=[{"type": "web_search"}])
        async with httpx.AsyncClient(base_url=gw.url) as http:
            missing = await http.post("/v1/responses", json={"model": "x"})

    assert seen.output_text == TEXT
    assert fleet.olla.received[0]["messages"] == [{"role": "user", "content": "what is it?", "images": [PNG_B64]}]
    assert prev.value.body == {
        "message": "previous_response_id is not supported: this gateway stores no responses; "
        "send the whole conversation in 'input'",
        "type": "invalid_request_error",
        "param": "previous_response_id",
        "code": "unsupported_parameter",
    }
    assert builtin.value.status_code == 400
    assert (missing.status_code, missing.json()["error"]["param"]) == (400, "input")
    assert len(fleet.olla.received) == 1


# --- /v1/messages ---------------------------------------------------------------------------------


async def test_messages_create_whole_and_streamed(sdk: Sdk, redis_url, keys, fleet: Fleet, make_settings):
    scorer = FakeScorer(redis_url, keys, fixed(ON_ALPHA))
    async with scorer.running(), run_gateway(make_settings()) as gw:
        client = sdk.claude(gw.url)
        raw = await client.messages.with_raw_response.create(
            model="turnout/auto",
            max_tokens=64,
            system="be brief",
            stop_sequences=["END"],
            messages=[{"role": "user", "content": "Say hello"}],
        )
        whole = await raw.parse()
        async with client.messages.stream(
            model="turnout/auto", max_tokens=64, messages=[{"role": "user", "content": "Say hello"}]
        ) as stream:
            types = [e.type async for e in stream]
            final = await stream.get_final_message()

    assert raw.headers["x-turnout-model"] == "fake-8b"
    assert whole.id.startswith("msg_") and whole.model == "fake-8b" and whole.stop_reason == "end_turn"
    assert [b.type for b in whole.content] == ["text"] and whole.content[0].text == TEXT
    assert (whole.usage.input_tokens, whole.usage.output_tokens) == (7, 5)
    assert fleet.alpha.received[0]["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "Say hello"},
    ]
    assert (fleet.alpha.received[0]["max_tokens"], fleet.alpha.received[0]["stop"]) == (64, ["END"])
    # the SDK's stream adds a "text" event per text delta
    assert [t for t in types if t != "text"] == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 5,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert final.content[0].type == "text" and final.content[0].text == TEXT
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 5


async def test_messages_tools_and_images_on_an_ollama_backend(sdk: Sdk, redis_url, keys, fleet: Fleet, make_settings):
    tool = {"name": "get_weather", "description": "weather", "input_schema": {"type": "object"}}
    async with FakeScorer(redis_url, keys, fixed(ON_OLLA)).running(), run_gateway(make_settings()) as gw:
        client = sdk.claude(gw.url)
        used = await client.messages.create(
            model="turnout/auto",
            max_tokens=64,
            tools=[tool],
            tool_choice={"type": "any"},
            messages=[{"role": "user", "content": "Weather in Paris?"}],
        )
        block = used.content[0]
        answered = await client.messages.create(
            model="turnout/auto",
            max_tokens=64,
            messages=[
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [block.model_dump()]},
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": block.id, "content": "sunny"},
                        {"type": "text", "text": "and this?"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
                    ],
                },
            ],
        )

    assert used.stop_reason == "tool_use"
    assert block.type == "tool_use" and (block.name, block.input) == ("get_weather", {"city": "Paris"})
    assert fleet.olla.received[0]["tools"] == [
        {
            "type": "function",
            "function": {"name": "get_weather", "parameters": {"type": "object"}, "description": "weather"},
        }
    ]
    assert fleet.olla.received[1]["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
        {"role": "user", "content": "and this?", "images": [PNG_B64]},
    ]
    assert answered.content[0].text == TEXT


async def test_messages_errors_and_keys_in_anthropic_shape(sdk: Sdk, redis_url, keys, fleet: Fleet, make_settings):
    scorer = FakeScorer(redis_url, keys, fixed(ON_ALPHA))
    async with scorer.running(), run_gateway(make_settings(api_keys=["k-anthropic-1"])) as gw:
        ok = await sdk.claude(gw.url, "k-anthropic-1").messages.create(
            model="turnout/auto", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
        with pytest.raises(anthropic.AuthenticationError) as denied:
            await sdk.claude(gw.url, "wrong").messages.create(
                model="turnout/auto", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
            )
        async with httpx.AsyncClient(base_url=gw.url, headers={"x-api-key": "k-anthropic-1"}) as http:
            no_max = await http.post(
                "/v1/messages", json={"model": "m", "messages": [{"role": "user", "content": "x"}]}
            )
            bad_json = await http.post("/v1/messages", content=b"{", headers={"content-type": "application/json"})

    assert ok.content[0].text == TEXT
    assert denied.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "Incorrect API key provided"},
    }
    assert (no_max.status_code, no_max.json()) == (
        400,
        {"type": "error", "error": {"type": "invalid_request_error", "message": "'max_tokens' is a required property"}},
    )
    assert bad_json.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "request body is not valid JSON"},
    }


async def test_new_endpoints_are_in_the_openapi_schema(fleet: Fleet, make_settings):
    async with run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        spec = (await http.get("/openapi.json")).json()
    for path, method in [
        ("/v1/responses", "post"),
        ("/v1/messages", "post"),
        ("/api/show", "post"),
        ("/api/ps", "get"),
    ]:
        assert method in spec["paths"][path], path
    schemas = spec["components"]["schemas"]
    assert {"ResponsesRequest", "MessagesRequest", "ShowRequest"} <= set(schemas)
    assert schemas["MessagesRequest"]["required"] == ["model", "max_tokens", "messages"]
