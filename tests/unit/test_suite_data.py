"""The shipped profiling suite: valid, versioned, balanced, and its own references pass its checks."""

from __future__ import annotations

import pytest

from turnout.common.errors import ConfigError
from turnout.profiler.grading import Grader
from turnout.profiler.suite import CATEGORIES, Suite, SuitePrompt, load_suite, parse_suite

SUITE = load_suite()


def test_suite_has_a_version_and_every_category() -> None:
    assert SUITE.suite_version
    assert set(SUITE.categories) == set(CATEGORIES)
    for cat, prompts in SUITE.by_category().items():
        assert len(prompts) >= 3, cat


def test_most_prompts_are_graded_automatically() -> None:
    auto = [p for p in SUITE.prompts if not p.open]
    assert len(auto) / len(SUITE.prompts) >= 0.7
    assert any(p.open for p in SUITE.prompts), "open prompts exist for the judge"


@pytest.mark.parametrize("prompt", SUITE.prompts, ids=lambda p: p.id)
async def test_reference_answer_scores_full_marks(prompt: SuitePrompt) -> None:
    assert prompt.reference is not None
    grade = await Grader().grade(prompt, prompt.reference)
    assert grade.score == 1.0, grade


@pytest.mark.parametrize("prompt", [p for p in SUITE.prompts if not p.open], ids=lambda p: p.id)
async def test_a_wrong_answer_does_not_score_full_marks(prompt: SuitePrompt) -> None:
    wrong = "```python\ndef nothing():\n    return None\n```\nAnswer: 0.5 banana"
    grade = await Grader().grade(prompt, wrong)
    assert grade.score < 1.0, grade


def test_messages_carry_the_system_prompt_first() -> None:
    p = SuitePrompt.model_validate(
        {
            "id": "x",
            "category": "general",
            "system": "be brief",
            "prompt": "hi",
            "checks": [{"type": "regex", "pattern": "."}],
            "reference": "a",
        }
    )
    assert p.messages() == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]


def _suite(**overrides: object) -> dict[str, object]:
    prompt = {
        "id": "a",
        "category": "math",
        "prompt": "1+1?",
        "checks": [{"type": "numeric", "answer": 2}],
        "reference": "2",
    }
    data: dict[str, object] = {"suite_version": "t1", "prompts": [prompt]}
    data.update(overrides)
    return data


def test_duplicate_ids_are_rejected() -> None:
    p = _suite()["prompts"][0]  # type: ignore[index]
    with pytest.raises(ConfigError, match="duplicate"):
        parse_suite(_suite(prompts=[p, p]))


def test_unknown_category_is_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown categories"):
        parse_suite(
            _suite(
                prompts=[
                    {
                        "id": "a",
                        "category": "poetry",
                        "prompt": "x",
                        "checks": [{"type": "numeric", "answer": 1}],
                        "reference": "1",
                    }
                ]
            )
        )


def test_auto_graded_prompt_without_reference_is_rejected() -> None:
    with pytest.raises(ConfigError, match="reference"):
        parse_suite(
            _suite(
                prompts=[{"id": "a", "category": "math", "prompt": "x", "checks": [{"type": "numeric", "answer": 1}]}]
            )
        )


def test_unknown_check_type_is_rejected() -> None:
    with pytest.raises(ConfigError):
        parse_suite(
            _suite(
                prompts=[
                    {"id": "a", "category": "math", "prompt": "x", "checks": [{"type": "vibes"}], "reference": "1"}
                ]
            )
        )


def test_select_keeps_the_version_and_limits_per_category() -> None:
    small = SUITE.select({"math", "code"}, limit_per_category=2)
    assert isinstance(small, Suite)
    assert small.suite_version == SUITE.suite_version
    assert sorted(p.category for p in small.prompts) == ["code", "code", "math", "math"]


def test_load_suite_from_a_json_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    path = tmp_path / "suite.json"
    path.write_text(json.dumps(_suite()))
    assert load_suite(path).suite_version == "t1"
    with pytest.raises(ConfigError, match="cannot read"):
        load_suite(tmp_path / "missing.yaml")
