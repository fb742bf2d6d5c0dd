"""The simulated fleet's pure parts: config parsing, deterministic text, residency bookkeeping."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from turnout.fakefleet import text
from turnout.fakefleet.config import (
    FleetConfig,
    ListenerSpec,
    ModelSpec,
    format_params,
    parse_bytes,
    parse_duration,
    parse_params,
)
from turnout.fakefleet.state import Failure, Failures, OutOfMemory, Residency, human_bytes2


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def listener(total: str | None = "10GiB", overflow: str = "fail", keep_alive: str = "5m") -> ListenerSpec:
    return ListenerSpec.model_validate(
        {
            "name": "ollama",
            "dialect": "ollama",
            "vram_total_bytes": total,
            "on_overflow": overflow,
            "keep_alive": keep_alive,
            "models": [
                {"name": "a:1b", "vram_bytes": "2GiB"},
                {"name": "b:7b", "vram_bytes": "5GiB"},
                {"name": "c:14b", "vram_bytes": "8GiB"},
            ],
        }
    )


def residency(spec: ListenerSpec, clock: Clock) -> Residency:
    return Residency(spec, time_scale=0, clock=clock, monotonic=clock)


# --- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(1024, 1024), ("8GiB", 8 * 2**30), ("1.5 GB", 1_500_000_000), ("512MiB", 512 * 2**20), ("7", 7)],
)
def test_parse_bytes(raw: object, expected: int) -> None:
    assert parse_bytes(raw) == expected


def test_parse_bytes_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_bytes("8 parsecs")


@pytest.mark.parametrize(
    ("raw", "expected", "shown"),
    [
        (8, 8_000_000_000, "8.0B"),
        ("1.2B", 1_200_000_000, "1.2B"),
        ("137M", 137_000_000, "137M"),
        ("30.5b", 30_500_000_000, "30.5B"),
    ],
)
def test_parse_and_format_params_like_ollama(raw: object, expected: int, shown: str) -> None:
    assert parse_params(raw) == expected
    assert format_params(expected) == shown


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("5m", 300.0), ("1h30m", 5400.0), ("200ms", 0.2), (0, 0.0), ("10", 10.0), (-1, None), ("-1m", None)],
)
def test_parse_duration_accepts_go_durations_and_seconds(raw: object, seconds: float | None) -> None:
    assert parse_duration(raw) == seconds


def test_parse_duration_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("5 minutes")


def test_default_fleet_has_an_ollama_and_an_openai_listener() -> None:
    config = FleetConfig.load()
    assert [(li.name, str(li.dialect), li.port) for li in config.listeners] == [
        ("ollama", "ollama", 11500),
        ("openai", "openai", 11501),
    ]
    ollama = config.listeners[0]
    caps = {m.name: set(m.capabilities) for m in ollama.models}
    assert "vision" in caps["llava:7b"] and caps["nomic-embed-text:latest"] == {"embedding"}
    speeds = {m.name: m.tokens_per_s for m in config.listeners[0].models}
    assert speeds["llama3.2:1b"] > speeds["llama3.1:8b"]  # bigger is slower


def test_model_lookup_adds_latest_like_ollama() -> None:
    spec = ListenerSpec.model_validate({"name": "x", "dialect": "ollama", "models": [{"name": "embed:latest"}]})
    assert spec.model("embed") is not None and spec.model("embed:latest") is not None
    assert spec.model("embed:v2") is None


def test_config_errors_are_readable() -> None:
    with pytest.raises(ValidationError, match="unknown capabilities"):
        ModelSpec.model_validate({"name": "m", "capabilities": ["telepathy"]})
    with pytest.raises(ValidationError, match="listener names must be unique"):
        FleetConfig.model_validate(
            {"listeners": [{"name": "a", "dialect": "ollama"}, {"name": "a", "dialect": "openai"}]}
        )


# --- deterministic text -----------------------------------------------------------------------


def test_reply_is_deterministic_and_sized() -> None:
    model = ModelSpec(name="m:1b", reply_tokens=12)
    a = text.reply(model, "tell me about trains")
    assert a == text.reply(model, "tell me about trains")
    assert len(a.tokens) == 12 and a.finish_reason == "stop"
    assert "trains" in a.text
    short = text.reply(model, "tell me about trains", max_tokens=4)
    assert short.tokens == a.tokens[:4] and short.finish_reason == "length"


def test_arithmetic_is_right_as_often_as_the_accuracy_says() -> None:
    prompts = [f"What is {i} + {i * 3}?" for i in range(200)]
    always = ModelSpec(name="good", accuracy=1.0)
    never = ModelSpec(name="bad", accuracy=0.0)
    half = ModelSpec(name="half", accuracy=0.5)
    right = [f"The answer is {i + i * 3}." for i in range(200)]
    assert all(r in text.reply(always, p).text for p, r in zip(prompts, right, strict=True))
    assert not any(r in text.reply(never, p).text for p, r in zip(prompts, right, strict=True))
    hits = sum(r in text.reply(half, p).text for p, r in zip(prompts, right, strict=True))
    assert 70 < hits < 130


def test_json_mode_reply_is_json() -> None:
    import orjson

    out = text.reply(ModelSpec(name="m"), "hello", json_mode=True)
    assert set(orjson.loads(out.text)) == {"answer"}


def test_tool_choice_and_arguments() -> None:
    tools = [
        {"type": "function", "function": {"name": "search_web", "description": "Search the web"}},
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "weather for a city",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "city": {"type": "string"},
                        "days": {"type": "integer"},
                        "metric": {"type": ["boolean", "null"]},
                    },
                    "required": ["city", "days", "metric"],
                },
            },
        },
    ]
    fn = text.pick_tool(tools, "auto", "What is the weather in Lyon?")
    assert fn is not None and fn["name"] == "get_weather"
    assert text.tool_arguments(fn, "What is the weather in Lyon?") == {"city": "Lyon", "days": 1, "metric": True}
    named = text.pick_tool(tools, {"type": "function", "function": {"name": "search_web"}}, "weather")
    assert named is not None and named["name"] == "search_web"
    assert text.pick_tool(tools, "none", "weather") is None


def test_embeddings_are_unit_vectors_and_close_for_shared_words() -> None:
    a, b, c = (text.embedding(t, 384) for t in ("red apple pie", "red apple tart", "tax law"))
    assert math.isclose(sum(x * x for x in a), 1.0, rel_tol=1e-9)
    cos = lambda u, v: sum(x * y for x, y in zip(u, v, strict=True))  # noqa: E731
    assert cos(a, b) > 0.5 > cos(a, c)
    assert len(text.embedding("", 16)) == 16


# --- residency ---------------------------------------------------------------------------------


def test_residency_loads_keeps_and_expires() -> None:
    clock = Clock()
    r = residency(listener(), clock)
    spec = r.spec.models[0]
    assert r.acquire(spec, 60.0) == 0.0
    assert r.loads["a:1b"] == 1 and r.used_bytes == 2 * 2**30
    r.release("a:1b", 60.0)
    assert [(m.name, exp) for m, exp in r.ps()] == [("a:1b", clock.now + 60)]
    clock.now += 61
    assert r.ps() == [] and r.unloads["a:1b"] == 1


def test_busy_models_do_not_expire_and_keep_alive_zero_unloads_when_idle() -> None:
    clock = Clock()
    r = residency(listener(), clock)
    spec = r.spec.models[0]
    r.acquire(spec, 1.0)
    clock.now += 100
    assert [m.name for m, _ in r.ps()] == ["a:1b"]  # busy: never expires
    assert r.unload("a:1b") is True  # unload while busy: deferred
    assert "a:1b" in r.models
    r.release("a:1b", 1.0)
    assert r.models == {}


def test_a_model_that_does_not_fit_fails_with_ollamas_message() -> None:
    r = residency(listener(), Clock())
    a, b, c = r.spec.models
    r.acquire(a, None)
    r.acquire(b, None)
    with pytest.raises(OutOfMemory) as err:
        r.acquire(c, None)
    assert str(err.value) == "model requires more system memory (8.0 GiB) than is available (3.0 GiB)"


def test_evict_pushes_out_idle_models_least_recently_used_first() -> None:
    clock = Clock()
    r = residency(listener(overflow="evict"), clock)
    a, b, c = r.spec.models
    r.acquire(a, None)
    r.release("a:1b", None)
    clock.now += 1
    r.acquire(b, None)
    r.release("b:7b", None)
    clock.now += 1
    r.acquire(c, None)  # 8 GiB: both a (2) and b (5) must go
    assert list(r.models) == ["c:14b"]
    r.acquire(a, None)  # fits beside c
    with pytest.raises(OutOfMemory):
        r.acquire(b, None)  # c and a are busy: nothing may be evicted


def test_human_bytes2() -> None:
    assert [human_bytes2(n) for n in (512, 3 * 2**20, int(7.5 * 2**30))] == ["512 B", "3.0 MiB", "7.5 GiB"]


def test_failures_most_specific_first_and_counted() -> None:
    f = Failures()
    f.set("ollama", None, Failure("close"))
    f.set(None, "a:1b", Failure("500", remaining=2))
    f.set("ollama", "a:1b", Failure("hang", remaining=1))
    assert f.match_model("ollama", "a:1b").mode == "hang"  # type: ignore[union-attr]
    assert f.match_model("ollama", "a:1b").mode == "500"  # type: ignore[union-attr]
    assert f.match_model("other", "a:1b").mode == "500"  # type: ignore[union-attr]
    assert f.match_model("ollama", "a:1b") is None
    assert f.match_listener("ollama").mode == "close"  # type: ignore[union-attr]
    f.set("ollama", None, Failure("ok"))
    assert f.match_listener("ollama") is None
