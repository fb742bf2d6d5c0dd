"""The profile runner with a scripted chat function: scores, speeds, timeouts, errors, probes, progress."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from turnout.common.errors import BackendStatusError, BackendTimeout, BackendUnavailable
from turnout.profiler.chat import ChatRequest, ChatResult
from turnout.profiler.grading import Grader
from turnout.profiler.runner import (
    ModelUnderTest,
    ProfileRunner,
    ProgressEvent,
    RunnerOptions,
    prompt_timeout_s,
    warmup_timeout_s,
)
from turnout.profiler.suite import load_suite

SUITE = load_suite().select({"math", "reasoning", "code", "creative"}, limit_per_category=3)
REFERENCES = {p.prompt: p.reference or "" for p in SUITE.prompts}
MODEL = ModelUnderTest(name="fake:7b", backend="fleet", upstream="fake:7b", size_bytes=4_000_000_000)

Behaviour = Callable[[ChatRequest, float], ChatResult]


class ScriptedChat:
    """Answers suite prompts with their reference (or ``wrong``) and records the timeouts it got."""

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour = behaviour
        self.calls: list[tuple[ChatRequest, float]] = []

    async def __call__(self, request: ChatRequest, *, timeout_s: float) -> ChatResult:
        self.calls.append((request, timeout_s))
        if self.behaviour is not None:
            return self.behaviour(request, timeout_s)
        return answer(request)


def text_of(request: ChatRequest) -> str:
    content = request.messages[-1]["content"]
    return content if isinstance(content, str) else ""


def answer(request: ChatRequest, *, correct: bool = True, tps: float = 40.0, ttft_s: float = 0.2) -> ChatResult:
    if request.tools:
        return ChatResult(text="", tool_calls=[{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}])
    ref = REFERENCES.get(text_of(request), "OK")
    text = ref if correct else "I am not sure.\nAnswer: 123456"
    return ChatResult(
        text=text,
        completion_tokens=50,
        total_s=ttft_s + 50 / tps,
        ttft_s=ttft_s + 0.01,
        backend_ttft_s=ttft_s,
        backend_tokens_per_s=tps,
        load_s=1.5,
    )


async def test_correct_answers_score_one_and_speeds_come_from_backend_counters() -> None:
    result = await ProfileRunner(ScriptedChat(), SUITE, Grader()).run(MODEL)
    assert result.status == "ok"
    assert result.suite_version == SUITE.suite_version
    for cat in ("math", "reasoning", "code", "creative"):
        assert result.categories[cat].score == 1.0
        assert result.categories[cat].n_prompts == 3
    assert result.categories["code"].grader == "code"
    assert result.categories["creative"].grader == "heuristic"
    assert result.tokens_per_s == 40.0
    assert result.ttft_ms == 200.0
    assert result.speed_source == "backend"
    assert result.load_ms == 1500.0


async def test_wrong_answers_score_low_but_are_graded() -> None:
    chat = ScriptedChat(lambda r, _t: answer(r, correct=False))
    result = await ProfileRunner(chat, SUITE, Grader()).run(MODEL)
    assert result.status == "ok"
    assert result.categories["math"].score == 0.0
    assert result.categories["math"].n_prompts == 3


async def test_timeouts_are_recorded_as_timeouts_not_as_zero_quality() -> None:
    def behaviour(request: ChatRequest, timeout_s: float) -> ChatResult:
        if "Compute 17" in text_of(request):
            raise BackendTimeout(f"no answer in {timeout_s}s")
        return answer(request)

    result = await ProfileRunner(ScriptedChat(behaviour), SUITE, Grader()).run(MODEL)
    math = result.categories["math"]
    assert (math.score, math.n_prompts, math.timeouts, math.total) == (1.0, 2, 1, 3)
    assert result.status == "partial"
    timed_out = next(p for p in result.prompts if p.status == "timeout")
    assert timed_out.score is None
    assert any("timeout" in e for e in result.errors)


async def test_a_model_that_always_errors_has_no_scores_and_the_rest_is_skipped() -> None:
    def behaviour(request: ChatRequest, _t: float) -> ChatResult:
        if text_of(request).startswith("Reply with the word OK"):
            return ChatResult(text="OK", total_s=0.1)
        raise BackendStatusError("boom", status=500)

    opts = RunnerOptions(max_consecutive_failures=2, probe_vision=False, probe_tools=False)
    result = await ProfileRunner(ScriptedChat(behaviour), SUITE, Grader(), opts).run(MODEL)
    assert result.status == "failed"
    assert all(c.score is None for c in result.categories.values())
    statuses = [p.status for p in result.prompts]
    assert statuses[:2] == ["error", "error"]
    assert set(statuses[2:]) == {"skipped"}
    rows = result.profile_rows(model_id=7)
    assert all(r["score"] is None for r in rows)
    assert sum(r["errors"] for r in rows) == 2


async def test_a_failed_warmup_skips_everything_and_says_why() -> None:
    def behaviour(_r: ChatRequest, _t: float) -> ChatResult:
        raise BackendUnavailable("connection refused")

    result = await ProfileRunner(ScriptedChat(behaviour), SUITE, Grader()).run(MODEL)
    assert result.status == "failed"
    assert result.errors[0].startswith("warm-up: BackendUnavailable")
    assert {p.status for p in result.prompts} == {"skipped"}
    assert result.capabilities == {}


async def test_warmup_timeout_follows_model_size_and_prompt_timeouts_follow_measured_speed() -> None:
    chat = ScriptedChat(lambda r, _t: answer(r, tps=20.0, ttft_s=0.5))
    opts = RunnerOptions(probe_vision=False, probe_tools=False, timeout_factor=3.0, prompt_timeout_floor_s=1.0)
    await ProfileRunner(chat, SUITE, Grader(), opts).run(MODEL)
    warm = chat.calls[0][1]
    assert warm == pytest.approx(opts.warmup_timeout_floor_s + opts.warmup_s_per_gb * 4.0)
    first, second = chat.calls[1], chat.calls[2]
    assert first[1] == pytest.approx(min(300.0, 3.0 * first[0].max_tokens / opts.assumed_tokens_per_s))
    assert second[1] == pytest.approx(max(1.0, 3.0 * (0.5 + second[0].max_tokens / 20.0)))


def test_timeouts_are_clamped() -> None:
    opts = RunnerOptions(prompt_timeout_floor_s=10, prompt_timeout_ceiling_s=60)
    assert prompt_timeout_s(10, 0.01, 1000.0, opts) == 10
    assert prompt_timeout_s(4000, 1.0, 1.0, opts) == 60
    huge = ModelUnderTest(name="x", backend="b", upstream="x", params_b=2000)
    assert warmup_timeout_s(huge, opts) == opts.warmup_timeout_ceiling_s
    unknown = ModelUnderTest(name="x", backend="b", upstream="x")
    assert warmup_timeout_s(unknown, opts) == opts.warmup_timeout_floor_s


async def test_capability_probes() -> None:
    def behaviour(request: ChatRequest, _t: float) -> ChatResult:
        content = request.messages[-1]["content"]
        if isinstance(content, list):
            raise BackendStatusError("model does not support images", status=400)
        return answer(request)

    result = await ProfileRunner(ScriptedChat(behaviour), SUITE.select({"math"}, 1), Grader()).run(MODEL)
    assert result.capabilities["vision"].confirmed is False
    assert result.capabilities["tools"].confirmed is True
    assert "get_weather" in result.capabilities["tools"].detail


async def test_a_model_that_ignores_tools_is_not_confirmed() -> None:
    def behaviour(request: ChatRequest, _t: float) -> ChatResult:
        if request.tools:
            return ChatResult(text="It is sunny.")
        if isinstance(request.messages[-1]["content"], list):
            raise BackendTimeout("slow")
        return answer(request)

    result = await ProfileRunner(ScriptedChat(behaviour), SUITE.select({"math"}, 1), Grader()).run(MODEL)
    assert result.capabilities["tools"].confirmed is False
    assert result.capabilities["vision"].confirmed is None


async def test_progress_is_reported_with_an_eta() -> None:
    events: list[ProgressEvent] = []

    async def progress(e: ProgressEvent) -> None:
        events.append(e)

    suite = SUITE.select({"math"}, 3)
    await ProfileRunner(ScriptedChat(), suite, Grader(), progress=progress).run(MODEL)
    phases = [e.phase for e in events]
    assert phases[0] == "warmup" and phases[-1] == "done"
    prompt_events = [e for e in events if e.phase == "prompts"]
    assert [e.done for e in prompt_events] == [0, 1, 2]
    assert prompt_events[0].eta_s is None and prompt_events[-1].eta_s is not None
    assert all(e.total == 3 for e in events)


async def test_a_failing_progress_callback_does_not_stop_profiling() -> None:
    async def progress(_e: ProgressEvent) -> None:
        raise RuntimeError("redis down")

    result = await ProfileRunner(ScriptedChat(), SUITE.select({"math"}, 1), Grader(), progress=progress).run(MODEL)
    assert result.status == "ok"


async def test_profile_rows_use_the_table_columns_only() -> None:
    result = await ProfileRunner(ScriptedChat(), SUITE, Grader()).run(MODEL)
    result.vram_bytes = 5_000_000_000
    rows = result.profile_rows(model_id=3)
    by_id = {p.id: p for p in SUITE.prompts}
    assert {r["category"] for r in rows} == set(SUITE.categories)
    cols = {
        "model_id", "suite_version", "category", "score", "n_prompts", "grader", "ttft_ms",
        "tokens_per_s", "prefill_tokens_per_s", "load_ms", "vram_bytes", "errors", "timeouts", "details",
    }  # fmt: skip
    for r in rows:
        assert set(r) == cols
        assert r["vram_bytes"] == 5_000_000_000
        assert r["details"]["status"] == "ok"
        assert all(p["category"] == r["category"] for p in r["details"]["prompts"])
        # the prompt text travels with each grade: the scorer embeds it for its learned index
        assert all(p["prompt"] == by_id[p["id"]].prompt for p in r["details"]["prompts"])
    dumped: dict[str, Any] = result.model_dump(mode="json")
    assert dumped["categories"]["math"]["score"] == 1.0


async def test_the_warmup_guard_wraps_the_load_and_nothing_else() -> None:
    inside: list[bool] = []
    held = False

    @contextlib.asynccontextmanager
    async def guard() -> AsyncIterator[None]:
        nonlocal held
        held = True
        try:
            yield
        finally:
            held = False

    def behaviour(request: ChatRequest, timeout_s: float) -> ChatResult:
        inside.append(held)
        return answer(request)

    result = await ProfileRunner(ScriptedChat(behaviour), SUITE, Grader(), warmup_guard=guard).run(MODEL)
    assert result.status == "ok"
    assert inside[0] is True and not any(inside[1:])  # the warm-up only

    @contextlib.asynccontextmanager
    async def refuse() -> AsyncIterator[None]:
        raise RuntimeError("host busy")
        yield  # pragma: no cover - never reached

    chat = ScriptedChat()
    with pytest.raises(RuntimeError, match="host busy"):
        await ProfileRunner(chat, SUITE, Grader(), warmup_guard=refuse).run(MODEL)
    assert chat.calls == []  # nothing was loaded


def prefill_answer(
    request: ChatRequest, *, counters: bool, rate: float = 2000.0, overhead_s: float = 0.05
) -> ChatResult:
    """A backend that takes ``overhead_s + tokens / rate`` to its first token (≈ 4 characters a
    token), reporting it in its counters (Ollama) or only in usage (vLLM: the client times it)."""
    res = answer(request)
    tokens = max(1, sum(len(str(m["content"])) for m in request.messages) // 4)
    seconds = overhead_s + tokens / rate
    res.prompt_tokens, res.ttft_s, res.backend_ttft_s = tokens, seconds + 0.01, None
    if counters:
        res.backend_prompt_tokens, res.backend_ttft_s = tokens, seconds
    return res


@pytest.mark.parametrize(("counters", "source"), [(True, "backend"), (False, "timing")])
async def test_prefill_speed_is_the_slope_between_the_suite_and_the_long_prompt(counters: bool, source: str) -> None:
    chat = ScriptedChat(lambda r, _t: prefill_answer(r, counters=counters))
    result = await ProfileRunner(chat, SUITE, Grader()).run(MODEL)
    long = chat.calls[-1][0]
    assert len(str(long.messages[0]["content"])) // 4 == result.prefill_probe_tokens
    assert 1000 <= (result.prefill_probe_tokens or 0) <= 1100 and long.max_tokens == 8
    # the fixed 50 ms (and the client's 10 ms) cancel out: the rate the backend has, not 1,000 / 0.55 s
    assert result.prefill_tokens_per_s == pytest.approx(2000.0, rel=0.01)
    assert result.prefill_source == source
    row = result.profile_rows(model_id=1)[0]
    assert row["prefill_tokens_per_s"] == result.prefill_tokens_per_s
    assert row["details"]["prefill_source"] == source


async def test_no_prefill_probe_when_turned_off_or_when_no_prompt_succeeded() -> None:
    chat = ScriptedChat(lambda r, _t: prefill_answer(r, counters=True))
    opts = RunnerOptions(probe_prefill=False)
    result = await ProfileRunner(chat, SUITE, Grader(), opts).run(MODEL)
    assert all(len(str(c[0].messages[-1]["content"])) < 2000 for c in chat.calls)
    # the suite's counters alone: fixed costs counted as prefill, a lower bound
    assert result.prefill_source == "backend"
    assert result.prefill_tokens_per_s is not None and 100 < result.prefill_tokens_per_s < 2000 * 0.5

    def failing(request: ChatRequest, _t: float) -> ChatResult:
        if request.max_tokens == 4:  # the warm-up
            return answer(request)
        raise BackendUnavailable("down")

    chat = ScriptedChat(failing)
    result = await ProfileRunner(chat, SUITE, Grader()).run(MODEL)
    assert result.prefill_tokens_per_s is None and result.prefill_source is None
    assert not any("records" in str(c[0].messages[-1]["content"]) for c in chat.calls)
