"""Graders: one answer + one suite prompt → a score 0..1 and the name of the grader that gave it.

Each check type of the suite (:mod:`turnout.profiler.suite`) has a grader; a prompt with
several checks gets their weighted mean and a grader name joining theirs (``json_schema+keywords``).
Reasoning blocks (``<think>…</think>``) are removed before anything is graded.

Open prompts (``judge`` checks) go to the LLM judge when one is configured (grader
``judge:<model>``). Without one — or when the judge fails — they get the heuristic below
(grader ``heuristic``), which can tell an on-topic answer of the right shape from an empty,
refused, off-topic or degenerate one, and no more:

``heuristic_score`` — 0 for an empty answer or a refusal; otherwise
``0.25·length + 0.45·coverage + 0.15·diversity + 0.15·form``, where
  * length = 1 inside ``[min_words, max_words]``, ``words/min_words`` below, and falling linearly
    to 0 at ``2·max_words`` above;
  * coverage = topical keywords found (word-prefix, case-insensitive) over half the keyword list
    (rounded up), capped at 1 (1 when the check lists none);
  * diversity = distinct word trigrams / all trigrams, over 0.8, capped at 1 (1 under 12 words):
    repetition loops score low;
  * form = 1 when the non-empty line count equals ``lines`` (or no ``lines`` is set), else 0.5.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from jsonschema import Draft202012Validator

from turnout.profiler.errors import JudgeError
from turnout.profiler.judge import Verdict
from turnout.profiler.sandbox import CodeSandbox
from turnout.profiler.suite import (
    Check,
    CodeCheck,
    ConstraintsCheck,
    ExactCheck,
    JsonSchemaCheck,
    JudgeCheck,
    KeywordsCheck,
    NumericCheck,
    RegexCheck,
    SuitePrompt,
)
from turnout.profiler.text import (
    clean_answer,
    extract_code,
    extract_json,
    final_answer,
    final_number,
    strip_think,
    words,
)

log = logging.getLogger(__name__)

HEURISTIC = "heuristic"
_REFUSAL = re.compile(
    r"\b(i can(?:no|')t (?:help|assist|do that|comply)"
    r"|i(?: am|'m) (?:unable|not able) to"
    r"|as an ai(?: language model)?,? i)\b",
    re.I,
)
_BULLET = re.compile(r"^\s*(?:[-*•+]|\d+[.)])\s+")
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")


@dataclass(frozen=True, slots=True)
class Grade:
    """One graded answer: a score in 0..1, the grader that gave it, and why."""

    score: float
    grader: str
    detail: str = ""


class Judge(Protocol):
    """An LLM judge of open answers (:class:`~turnout.profiler.judge.LLMJudge`, or a test's)."""

    @property
    def name(self) -> str: ...

    async def judge(self, *, prompt: str, answer: str, rubric: str, reference: str | None = None) -> Verdict: ...


# --- automatic checks --------------------------------------------------------------------------


def grade_exact(check: ExactCheck, answer: str) -> Grade:
    """1 when the final answer is the expected one (or an alternative), also said in a short sentence."""
    got = final_answer(answer)
    expected = [check.answer, *check.alternatives]

    def norm(s: str) -> str:
        s = clean_answer(s)
        return s if check.case_sensitive else s.casefold()

    g = norm(got)
    if any(g == norm(e) for e in expected):
        return Grade(1.0, "exact")
    # "The answer is Friday" / "Carol is the shortest": the expected word alone, in a short answer.
    if len(g.split()) <= 6:
        for e in expected:
            flags = 0 if check.case_sensitive else re.I
            if re.search(rf"(?<!\w){re.escape(clean_answer(e))}(?!\w)", clean_answer(got), flags):
                others = [o for o in expected if o != e]
                if not others or not any(norm(o) in g for o in others):
                    return Grade(1.0, "exact", "found in final answer")
    return Grade(0.0, "exact", f"got {got[:80]!r}")


def grade_numeric(check: NumericCheck, answer: str) -> Grade:
    """1 when the final number is within the check's absolute or relative tolerance."""
    got = final_number(answer)
    if got is None:
        return Grade(0.0, "numeric", "no number")
    tol = max(check.abs_tol, check.rel_tol * abs(check.answer))
    ok = math.isclose(got, check.answer, abs_tol=tol) or abs(got - check.answer) <= tol
    return Grade(1.0 if ok else 0.0, "numeric", "" if ok else f"got {got}")


def grade_keywords(check: KeywordsCheck, answer: str) -> Grade:
    """The share of keyword conditions met (all, any, none of them)."""
    text = strip_think(answer)
    hay = text if check.case_sensitive else text.casefold()

    def has(k: str) -> bool:
        return (k if check.case_sensitive else k.casefold()) in hay

    parts: list[float] = []
    if check.all:
        parts.append(sum(has(k) for k in check.all) / len(check.all))
    if check.any:
        parts.append(1.0 if any(has(k) for k in check.any) else 0.0)
    if check.none:
        parts.append(0.0 if any(has(k) for k in check.none) else 1.0)
    score = sum(parts) / len(parts) if parts else 1.0
    return Grade(round(score, 4), "keywords")


def grade_regex(check: RegexCheck, answer: str) -> Grade:
    """1 when the pattern is found (or, with ``must_match`` off, not found)."""
    flags = 0
    for f in check.flags:
        flags |= {"i": re.I, "m": re.M, "s": re.S, "x": re.X}[f]
    found = re.search(check.pattern, strip_think(answer), flags) is not None
    return Grade(1.0 if found == check.must_match else 0.0, "regex")


def grade_json_schema(check: JsonSchemaCheck, answer: str) -> Grade:
    """1 when the answer holds JSON valid against the schema; the errors otherwise."""
    try:
        value = extract_json(answer)
    except ValueError:
        return Grade(0.0, "json_schema", "no JSON")
    errors = [f"{e.json_path}: {e.message}" for e in Draft202012Validator(check.json_schema).iter_errors(value)]
    if errors:
        return Grade(0.0, "json_schema", "; ".join(errors[:3]))
    if check.expect:
        if not isinstance(value, dict):
            return Grade(0.0, "json_schema", "expected an object")
        hits = sum(_same(value.get(k), v) for k, v in check.expect.items())
        return Grade(round(hits / len(check.expect), 4), "json_schema")
    return Grade(1.0, "json_schema")


def _same(got: object, expected: object) -> bool:
    if isinstance(expected, str) and isinstance(got, str):
        return got.strip().casefold() == expected.strip().casefold()
    if isinstance(expected, int | float) and isinstance(got, int | float) and not isinstance(got, bool):
        return math.isclose(float(got), float(expected), abs_tol=1e-9)
    return got == expected


def grade_constraints(check: ConstraintsCheck, answer: str) -> Grade:
    """The share of format constraints met (line, bullet and word counts, start, end, case, forbidden text)."""
    text = strip_think(answer).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    n_words = len(words(text))
    results: list[tuple[str, bool]] = []
    if check.line_count is not None:
        results.append(("line_count", len(lines) == check.line_count))
    if check.bullet_count is not None:
        results.append(("bullet_count", sum(bool(_BULLET.match(ln)) for ln in lines) == check.bullet_count))
    if check.sentence_count is not None:
        results.append(("sentence_count", _sentences(text) == check.sentence_count))
    if check.min_words is not None:
        results.append(("min_words", n_words >= check.min_words))
    if check.max_words is not None:
        results.append(("max_words", n_words <= check.max_words))
    if check.starts_with is not None:
        results.append(("starts_with", text.lstrip("*_#> ").startswith(check.starts_with)))
    if check.ends_with is not None:
        results.append(("ends_with", text.rstrip("*_ ").endswith(check.ends_with)))
    if check.case == "lower":
        results.append(("case", text == text.lower()))
    elif check.case == "upper":
        results.append(("case", text == text.upper()))
    if check.forbidden:
        results.append(("forbidden", not any(f in text for f in check.forbidden)))
    if not results:
        return Grade(1.0, "constraints")
    failed = [name for name, ok in results if not ok]
    return Grade(round(1 - len(failed) / len(results), 4), "constraints", ",".join(failed))


def _sentences(text: str) -> int:
    flat = " ".join(text.split())
    parts = [p for p in _SENTENCE_END.split(flat) if p.strip()]
    return len(parts)


# --- open prompts ------------------------------------------------------------------------------


def heuristic_score(check: JudgeCheck, answer: str) -> float:
    """The documented no-judge score of an open answer (see the module docstring)."""
    text = strip_think(answer).strip()
    if not text or _REFUSAL.search(text[:300]):
        return 0.0
    tokens = words(text)
    n = len(tokens)
    if n < check.min_words:
        length = n / check.min_words
    elif n <= check.max_words:
        length = 1.0
    else:
        length = max(0.0, 1 - (n - check.max_words) / check.max_words)
    if check.keywords:
        low = text.casefold()
        hits = sum(bool(re.search(rf"(?<!\w){re.escape(k.casefold())}", low)) for k in check.keywords)
        coverage = min(1.0, hits / math.ceil(len(check.keywords) / 2))
    else:
        coverage = 1.0
    if n >= 12:
        grams = [tuple(t.casefold() for t in tokens[i : i + 3]) for i in range(n - 2)]
        diversity = min(1.0, (len(set(grams)) / len(grams)) / 0.8)
    else:
        diversity = 1.0
    lines = [ln for ln in text.splitlines() if ln.strip()]
    form = 1.0 if check.lines is None or len(lines) == check.lines else 0.5
    return round(0.25 * length + 0.45 * coverage + 0.15 * diversity + 0.15 * form, 4)


# --- the grader --------------------------------------------------------------------------------


class Grader:
    """Grades answers to suite prompts; ``judge`` and ``sandbox`` are optional collaborators."""

    def __init__(self, *, judge: Judge | None = None, sandbox: CodeSandbox | None = None) -> None:
        self.judge = judge
        self.sandbox = sandbox or CodeSandbox()

    async def grade(self, prompt: SuitePrompt, answer: str) -> Grade:
        """The weighted score of every check of ``prompt`` on ``answer``."""
        grades = [await self.grade_check(check, prompt, answer) for check in prompt.checks]
        weights = [c.weight for c in prompt.checks]
        score = sum(g.score * w for g, w in zip(grades, weights, strict=True)) / sum(weights)
        names = list(dict.fromkeys(g.grader for g in grades))
        detail = "; ".join(g.detail for g in grades if g.detail)
        return Grade(round(score, 4), "+".join(names)[:64], detail[:500])

    async def grade_check(self, check: Check, prompt: SuitePrompt, answer: str) -> Grade:
        """One check on ``answer``, by its kind."""
        if isinstance(check, ExactCheck):
            return grade_exact(check, answer)
        if isinstance(check, NumericCheck):
            return grade_numeric(check, answer)
        if isinstance(check, KeywordsCheck):
            return grade_keywords(check, answer)
        if isinstance(check, RegexCheck):
            return grade_regex(check, answer)
        if isinstance(check, JsonSchemaCheck):
            return grade_json_schema(check, answer)
        if isinstance(check, ConstraintsCheck):
            return grade_constraints(check, answer)
        if isinstance(check, CodeCheck):
            return await self.grade_code(check, answer)
        return await self.grade_open(check, prompt, answer)

    async def grade_code(self, check: CodeCheck, answer: str) -> Grade:
        """Run the extracted code against the check's tests in the sandbox: the share that passed."""
        code = extract_code(answer, check.entrypoint)
        if not code.strip():
            return Grade(0.0, "code", "no code")
        result = await self.sandbox.run(code, check.tests, timeout_s=check.timeout_s)
        detail = "timed out" if result.timed_out else (result.error or "; ".join(result.failures[:2]))
        return Grade(round(result.score, 4), "code", detail[:300])

    async def grade_open(self, check: JudgeCheck, prompt: SuitePrompt, answer: str) -> Grade:
        """The judge's score of an open answer; the heuristic when there is no judge or it fails."""
        text = strip_think(answer)
        if self.judge is not None and text.strip():
            try:
                verdict = await self.judge.judge(
                    prompt=prompt.prompt, answer=text, rubric=check.rubric, reference=prompt.reference
                )
                return Grade(verdict.score, self.judge.name, verdict.reasoning)
            except JudgeError as exc:
                log.warning("judge failed on %s, using the heuristic: %s", prompt.id, exc)
                return Grade(heuristic_score(check, answer), HEURISTIC, f"judge failed: {exc}"[:300])
        return Grade(heuristic_score(check, answer), HEURISTIC)


def graders_used(graders: Iterable[str]) -> str:
    """One label for several grades (a category's): the distinct grader names, sorted, joined."""
    names = sorted({part for g in graders for part in g.split("+") if part})
    return "+".join(names)[:64]
