"""Prompt analysis: category and rough complexity from cheap signals."""

from __future__ import annotations

import pytest

from switchyard.common.schemas.route import RequestKind, RouteRequestV1
from switchyard.scorer.analysis import analyze, estimate_tokens


def test_a_greeting_is_simple_and_general():
    a = analyze(RouteRequestV1(text="Hello! thanks a lot"))
    assert (a.category, a.complexity, a.level) == ("general", 0.0, "simple")
    assert a.signals == ("greeting",)


def test_a_fenced_code_block_makes_a_code_prompt():
    a = analyze(RouteRequestV1(text="Why does this fail?\n```python\nprint(1/0)\n```"))
    assert a.category == "code"
    assert "code_block" in a.signals


def test_code_looking_lines_without_a_fence_count_too():
    text = "def f(x):\n    return x\nclass A:\n    pass\nimport os\n"
    assert analyze(RouteRequestV1(text=text)).signals[0] == "code_lines"


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("Solve the equation 3x + 5 = 20 and prove the solution is unique", "math"),
        ("Compare the pros and cons of nuclear and solar power", "reasoning"),
        ("Write a short poem about autumn leaves", "creative"),
        ("What is the capital of France?", "general"),
    ],
)
def test_categories_from_keywords(text, category):
    assert analyze(RouteRequestV1(text=text)).category == category


def test_images_make_a_vision_prompt_and_embeddings_skip_analysis():
    assert analyze(RouteRequestV1(text="what is this", has_images=True)).category == "vision"
    a = analyze(RouteRequestV1(kind=RequestKind.EMBEDDING, text="```python\nx\n```"))
    assert (a.category, a.complexity) == ("embedding", 0.0)


def test_complexity_grows_with_length_hard_words_and_tools():
    short = analyze(RouteRequestV1(text="Tell me about Rome."))
    long = analyze(RouteRequestV1(text="Tell me about Rome. " * 400))
    hard = analyze(RouteRequestV1(text="Tell me about Rome. Derive a rigorous proof, step by step."))
    tools = analyze(RouteRequestV1(text="Tell me about Rome.", has_tools=True))
    assert short.complexity < long.complexity
    assert short.complexity < hard.complexity
    assert tools.complexity == pytest.approx(short.complexity + 0.1)
    assert hard.signals == ("hard_words:4", "math")
    assert long.level == "moderate" and "long_prompt" in long.signals


def test_levels_follow_complexity():
    hard_code = "Implement and optimize a distributed, concurrent scheduler.\n```go\nfunc main() {}\n```\n" * 40
    assert analyze(RouteRequestV1(text=hard_code)).level == "complex"


def test_the_token_estimate_prefers_the_gateways_count():
    assert estimate_tokens(RouteRequestV1(text="x" * 400, est_prompt_tokens=7)) == 7
    assert estimate_tokens(RouteRequestV1(text="x" * 400, system_chars=400)) == 200
