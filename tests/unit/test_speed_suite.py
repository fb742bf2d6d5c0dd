"""The llama.cpp fleets' profiling suite grades quality: references pass, random tokens score 0."""

from __future__ import annotations

from turnout.llamafleet import SPEED_SUITE
from turnout.profiler.grading import Grader
from turnout.profiler.suite import load_suite

GIBBERISH = "ordered Ġqwx zzt ĊĊ assistant assistant ularity"


async def test_every_reference_passes_and_random_tokens_fail() -> None:
    suite = load_suite(SPEED_SUITE)
    grader = Grader()
    assert suite.suite_version == "e2e-llama-2"
    assert [(p.id, p.max_tokens) for p in suite.prompts] == [
        ("general.colours", 24),
        ("general.weather", 24),
        ("general.trains", 24),
        ("general.capital", 12),
        ("reasoning.count", 12),
    ]
    for p in suite.prompts:
        assert p.reference is not None
        assert (await grader.grade(p, p.reference)).score == 1.0, p.id
        assert (await grader.grade(p, GIBBERISH)).score == 0.0, p.id
