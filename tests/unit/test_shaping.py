"""Response shaping: reasoning blocks, JSON fences and signatures, whole and streamed — with the
stream cut at every character boundary (and into single characters)."""

from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from turnout.gateway.shaping import (
    FenceScrubber,
    ReasoningMode,
    ReasoningSplitter,
    RequestShaping,
    ShapingOptions,
    ShapingOverride,
    scrub_fences,
)

TAGS = ("think", "thinking")
THOUGHT = "<think>\nThe user greets me. 2 < 3 holds.\n</think>\n\nHello <b>there</b>!"


def split_all(text: str, cuts: list[int]) -> tuple[str, str]:
    s = ReasoningSplitter(TAGS)
    content, reasoning = [], []
    prev = 0
    for cut in [*cuts, len(text)]:
        c, r = s.feed(text[prev:cut])
        content.append(c)
        reasoning.append(r)
        prev = cut
    c, r = s.finish()
    return "".join(content) + c, "".join(reasoning) + r


def test_reasoning_block_is_split_from_the_answer_whole():
    assert split_all(THOUGHT, []) == ("Hello <b>there</b>!", "The user greets me. 2 < 3 holds.\n")


@pytest.mark.parametrize("cut", range(len(THOUGHT) + 1))
def test_reasoning_split_is_the_same_at_every_single_cut(cut):
    assert split_all(THOUGHT, [cut]) == ("Hello <b>there</b>!", "The user greets me. 2 < 3 holds.\n")


def test_reasoning_split_one_character_at_a_time():
    assert split_all(THOUGHT, list(range(1, len(THOUGHT)))) == (
        "Hello <b>there</b>!",
        "The user greets me. 2 < 3 holds.\n",
    )


@pytest.mark.parametrize("cut", range(1, 40))
def test_thinking_tag_and_text_around_it_at_every_cut(cut):
    text = "Before. <thinking>plan</thinking> After <thin"
    assert split_all(text, [cut]) == ("Before. After <thin", "plan")


def test_unterminated_block_is_reasoning_to_the_end():
    assert split_all("<think>still going", [3, 9]) == ("", "still going")


def test_text_that_only_looks_like_a_tag_is_content():
    assert split_all("a <thin ice> and <thinker> b", [4]) == ("a <thin ice> and <thinker> b", "")


FENCED = '```json\n{"answer": "x `y`"}\n```\n'


@pytest.mark.parametrize("cut", range(len(FENCED) + 1))
def test_json_fence_is_scrubbed_at_every_cut(cut):
    s = FenceScrubber()
    out = s.feed(FENCED[:cut]) + s.feed(FENCED[cut:]) + s.finish()
    assert out == '{"answer": "x `y`"}'


def test_json_fence_scrubbed_one_character_at_a_time():
    s = FenceScrubber()
    out = "".join(s.feed(ch) for ch in FENCED) + s.finish()
    assert out == '{"answer": "x `y`"}'


@pytest.mark.parametrize("text", ['{"a": 1}', "  `code` is not a fence", "``x", ""])
def test_unfenced_text_passes_unchanged(text):
    s = FenceScrubber()
    out = "".join(s.feed(ch) for ch in text) + s.finish()
    assert out == text


def test_whole_reply_fence_inside_prose_is_extracted():
    assert scrub_fences('Here you go:\n```json\n{"a": 1}\n```\nEnjoy.') == '{"a": 1}'
    assert scrub_fences('{"a": 1}') == '{"a": 1}'


# --- the shaper on OpenAI objects ----------------------------------------------------------------


def chat_reply(content: str) -> dict:
    return {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
    }


def stream_of(text: str, size: int) -> list[dict]:
    chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    for i in range(0, len(text), size):
        chunks.append({"choices": [{"index": 0, "delta": {"content": text[i : i + size]}, "finish_reason": None}]})
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    chunks.append({"choices": [], "usage": {"prompt_tokens": 1}})
    return chunks


def collect(chunks: list[dict | None]) -> tuple[str, str]:
    chunks = [c for c in chunks if c is not None]
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c["choices"])
    return content, reasoning


def test_default_options_separate_reasoning_into_reasoning_content():
    shaper = ShapingOptions().resolve(RequestShaping(), model="m", backend="b")
    msg = shaper.whole(chat_reply(THOUGHT))["choices"][0]["message"]
    assert msg == {
        "role": "assistant",
        "content": "Hello <b>there</b>!",
        "reasoning_content": "The user greets me. 2 < 3 holds.",
    }


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 100])
def test_streamed_reply_separates_reasoning_at_any_chunk_size(size):
    shaper = ShapingOptions().resolve(RequestShaping(), model="m", backend="b")
    out = [shaper.chunk(c) for c in stream_of(THOUGHT, size)]
    assert collect(out) == ("Hello <b>there</b>!", "The user greets me. 2 < 3 holds.\n")
    assert out[-1] == {"choices": [], "usage": {"prompt_tokens": 1}}


def test_strip_drops_reasoning_and_upstream_reasoning_content():
    opts = ShapingOptions(reasoning=ReasoningMode.STRIP)
    shaper = opts.resolve(RequestShaping(), model="m", backend="b")
    reply = chat_reply(THOUGHT)
    reply["choices"][0]["message"]["reasoning_content"] = "native"
    assert shaper.whole(reply)["choices"][0]["message"] == {"role": "assistant", "content": "Hello <b>there</b>!"}


def test_keep_leaves_the_reply_untouched():
    shaper = ShapingOptions(reasoning=ReasoningMode.KEEP).resolve(RequestShaping(), model="m", backend="b")
    assert not shaper.active
    chunks = stream_of(THOUGHT, 4)
    assert [shaper.chunk(copy.deepcopy(c)) for c in chunks] == chunks


def test_chunks_left_empty_by_shaping_are_dropped_and_reasoning_deltas_carry_no_content():
    shaper = ShapingOptions().resolve(RequestShaping(), model="m", backend="b")
    out = [shaper.chunk(c) for c in stream_of("<think>ab</think>c", 3)]
    assert [c["choices"][0]["delta"] if c and c["choices"] else c for c in out] == [
        {"role": "assistant", "content": ""},
        None,  # "<th"
        None,  # "ink"
        {"reasoning_content": "ab"},  # ">ab": the tag is complete
        None,  # "</t"
        None,  # "hin"
        {"content": "c"},  # "k>c"
        {},  # the finish chunk
        {"choices": [], "usage": {"prompt_tokens": 1}},
    ]


def test_no_think_in_the_prompt_and_ollama_think_false_strip():
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi /no_think"}]}]}
    req = RequestShaping.of(body)
    assert req.no_think is True
    shaper = ShapingOptions().resolve(req, model="m", backend="b")
    assert shaper.reasoning is ReasoningMode.STRIP
    off = ShapingOptions().resolve(RequestShaping(think=False), model="m", backend="b")
    assert off.reasoning is ReasoningMode.STRIP
    on = ShapingOptions(reasoning=ReasoningMode.KEEP).resolve(RequestShaping(think=True), model="m", backend="b")
    assert on.reasoning is ReasoningMode.SEPARATE
    ignored = ShapingOptions(honour_no_think=False).resolve(req, model="m", backend="b")
    assert ignored.reasoning is ReasoningMode.SEPARATE


def test_json_fences_scrubbed_only_when_json_was_asked():
    asked = RequestShaping.of({"messages": [], "response_format": {"type": "json_object"}})
    not_asked = RequestShaping.of({"messages": []})
    opts = ShapingOptions()
    fenced = '<think>hmm</think>```json\n{"a": 1}\n```'
    assert (
        opts.resolve(asked, model="m", backend="b").whole(chat_reply(fenced))["choices"][0]["message"]["content"]
        == '{"a": 1}'
    )
    assert (
        opts.resolve(not_asked, model="m", backend="b").whole(chat_reply(fenced))["choices"][0]["message"]["content"]
        == '```json\n{"a": 1}\n```'
    )
    streamed = opts.resolve(asked, model="m", backend="b")
    assert collect([streamed.chunk(c) for c in stream_of(fenced, 3)]) == ('{"a": 1}', "hmm")


def test_signature_appended_whole_and_streamed_but_not_to_json():
    opts = ShapingOptions(signature="-- {model} via {backend}")
    whole = opts.resolve(RequestShaping(), model="llama3.1:8b", backend="gpu-1").whole(chat_reply("Hi"))
    assert whole["choices"][0]["message"]["content"] == "Hi\n\n-- llama3.1:8b via gpu-1"
    shaper = opts.resolve(RequestShaping(), model="m", backend="b")
    assert collect([shaper.chunk(c) for c in stream_of("Hi", 1)])[0] == "Hi\n\n-- m via b"
    json_req = RequestShaping(json=True)
    assert opts.resolve(json_req, model="m", backend="b").signature == ""


def test_model_rule_and_request_overrides_apply_in_order():
    opts = ShapingOptions.model_validate(
        {
            "models": {"qwen3*": {"reasoning": "keep"}},
            "rules": [
                {"match": {"key": "key-abc", "ip": "10.0.0.0/8"}, "reasoning": "strip", "signature": "sig"},
                {"match": {"model": "deepseek*"}, "reasoning_tags": ["reason"]},
            ],
        }
    )
    assert opts.resolve(RequestShaping(), model="qwen3:8b", backend="b").reasoning is ReasoningMode.KEEP
    by_rule = opts.resolve(RequestShaping(), model="qwen3:8b", backend="b", key="key-abc", ip="10.1.2.3")
    assert (by_rule.reasoning, by_rule.signature) == (ReasoningMode.STRIP, "sig")
    other_ip = opts.resolve(RequestShaping(), model="qwen3:8b", backend="b", key="key-abc", ip="192.168.1.1")
    assert other_ip.reasoning is ReasoningMode.KEEP
    assert opts.resolve(RequestShaping(), model="deepseek-r1", backend="b").tags == ("reason",)
    req = RequestShaping(override=ShapingOverride(reasoning=ReasoningMode.SEPARATE, signature=""))
    mine = opts.resolve(req, model="qwen3:8b", backend="b", key="key-abc", ip="10.1.2.3")
    assert (mine.reasoning, mine.signature) == (ReasoningMode.SEPARATE, "")


def test_bad_options_are_rejected():
    with pytest.raises(ValidationError, match="bare tag name"):
        ShapingOptions(reasoning_tags=["<think>"])
    with pytest.raises(ValidationError, match="at least one of"):
        ShapingOptions.model_validate({"rules": [{"match": {}}]})
    with pytest.raises(ValidationError):
        RequestShaping.of({"turnout": {"shaping": {"reasoning": "maybe"}}})


def test_cache_key_names_the_client_rules_and_the_request_override():
    opts = ShapingOptions.model_validate(
        {"rules": [{"match": {"ip": "10.0.0.0/8"}, "reasoning": "strip"}, {"match": {"model": "q*"}, "signature": "s"}]}
    )
    assert opts.cache_key(RequestShaping(), key=None, ip="10.0.0.1") == [[0, 1], None]
    assert opts.cache_key(RequestShaping(), key="key-x", ip="192.168.0.1") == [[1], None]
    req = RequestShaping(override=ShapingOverride(reasoning=ReasoningMode.KEEP))
    assert opts.cache_key(req, key=None, ip=None) == [[1], {"reasoning": "keep"}]
