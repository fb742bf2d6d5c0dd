"""Request checks, routing features and quality parsing."""

from __future__ import annotations

import pytest

from turnout.common.schemas.route import RequestKind
from turnout.gateway.errors import InvalidRequest, InvalidType
from turnout.gateway.routing import chat_features, completion_features, embedding_features, parse_quality
from turnout.gateway.validation import check_chat, check_completion, check_embeddings, check_ollama_chat

MSG = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("body", "exc", "param"),
    [
        ({}, InvalidRequest, "messages"),
        ({"messages": {}}, InvalidType, "messages"),
        ({"messages": []}, InvalidRequest, "messages"),
        ({"messages": ["hi"]}, InvalidType, "messages[0]"),
        ({"messages": [{"content": "x"}]}, InvalidRequest, "messages[0].role"),
        ({"messages": [{"role": 1}]}, InvalidType, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, InvalidType, "messages[0].content"),
        ({"messages": MSG, "stream": "yes"}, InvalidType, "stream"),
        ({"messages": MSG, "max_tokens": 1.5}, InvalidType, "max_tokens"),
        ({"messages": MSG, "max_tokens": 0}, InvalidRequest, "max_tokens"),
        ({"messages": MSG, "n": False}, InvalidType, "n"),
        ({"messages": MSG, "stop": 3}, InvalidType, "stop"),
        ({"messages": MSG, "tools": {}}, InvalidType, "tools"),
        ({"messages": MSG, "model": 3}, InvalidType, "model"),
    ],
)
def test_bad_chat_bodies(body, exc, param):
    with pytest.raises(exc) as info:
        check_chat(body)
    assert type(info.value) is exc
    assert info.value.param == param


def test_good_bodies_pass_and_unknown_fields_are_allowed():
    check_chat({"messages": MSG, "temperature": 1, "stop": None, "custom_field": {"x": 1}, "max_tokens": 3})
    check_completion({"prompt": "x", "max_tokens": 2})
    check_embeddings({"input": ["a"], "encoding_format": "base64"})
    check_ollama_chat({"model": "m", "messages": MSG, "options": {}})
    with pytest.raises(InvalidRequest):
        check_embeddings({"input": "a", "encoding_format": "int8"})


@pytest.mark.parametrize(
    ("body", "exc", "param"),
    [
        ({"input": ""}, InvalidRequest, "input"),
        ({"input": []}, InvalidRequest, "input"),
        ({"input": ["a", ""]}, InvalidRequest, "input[1]"),
        ({"input": [None]}, InvalidType, "input[0]"),
        ({"input": ["a", {"text": "b"}]}, InvalidType, "input[1]"),
        ({"input": [[1, "2"]]}, InvalidType, "input[0]"),
        ({"input": [True]}, InvalidType, "input[0]"),
        ({"input": "a", "dimensions": 0}, InvalidRequest, "dimensions"),
    ],
)
def test_bad_embedding_inputs(body, exc, param):
    with pytest.raises(exc) as e:
        check_embeddings(body)
    assert type(e.value) is exc and e.value.param == param


def test_embedding_inputs_of_every_documented_form_pass():
    for value in ("a", ["a", "b"], [1, 2, 3], [[1, 2], [3]]):
        check_embeddings({"input": value})


def test_chat_features():
    body = {
        "messages": [
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {}}]},
        ],
        "tools": [{"type": "function"}],
        "response_format": {"type": "json_schema"},
        "max_completion_tokens": 50,
    }
    f = chat_features(body, 8000)
    assert f["kind"] is RequestKind.CHAT
    assert (f["text"], f["system_chars"], f["n_messages"]) == ("look", 7, 4)
    assert (f["has_images"], f["has_tools"], f["json_mode"], f["max_tokens"]) == (True, True, True, 50)
    assert f["est_prompt_tokens"] == (7 + 5 + 2 + 4 + len(str(body["tools"]))) // 4 + 16
    assert chat_features({**body, "tool_choice": "none"}, 8000)["has_tools"] is False


def test_prompt_text_is_bounded_to_its_end():
    f = chat_features({"messages": [{"role": "user", "content": "a" * 100 + "END"}]}, 10)
    assert f["text"] == "aaaaaaaEND"
    assert completion_features({"prompt": ["abc", "def"]}, 5)["text"] == "c\ndef"
    e = embedding_features({"input": ["hello", "world!"]}, 3)
    assert (e["kind"], e["text"], e["n_messages"], e["est_prompt_tokens"]) == (RequestKind.EMBEDDING, "hel", 2, 2)


def test_embedding_input_as_token_ids_says_so_and_counts_its_ids():
    assert embedding_features({"input": "hello"}, 10)["token_input"] is False
    assert embedding_features({"input": ["hello", "world"]}, 10)["token_input"] is False
    one = embedding_features({"input": [101, 7592, 102]}, 10)
    assert (one["token_input"], one["text"], one["n_messages"], one["est_prompt_tokens"]) == (True, "", 1, 3)
    several = embedding_features({"input": [[101, 7592], [102]]}, 10)
    assert (several["token_input"], several["n_messages"], several["est_prompt_tokens"]) == (True, 2, 3)


def test_quality_from_header_or_body():
    assert parse_quality("0.25", {}) == 0.25
    assert parse_quality(None, {"turnout": {"quality": 1}}) == 1.0
    assert parse_quality("0", {"turnout": {"quality": 1}}) == 0.0
    assert parse_quality(None, {}) is None
    for header, body in (
        ("x", {}),
        ("1.5", {}),
        (None, {"turnout": {"quality": "high"}}),
        (None, {"turnout": 1}),
    ):
        with pytest.raises(InvalidRequest):
            parse_quality(header, body)
