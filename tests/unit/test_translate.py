"""OpenAI <-> Ollama dialect translation, both ways: requests, whole replies, streams, usage."""

from __future__ import annotations

import pytest

from turnout.common.backends.translate import (
    OllamaChatStream,
    OllamaGenerateStream,
    OpenAIToOllamaStream,
    chat_request_to_ollama,
    completion_request_to_ollama,
    decode_embedding_base64,
    embeddings_request_to_ollama,
    encode_embedding_base64,
    ollama_chat_request_to_openai,
    ollama_chat_to_openai,
    ollama_embed_request_to_openai,
    ollama_embed_to_openai,
    ollama_generate_request_to_openai,
    ollama_generate_to_openai,
    openai_chat_to_ollama,
    openai_completion_to_ollama,
    openai_embeddings_to_ollama,
    usage_from_ollama,
)
from turnout.common.errors import TranslationError

PNG = "iVBORw0KGgoAAAANSUhEUg=="
JPEG = "/9j/4AAQSkZJRg=="
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


# --- OpenAI request -> Ollama request ----------------------------------------------------------


def test_chat_request_maps_options_images_tools_and_json_mode():
    body = {
        "model": "turnout/auto",
        "messages": [
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is"},
                    {"type": "text", "text": "this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            },
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "max_completion_tokens": 100,
        "max_tokens": 5,
        "stop": "END",
        "seed": 3,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "tools": [TOOL],
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "user": "ignored",
        "n": 1,
    }
    assert chat_request_to_ollama(body, "llava:7b", stream=True) == {
        "model": "llava:7b",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "what is\nthis?", "images": [PNG]},
        ],
        "stream": True,
        "options": {
            "temperature": 0.2,
            "top_p": 0.9,
            "seed": 3,
            "presence_penalty": 0.1,
            "frequency_penalty": 0.2,
            "num_predict": 100,
            "stop": ["END"],
        },
        "tools": [TOOL],
        "format": "json",
    }


def test_chat_request_json_schema_becomes_the_format_and_tool_choice_none_drops_tools():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = {
        "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
        "tools": [TOOL],
        "tool_choice": "none",
    }
    req = chat_request_to_ollama(body, "m", stream=False)
    assert req["format"] == schema
    assert "tools" not in req
    assert "options" not in req


def test_chat_request_tool_round_trip_messages():
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    req = chat_request_to_ollama({"messages": messages}, "m", stream=False)
    assert req["messages"] == [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ]


def test_remote_image_urls_and_bad_tool_arguments_cannot_be_translated():
    remote = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}
    with pytest.raises(TranslationError, match="data: URLs"):
        chat_request_to_ollama({"messages": [remote]}, "m", stream=False)
    bad = {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{not json"}}]}
    with pytest.raises(TranslationError, match="not valid JSON"):
        chat_request_to_ollama({"messages": [bad]}, "m", stream=False)


def test_completion_and_embedding_requests():
    assert completion_request_to_ollama({"prompt": ["Hi"], "max_tokens": 4, "stop": ["\n"]}, "m", stream=False) == {
        "model": "m",
        "prompt": "Hi",
        "stream": False,
        "options": {"num_predict": 4, "stop": ["\n"]},
    }
    with pytest.raises(TranslationError):
        completion_request_to_ollama({"prompt": ["a", "b"]}, "m", stream=False)
    assert embeddings_request_to_ollama({"input": ["a", "b"], "dimensions": 64}, "e") == {
        "model": "e",
        "input": ["a", "b"],
        "dimensions": 64,
    }
    with pytest.raises(TranslationError, match="token arrays"):
        embeddings_request_to_ollama({"input": [[1, 2, 3]]}, "e")


# --- Ollama reply -> OpenAI reply --------------------------------------------------------------

DONE = {"done": True, "done_reason": "stop", "prompt_eval_count": 9, "eval_count": 5}


def test_whole_chat_reply_with_usage():
    data = {"model": "m", "message": {"role": "assistant", "content": "Hello"}, **DONE}
    assert ollama_chat_to_openai(data, response_id="chatcmpl-1", model="pub", created=100) == {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 100,
        "model": "pub",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello"},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14},
    }


def test_whole_chat_reply_with_tool_calls_and_length_stop():
    data = {
        "message": {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}],
        },
        **DONE,
    }
    choice = ollama_chat_to_openai(data, response_id="r", model="p")["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"] == {"name": "f", "arguments": '{"a":1}'}
    truncated = ollama_chat_to_openai(
        {**DONE, "done_reason": "length", "message": {"content": "x"}}, response_id="r", model="p"
    )
    assert truncated["choices"][0]["finish_reason"] == "length"


def test_whole_generate_and_embed_replies():
    out = ollama_generate_to_openai({"response": " world", **DONE}, response_id="cmpl-1", model="p", created=5)
    assert out["object"] == "text_completion"
    assert out["choices"][0]["text"] == " world"
    assert out["usage"]["total_tokens"] == 14
    emb = {"embeddings": [[0.5, -0.25], [1.0, 2.0]], "prompt_eval_count": 3}
    assert ollama_embed_to_openai(emb, model="e") == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.5, -0.25]},
            {"object": "embedding", "index": 1, "embedding": [1.0, 2.0]},
        ],
        "model": "e",
        "usage": {"prompt_tokens": 3, "total_tokens": 3},
    }
    b64 = ollama_embed_to_openai(emb, model="e", encoding_format="base64")
    assert decode_embedding_base64(b64["data"][1]["embedding"]) == [1.0, 2.0]
    assert encode_embedding_base64([0.5]) == "AAAAPw=="


def test_chat_stream_translation_role_first_usage_last():
    s = OllamaChatStream(response_id="chatcmpl-9", model="pub", created=7)
    chunks = []
    for piece in ("Hel", "lo"):
        chunks += s.feed({"message": {"role": "assistant", "content": piece}, "done": False})
    chunks += s.feed({"message": {"role": "assistant", "content": ""}, **DONE})
    assert [c["choices"][0]["delta"] if c["choices"] else None for c in chunks] == [
        {"role": "assistant", "content": "Hel"},
        {"content": "lo"},
        {},
        None,
    ]
    assert {c["id"] for c in chunks} == {"chatcmpl-9"}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[3]["usage"] == {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}
    assert s.done and s.usage == chunks[3]["usage"]


def test_chat_stream_tool_calls_get_indexes_and_finish_reason():
    s = OllamaChatStream(response_id="r", model="p")
    calls = [{"function": {"name": "a", "arguments": {}}}, {"function": {"name": "b", "arguments": {"x": 1}}}]
    chunks = s.feed({"message": {"role": "assistant", "content": "", "tool_calls": calls}, "done": False})
    chunks += s.feed({"message": {"content": ""}, **DONE})
    deltas = chunks[0]["choices"][0]["delta"]
    assert [(t["index"], t["function"]["name"], t["function"]["arguments"]) for t in deltas["tool_calls"]] == [
        (0, "a", "{}"),
        (1, "b", '{"x":1}'),
    ]
    assert chunks[1]["choices"][0]["finish_reason"] == "tool_calls"


def test_stream_error_lines_raise():
    with pytest.raises(TranslationError, match="model not found"):
        OllamaChatStream(response_id="r", model="p").feed({"error": "model not found"})


def test_generate_stream_translation():
    s = OllamaGenerateStream(response_id="cmpl-1", model="p", created=1)
    chunks = s.feed({"response": "Hi", "done": False}) + s.feed({"response": "", **DONE})
    assert [c["choices"][0]["text"] if c["choices"] else None for c in chunks] == ["Hi", "", None]
    assert chunks[-1]["usage"]["completion_tokens"] == 5


def test_usage_from_ollama_defaults_to_zero():
    assert usage_from_ollama({}) == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


# --- Ollama request -> OpenAI request ----------------------------------------------------------


def test_ollama_chat_request_to_openai():
    body = {
        "model": "llava:7b",
        "messages": [
            {"role": "user", "content": "what?", "images": [PNG, JPEG]},
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]},
            {"role": "tool", "content": "42", "tool_name": "f"},
        ],
        "options": {"temperature": 0.1, "num_predict": 64, "stop": ["x"], "top_k": 20, "num_ctx": 4096},
        "format": "json",
        "tools": [TOOL],
    }
    out = ollama_chat_request_to_openai(body)
    assert out["stream"] is True  # Ollama streams unless told otherwise
    user, assistant, tool = out["messages"]
    assert user["content"] == [
        {"type": "text", "text": "what?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{JPEG}"}},
    ]
    assert assistant["content"] is None
    assert assistant["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"a":1}'}
    assert tool == {"role": "tool", "content": "42", "tool_call_id": assistant["tool_calls"][0]["id"], "name": "f"}
    assert (out["temperature"], out["top_k"], out["max_tokens"], out["stop"]) == (0.1, 20, 64, ["x"])
    assert out["response_format"] == {"type": "json_object"}
    assert out["tools"] == [TOOL]
    schema = {"type": "object"}
    fmt = ollama_chat_request_to_openai({"messages": [], "format": schema, "stream": False})
    assert fmt["response_format"] == {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
    assert fmt["stream"] is False


def test_ollama_generate_and_embed_requests_to_openai():
    out = ollama_generate_request_to_openai({"model": "m", "prompt": "Hi", "system": "terse", "stream": False})
    assert out == {
        "model": "m",
        "messages": [{"role": "system", "content": "terse"}, {"role": "user", "content": "Hi"}],
        "stream": False,
    }
    assert ollama_embed_request_to_openai({"model": "e", "input": ["a"]}) == {
        "model": "e",
        "input": ["a"],
        "encoding_format": "float",
    }
    assert ollama_embed_request_to_openai({"model": "e", "prompt": "a"})["input"] == "a"


# --- OpenAI reply -> Ollama reply --------------------------------------------------------------

USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def test_openai_whole_replies_to_ollama():
    chat = {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": USAGE,
    }
    out = openai_chat_to_ollama(chat, model="pub", total_ns=123)
    assert out["message"] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}],
    }
    assert (out["done"], out["done_reason"], out["prompt_eval_count"], out["eval_count"], out["total_duration"]) == (
        True, "stop", 7, 3, 123,
    )  # fmt: skip
    gen = openai_completion_to_ollama(
        {"choices": [{"text": "yo", "finish_reason": "length"}], "usage": USAGE}, model="p"
    )
    assert (gen["response"], gen["done_reason"]) == ("yo", "length")
    from_chat = openai_completion_to_ollama({"choices": [{"message": {"content": "hey"}}]}, model="p")
    assert from_chat["response"] == "hey"
    emb = {
        "data": [{"index": 1, "embedding": encode_embedding_base64([2.0])}, {"index": 0, "embedding": [1.0]}],
        "usage": USAGE,
    }
    assert openai_embeddings_to_ollama(emb, model="e")["embeddings"] == [[1.0], [2.0]]


def test_openai_stream_to_ollama_lines_and_done():
    s = OpenAIToOllamaStream(model="pub")
    lines = []
    lines += s.feed({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    lines += s.feed({"choices": [{"index": 0, "delta": {"content": "Hi"}}]})
    lines += s.feed(
        {
            "choices": [
                {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": '{"a"'}}]}}
            ]
        }
    )
    lines += s.feed(
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}}]}
    )
    lines += s.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    lines += s.feed({"choices": [], "usage": USAGE})
    done = s.finish(total_ns=9)
    assert [line["message"]["content"] for line in lines] == ["Hi"]
    assert lines[0]["done"] is False and lines[0]["model"] == "pub"
    assert done["message"]["tool_calls"] == [{"function": {"name": "f", "arguments": {"a": 1}}}]
    assert (done["done"], done["prompt_eval_count"], done["eval_count"], done["total_duration"]) == (True, 7, 3, 9)


def test_openai_stream_to_ollama_generate_shape():
    s = OpenAIToOllamaStream(model="pub", generate=True)
    lines = s.feed({"choices": [{"index": 0, "delta": {"content": "Hi"}}]})
    lines += s.feed({"choices": [{"index": 0, "text": " there"}]})
    done = s.finish()
    assert [line["response"] for line in lines] == ["Hi", " there"]
    assert done["response"] == "" and done["done"] is True and "message" not in done
