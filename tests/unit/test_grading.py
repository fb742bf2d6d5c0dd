"""Graders: answer extraction, each check type, the no-judge heuristic, and the code sandbox."""

from __future__ import annotations

import os
import time

import pytest
from pydantic import ValidationError

from turnout.profiler.errors import JudgeError
from turnout.profiler.grading import (
    HEURISTIC,
    Grader,
    grade_constraints,
    grade_exact,
    grade_json_schema,
    grade_keywords,
    grade_numeric,
    grade_regex,
    graders_used,
    heuristic_score,
)
from turnout.profiler.judge import Verdict
from turnout.profiler.sandbox import CodeSandbox, network_namespace_prefix
from turnout.profiler.suite import (
    ConstraintsCheck,
    ExactCheck,
    JsonSchemaCheck,
    JudgeCheck,
    KeywordsCheck,
    NumericCheck,
    RegexCheck,
    SuitePrompt,
)
from turnout.profiler.text import extract_code, extract_json, final_answer, final_number, strip_think


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("The speed is 72 km/h.\nAnswer: 72", "72"),
        ("**Answer:** Friday.", "Friday"),
        ("Final answer: `Carol`", "Carol"),
        ("so the result is \\boxed{9368}", "9368"),
        ("<think>maybe 5? no</think>\nAnswer: 4", "4"),
        ("Canberra", "Canberra"),
        ("So the answer is 72.5. You asked about 180 and 2.5", "72.5"),
        ("Line one\n\nCanberra.\n", "Canberra"),
    ],
)
def test_final_answer_is_found_however_it_is_written(reply: str, expected: str) -> None:
    assert final_answer(reply) == expected


def test_an_unclosed_reasoning_block_is_no_answer() -> None:
    assert strip_think("<think>still thinking about 42") == ""
    assert final_number("<think>still thinking about 42") is None


@pytest.mark.parametrize(
    ("reply", "value"),
    [
        ("Answer: 1,234", 1234.0),
        ("Answer: -12", -12.0),
        ("Answer: $50.00", 50.0),
        ("p = 1/6", 1 / 6),
        ("x = 3, so twice that:\n6", 6.0),
        ("Answer: 3 then 7", 3.0),
    ],
)
def test_final_number(reply: str, value: float) -> None:
    assert final_number(reply) == pytest.approx(value)


def test_numeric_tolerance() -> None:
    check = NumericCheck(type="numeric", answer=0.1667, abs_tol=0.0005)
    assert grade_numeric(check, "Answer: 0.16667").score == 1.0
    assert grade_numeric(check, "Answer: 0.17").score == 0.0
    assert grade_numeric(check, "no idea").detail == "no number"
    rel = NumericCheck(type="numeric", answer=1000, rel_tol=0.01)
    assert grade_numeric(rel, "Answer: 1009").score == 1.0


def test_exact_accepts_the_word_in_a_short_final_answer_but_not_a_contradiction() -> None:
    check = ExactCheck(type="exact", answer="Friday")
    assert grade_exact(check, "Answer: friday").score == 1.0
    assert grade_exact(check, "Answer: It will be Friday").score == 1.0
    assert grade_exact(check, "Answer: Thursday").score == 0.0
    yes = ExactCheck(type="exact", answer="yes")
    assert grade_exact(yes, "Answer: no").score == 0.0
    strict = ExactCheck(type="exact", answer="BANANA", case_sensitive=True)
    assert grade_exact(strict, "BANANA").score == 1.0
    assert grade_exact(strict, "Banana").score == 0.0


def test_keywords_all_any_none() -> None:
    check = KeywordsCheck(type="keywords", all=("mars", "red"), any=("iron", "rust"), none=("venus",))
    assert grade_keywords(check, "Mars looks red because of rust").score == 1.0
    assert grade_keywords(check, "Mars, like Venus, is red").score == pytest.approx(1 / 3, abs=1e-3)
    assert grade_keywords(check, "Mars").score == pytest.approx(0.5, abs=1e-3)


def test_regex_must_and_must_not_match() -> None:
    assert grade_regex(RegexCheck(type="regex", pattern=r"^\d{4}-\d\d-\d\d$"), "2026-03-17").score == 1.0
    no_digits = RegexCheck(type="regex", pattern=r"^\s*\d", flags="m", must_match=False)
    assert grade_regex(no_digits, "Apple\nBanana").score == 1.0
    assert grade_regex(no_digits, "1. Apple\n2. Banana").score == 0.0


def test_json_is_read_from_fences_and_prose() -> None:
    assert extract_json('```json\n{"a": 1}\n```') == {"a": 1}
    assert extract_json('Sure! Here it is: {"a": {"b": "}"}} Hope it helps.') == {"a": {"b": "}"}}
    assert extract_json("[1, 2]") == [1, 2]
    with pytest.raises(ValueError):
        extract_json("no json here")


def test_json_schema_check_validates_types_and_expected_values() -> None:
    check = JsonSchemaCheck.model_validate(
        {
            "type": "json_schema",
            "schema": {
                "type": "object",
                "required": ["name", "age"],
                "additionalProperties": False,
                "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
            },
            "expect": {"name": "Maria Lopez", "age": 34},
        }
    )
    assert grade_json_schema(check, '```json\n{"name": "maria lopez", "age": 34}\n```').score == 1.0
    assert grade_json_schema(check, '{"name": "Maria Lopez", "age": 35}').score == 0.5
    assert grade_json_schema(check, '{"name": "Maria Lopez", "age": "34"}').score == 0.0
    assert grade_json_schema(check, '{"name": "Maria Lopez", "age": 34, "city": "x"}').score == 0.0
    assert grade_json_schema(check, "nothing").detail == "no JSON"


def test_json_schema_check_applies_any_of_and_refs_the_hand_written_subset_ignored() -> None:
    check = JsonSchemaCheck.model_validate(
        {
            "type": "json_schema",
            "schema": {
                "$defs": {"city": {"type": "string", "enum": ["Lisbon", "Porto"]}},
                "type": "object",
                "required": ["id", "city"],
                "properties": {
                    "id": {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": "^c-[0-9]+$"}]},
                    "city": {"$ref": "#/$defs/city"},
                },
            },
        }
    )
    assert grade_json_schema(check, '{"id": 7, "city": "Porto"}').score == 1.0
    assert grade_json_schema(check, '{"id": "c-42", "city": "Lisbon"}').score == 1.0
    wrong_id = grade_json_schema(check, '{"id": "seven", "city": "Porto"}')
    assert (wrong_id.score, wrong_id.detail) == (0.0, "$.id: 'seven' is not valid under any of the given schemas")
    wrong_ref = grade_json_schema(check, '{"id": 7, "city": "Faro"}')
    assert (wrong_ref.score, wrong_ref.detail) == (0.0, "$.city: 'Faro' is not one of ['Lisbon', 'Porto']")


def test_an_invalid_schema_is_refused_when_the_suite_loads() -> None:
    with pytest.raises(ValidationError, match="not a valid JSON Schema"):
        JsonSchemaCheck.model_validate({"type": "json_schema", "schema": {"type": "objekt"}})


def test_constraints_give_partial_credit() -> None:
    check = ConstraintsCheck(type="constraints", bullet_count=2, line_count=2, case="lower")
    assert grade_constraints(check, "- one\n- two").score == 1.0
    graded = grade_constraints(check, "- One\n- two\n- three")
    assert graded.score == pytest.approx(0.0)
    assert grade_constraints(check, "- One\n- two").score == pytest.approx(2 / 3, abs=1e-3)
    sentences = ConstraintsCheck(type="constraints", sentence_count=2, starts_with="Waves", max_words=20)
    assert grade_constraints(sentences, "Waves crash. The sea is deep.").score == 1.0
    assert grade_constraints(sentences, "The sea. Waves. More.").score == pytest.approx(1 / 3, abs=1e-3)


HAIKU = JudgeCheck(type="judge", rubric="a haiku", min_words=6, max_words=25, lines=3, keywords=("leaves", "autumn"))


def test_heuristic_scores_empty_and_refusals_zero() -> None:
    assert heuristic_score(HAIKU, "") == 0.0
    assert heuristic_score(HAIKU, "I'm sorry, but I can't help with that.") == 0.0


def test_heuristic_prefers_on_topic_answers_of_the_right_shape() -> None:
    good = heuristic_score(HAIKU, "Crimson leaves drifting\nwhispering on the cold wind\nautumn lets them go")
    off_topic = heuristic_score(HAIKU, "The stock market closed higher today on strong earnings reports")
    loop = heuristic_score(HAIKU, " ".join(["leaves autumn leaves"] * 30))
    assert good == 1.0
    assert off_topic < 0.6
    assert loop < good - 0.3


def test_graders_used_joins_distinct_names() -> None:
    assert graders_used(["numeric", "exact", "numeric", "regex+exact"]) == "exact+numeric+regex"


def test_code_is_taken_from_the_block_defining_the_entrypoint() -> None:
    reply = "Here:\n```bash\npip install nothing\n```\n```python\ndef f(x):\n    return x\n```"
    assert extract_code(reply, "f").startswith("def f")
    assert extract_code("def f(): pass", "f") == "def f(): pass"


# --- the sandbox -------------------------------------------------------------------------------


async def test_code_passing_all_tests_scores_one() -> None:
    result = await CodeSandbox().run(
        "def add(a, b):\n    return a + b\n", ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]
    )
    assert (result.passed, result.total, result.score) == (2, 2, 1.0)


async def test_partial_credit_and_failures_are_reported() -> None:
    result = await CodeSandbox().run(
        "def add(a, b):\n    return a - b\n", ["assert add(1, 0) == 1", "assert add(1, 2) == 3"]
    )
    assert result.score == 0.5
    assert "test 1" in result.failures[0]


async def test_code_that_does_not_compile_scores_zero() -> None:
    result = await CodeSandbox().run("def add(a, b) return a", ["assert add(1, 2) == 3"])
    assert result.score == 0.0
    assert result.error and "SyntaxError" in result.error


async def test_an_endless_loop_is_killed_at_the_timeout() -> None:
    t0 = time.monotonic()
    result = await CodeSandbox().run("while True:\n    pass\n", ["assert True"], timeout_s=1.0)
    assert result.timed_out
    assert result.score == 0.0
    assert time.monotonic() - t0 < 5


async def test_the_code_has_no_network() -> None:
    code = (
        "import socket\n"
        "def reach():\n"
        "    try:\n"
        "        socket.create_connection(('127.0.0.1', 9), timeout=1)\n"
        "    except OSError as e:\n"
        "        return str(e)\n"
        "    return 'connected'\n"
    )
    result = await CodeSandbox().run(code, ["assert reach() != 'connected'"])
    assert result.score == 1.0, result
    assert result.network_isolated == bool(network_namespace_prefix())


async def test_the_code_sees_a_scrubbed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURNOUT_SECRET_FOR_TEST", "hunter2")
    code = "import os\ndef env():\n    return dict(os.environ)\n"
    result = await CodeSandbox().run(
        code, ["assert 'TURNOUT_SECRET_FOR_TEST' not in env()", "assert env()['HOME'] == os.getcwd()"]
    )
    assert result.score == 1.0, result
    assert os.environ["TURNOUT_SECRET_FOR_TEST"] == "hunter2"


async def test_memory_is_limited() -> None:
    result = await CodeSandbox(memory_mb=256).run("def grab():\n    return bytearray(1024 ** 3)\n", ["grab()"])
    assert result.score == 0.0
    assert "MemoryError" in result.failures[0]


# --- the grader with and without a judge -------------------------------------------------------


OPEN = SuitePrompt.model_validate(
    {
        "id": "open",
        "category": "creative",
        "prompt": "Write a haiku about autumn leaves.",
        "checks": [HAIKU.model_dump()],
    }
)


class FakeJudge:
    name = "judge:fake"

    def __init__(self, verdict: Verdict | None = None) -> None:
        self.verdict = verdict
        self.calls = 0

    async def judge(self, *, prompt: str, answer: str, rubric: str, reference: str | None = None) -> Verdict:
        self.calls += 1
        if self.verdict is None:
            raise JudgeError("down")
        return self.verdict


async def test_open_prompts_use_the_heuristic_without_a_judge() -> None:
    grade = await Grader().grade(OPEN, "Crimson leaves drifting\nwhispering on the cold wind\nautumn lets them go")
    assert grade.grader == HEURISTIC
    assert grade.score == 1.0


async def test_open_prompts_use_the_judge_and_say_so() -> None:
    judge = FakeJudge(Verdict(score=0.7, reasoning="fine", raw="{}"))
    grade = await Grader(judge=judge).grade(OPEN, "leaves fall")
    assert (grade.score, grade.grader) == (0.7, "judge:fake")


async def test_a_failing_judge_falls_back_to_the_heuristic() -> None:
    grade = await Grader(judge=FakeJudge(None)).grade(OPEN, "Crimson leaves drifting\nwhispering wind\nautumn")
    assert grade.grader == HEURISTIC
    assert "judge failed" in grade.detail


async def test_the_judge_is_not_asked_about_an_empty_answer() -> None:
    judge = FakeJudge(Verdict(score=1.0, reasoning="", raw=""))
    grade = await Grader(judge=judge).grade(OPEN, "<think>hmm</think>")
    assert judge.calls == 0
    assert grade.score == 0.0
