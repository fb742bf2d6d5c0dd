"""Responses and Messages API <-> chat translation: requests, whole replies, and the event
sequences of streams with reasoning, text and tool-call fragments."""

from __future__ import annotations

import orjson
import pytest

from turnout.common.backends.anthropic_api import ChatToMessagesStream, chat_to_message, messages_request_to_chat
from turnout.common.backends.responses_api import ChatToResponsesStream, chat_to_response, responses_request_to_chat
from turnout.common.errors import TranslationError


def events(raw: bytes) -> list[tuple[str, dict]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        head, data = block.split("\n", 1)
        out.append((head.removeprefix("event: "), orjson.loads(data.removeprefix("data: "))))
    return out


def chunk(delta: dict, finish: str | None = None) -> dict:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


STREAM = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"reasoning_content": "hmm"}),
    chunk({"content": "Calling."}),
    chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "get_weather", "arguments": '{"ci'}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]}),
    chunk({}, "tool_calls"),
    {"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}},
]


# --- Responses -------------------------------------------------------------------------------------


def test_responses_request_items_become_chat_messages():
    body = responses_request_to_chat(
        {
            "model": "m",
            "instructions": "be brief",
            "input": [
                {
                    "role": "user",
                    "content": [{"type": "input_text", "text": "hi"}, {"type": "input_image", "image_url": "data:x"}],
                },
                {"role": "assistant", "content": [{"type": "output_text", "text": "calling"}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "ok"},
                {"type": "reasoning", "id": "rs_1", "summary": []},
            ],
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "f"},
            "max_output_tokens": 9,
            "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}}},
        }
    )
    assert body == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:x"}}],
            },
            {"role": "assistant", "content": "calling"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        ],
        "max_tokens": 9,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}}},
    }


@pytest.mark.parametrize(
    ("req", "message"),
    [
        ({"input": "x", "previous_response_id": "resp_1"}, "previous_response_id is not supported"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "only function tools"),
        ({"input": [{"type": "input_file"}]}, "input items of type 'input_file'"),
        ({"input": []}, "at least one message"),
    ],
)
def test_responses_requests_chat_models_cannot_serve_are_refused(req, message):
    with pytest.raises(TranslationError, match=message):
        responses_request_to_chat(req)


def test_responses_whole_reply_with_reasoning_text_and_a_call():
    data = {
        "choices": [
            {
                "message": {
                    "content": "Calling.",
                    "reasoning_content": "hmm",
                    "tool_calls": [{"id": "call_1", "function": {"name": "f", "arguments": "{}"}}],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
    }
    out = chat_to_response(data, {}, response_id="resp_1", model="m", created=5)
    assert [o["type"] for o in out["output"]] == ["reasoning", "message", "function_call"]
    assert out["output"][0]["summary"] == [{"type": "summary_text", "text": "hmm"}]
    assert out["output"][2] | {"id": "x"} == {
        "type": "function_call",
        "id": "x",
        "call_id": "call_1",
        "name": "f",
        "arguments": "{}",
        "status": "completed",
    }
    assert (out["status"], out["usage"]["total_tokens"]) == ("completed", 5)


def test_responses_stream_events_for_reasoning_text_and_a_streamed_call():
    t = ChatToResponsesStream({}, response_id="resp_1", model="m", created=5)
    raw = b"".join(t.feed(c) for c in STREAM) + t.finish()
    evs = events(raw)
    assert [name for name, _ in evs] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [d["sequence_number"] for _, d in evs] == list(range(len(evs)))
    assert all(d["type"] == name for name, d in evs)
    done = evs[-1][1]["response"]
    assert [o["type"] for o in done["output"]] == ["reasoning", "message", "function_call"]
    assert done["output"][2]["arguments"] == '{"city": "Paris"}' and done["output"][2]["call_id"] == "call_1"
    assert done["usage"]["input_tokens"] == 10


# --- Messages --------------------------------------------------------------------------------------


def test_messages_request_blocks_become_chat_messages():
    body = messages_request_to_chat(
        {
            "model": "m",
            "max_tokens": 5,
            "system": [{"type": "text", "text": "be brief"}],
            "messages": [
                {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://x/i.png"}}]},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "t", "signature": "s"},
                        {"type": "tool_use", "id": "tu1", "name": "f", "input": {"a": 1}},
                    ],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "tu1", "content": "boom", "is_error": True}],
                },
            ],
            "tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
            "stop_sequences": ["END"],
            "top_k": 3,
        }
    )
    assert body == {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/i.png"}}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "tu1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}],
            },
            {"role": "tool", "tool_call_id": "tu1", "content": "Error: boom"},
        ],
        "max_tokens": 5,
        "model": "m",
        "top_k": 3,
        "stop": ["END"],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "parallel_tool_calls": False,
    }


def test_messages_whole_reply_maps_stop_reasons_and_tool_input():
    data = {
        "choices": [
            {
                "message": {
                    "content": None,
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": '{"x": 2}'}}],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
    }
    msg = chat_to_message(data, message_id="msg_1", model="m", thinking=False)
    assert msg["content"] == [{"type": "tool_use", "id": "c", "name": "f", "input": {"x": 2}}]
    assert (msg["stop_reason"], msg["usage"]["input_tokens"]) == ("tool_use", 3)


def test_messages_stream_events_for_thinking_text_and_a_streamed_call():
    t = ChatToMessagesStream(message_id="msg_1", model="m", thinking=True, input_tokens=7)
    evs = events(b"".join(t.feed(c) for c in STREAM) + t.finish())
    assert [(name, d.get("index"), (d.get("delta") or {}).get("type")) for name, d in evs] == [
        ("message_start", None, None),
        ("ping", None, None),
        ("content_block_start", 0, None),
        ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "signature_delta"),
        ("content_block_stop", 0, None),
        ("content_block_start", 1, None),
        ("content_block_delta", 1, "text_delta"),
        ("content_block_stop", 1, None),
        ("content_block_start", 2, None),
        ("content_block_delta", 2, "input_json_delta"),
        ("content_block_delta", 2, "input_json_delta"),
        ("content_block_stop", 2, None),
        ("message_delta", None, None),
        ("message_stop", None, None),
    ]
    assert evs[9][1]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}
    assert evs[-2][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert evs[-2][1]["usage"] == {"input_tokens": 10, "output_tokens": 4}


def test_messages_stream_without_thinking_drops_reasoning():
    t = ChatToMessagesStream(message_id="msg_1", model="m", thinking=False)
    evs = events(b"".join(t.feed(c) for c in STREAM[:3]) + t.finish())
    starts = [d["content_block"]["type"] for name, d in evs if name == "content_block_start"]
    assert starts == ["text"]
