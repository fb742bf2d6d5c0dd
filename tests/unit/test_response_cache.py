import orjson
import pytest

from turnout.gateway.response_cache import Cached, cache_digest, eligible, replay_sse

MSGS = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("body", "header", "expected"),
    [
        ({"messages": MSGS, "temperature": 0}, None, True),
        ({"messages": MSGS, "seed": 7, "temperature": 0.9}, None, True),
        ({"messages": MSGS, "temperature": 0.7}, None, False),
        ({"messages": MSGS}, None, False),
        ({"messages": MSGS, "temperature": 0, "n": 3}, None, False),
        ({"messages": MSGS, "temperature": 0.7}, "on", True),
        ({"messages": MSGS, "temperature": 0}, "off", False),
        ({"messages": MSGS, "turnout": {"cache": True}}, None, True),
        ({"messages": MSGS, "temperature": 0, "turnout": {"cache": False}}, None, False),
    ],
)
def test_only_deterministic_requests_are_cached_by_default(body, header, expected):
    assert eligible(body, header) is expected


def test_cache_all_makes_every_single_choice_request_eligible():
    assert eligible({"messages": MSGS, "temperature": 1.0}, None, cache_all=True)


def test_key_covers_messages_params_model_and_quality_but_not_transport():
    base = {"model": "turnout/auto", "messages": MSGS, "temperature": 0}
    d = cache_digest("chat", base, model="turnout/auto", quality=0.5)
    assert d == cache_digest(
        "chat",
        {**base, "stream": True, "user": "u", "turnout": {"quality": 0.5}},
        model="turnout/auto",
        quality=0.5,
    )
    assert d != cache_digest(
        "chat", {**base, "messages": [{"role": "user", "content": "hello"}]}, model="turnout/auto", quality=0.5
    )
    assert d != cache_digest("chat", {**base, "max_tokens": 5}, model="turnout/auto", quality=0.5)
    assert d != cache_digest("chat", base, model="llama3.2:1b", quality=0.5)
    assert d != cache_digest("chat", base, model="turnout/auto", quality=0.9)
    assert d != cache_digest("completion", base, model="turnout/auto", quality=0.5)
    assert d != cache_digest("chat", base, model="turnout/auto", quality=0.5, client="k1")


async def test_a_stored_chat_completion_replays_as_an_sse_stream():
    stored = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
    chunks = [c async for c in replay_sse(Cached(orjson.dumps(stored), {}, 0.0))]
    assert chunks[-1] == b"data: [DONE]\n\n"
    events = [orjson.loads(c.removeprefix(b"data: ")) for c in chunks[:-1]]
    assert [e["object"] for e in events] == ["chat.completion.chunk"] * 4
    assert events[0]["choices"][0] == {
        "index": 0,
        "delta": {"role": "assistant", "content": "", "refusal": None},
        "logprobs": None,
        "finish_reason": None,
    }
    assert events[1]["choices"][0]["delta"] == {"content": "Hello!"}
    assert events[2]["choices"][0]["finish_reason"] == "stop"
    assert events[3] == {
        **{k: events[3][k] for k in ("id", "object", "created", "model")},
        "choices": [],
        "usage": stored["usage"],
    }
