"""The profiling suite as versioned data: ``suite.yaml`` beside this module, loaded into typed models.

A suite is a list of prompts, each in one category, each with one or more checks that grade a
model's answer. Categories: ``code``, ``math``, ``reasoning``, ``creative``, ``general``,
``extraction`` (summarisation and extraction) and ``instruction`` (instruction following); the
scorer reads ``code`` as its ``coding`` and ``extraction`` as its ``summarisation``
(``turnout.scorer.catalog.PROFILE_CATEGORIES``).

Check types (``type`` field), all scored 0..1 (see :mod:`turnout.profiler.grading`):

* ``exact`` — the final answer equals ``answer`` (case-insensitive unless ``case_sensitive``).
* ``numeric`` — the final number is within ``abs_tol`` / ``rel_tol`` of ``answer``.
* ``keywords`` — ``all`` must appear, at least one of ``any``, none of ``none``.
* ``regex`` — ``pattern`` matches (or must not, with ``must_match: false``).
* ``json_schema`` — the answer (fences stripped) is JSON valid against ``schema`` (JSON Schema
  draft 2020-12, checked by the ``jsonschema`` library; the schema itself is checked when the
  suite loads) and ``expect`` (top-level key → value) holds.
* ``constraints`` — instruction-following constraints: line/bullet/sentence/word counts,
  ``starts_with``, ``ends_with``, ``case`` (``lower``/``upper``), ``forbidden`` substrings.
* ``code`` — the answer's Python code passes ``tests`` (assert statements) in a sandboxed
  subprocess; partial credit is the fraction of tests passed.
* ``judge`` — an open prompt: the LLM judge grades it against ``rubric`` when one is configured,
  else the documented heuristic (:func:`turnout.profiler.grading.heuristic_score`) with the
  ``min_words``/``max_words``/``keywords``/``lines`` hints given here.

Every auto-graded prompt carries a ``reference`` answer; the tests check that each reference
scores 1.0, so the suite cannot ship a prompt its own checks reject.

Changing a prompt, a check or a reference means bumping ``suite_version``: profiles are keyed by
it, and models profiled with an older version are profiled again.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from jsonschema import Draft202012Validator, SchemaError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from turnout.common.errors import ConfigError

SUITE_FILE = Path(__file__).with_name("suite.yaml")
CATEGORIES = ("code", "math", "reasoning", "extraction", "instruction", "creative", "general")


class _Check(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    weight: float = Field(default=1.0, gt=0)


class ExactCheck(_Check):
    type: Literal["exact"]
    answer: str
    alternatives: tuple[str, ...] = ()
    case_sensitive: bool = False


class NumericCheck(_Check):
    type: Literal["numeric"]
    answer: float
    abs_tol: float = Field(default=1e-6, ge=0)
    rel_tol: float = Field(default=0.0, ge=0)


class KeywordsCheck(_Check):
    type: Literal["keywords"]
    all: tuple[str, ...] = ()
    any: tuple[str, ...] = ()
    none: tuple[str, ...] = ()
    case_sensitive: bool = False


class RegexCheck(_Check):
    type: Literal["regex"]
    pattern: str
    must_match: bool = True
    flags: str = Field(default="", pattern=r"^[imsx]*$")


class JsonSchemaCheck(_Check):
    type: Literal["json_schema"]
    json_schema: dict[str, Any] = Field(alias="schema")
    expect: dict[str, Any] = Field(default_factory=dict)

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            Draft202012Validator.check_schema(v)
        except SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {exc.message}") from exc
        return v

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ConstraintsCheck(_Check):
    type: Literal["constraints"]
    line_count: int | None = None
    bullet_count: int | None = None
    sentence_count: int | None = None
    min_words: int | None = None
    max_words: int | None = None
    starts_with: str | None = None
    ends_with: str | None = None
    case: Literal["lower", "upper"] | None = None
    forbidden: tuple[str, ...] = ()


class CodeCheck(_Check):
    type: Literal["code"]
    entrypoint: str
    tests: tuple[str, ...] = Field(min_length=1)
    timeout_s: float = Field(default=10.0, gt=0, le=60)


class JudgeCheck(_Check):
    type: Literal["judge"]
    rubric: str
    min_words: int = 1
    max_words: int = 400
    keywords: tuple[str, ...] = ()
    lines: int | None = None


Check = Annotated[
    ExactCheck
    | NumericCheck
    | KeywordsCheck
    | RegexCheck
    | JsonSchemaCheck
    | ConstraintsCheck
    | CodeCheck
    | JudgeCheck,
    Field(discriminator="type"),
]


class SuitePrompt(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    category: str
    prompt: str = Field(min_length=1)
    system: str | None = None
    max_tokens: int = Field(default=256, ge=1, le=8192)
    checks: tuple[Check, ...] = Field(min_length=1)
    reference: str | None = Field(default=None, description="A known-good answer (must score 1.0)")

    @property
    def open(self) -> bool:
        """Graded by a judge (or the heuristic), not by an automatic check."""
        return any(isinstance(c, JudgeCheck) for c in self.checks)

    def messages(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.system:
            out.append({"role": "system", "content": self.system})
        out.append({"role": "user", "content": self.prompt})
        return out


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    suite_version: str = Field(min_length=1, max_length=32)
    description: str = ""
    prompts: tuple[SuitePrompt, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Suite:
        dupes = [k for k, n in Counter(p.id for p in self.prompts).items() if n > 1]
        if dupes:
            raise ValueError(f"duplicate prompt ids: {dupes}")
        unknown = sorted({p.category for p in self.prompts} - set(CATEGORIES))
        if unknown:
            raise ValueError(f"unknown categories {unknown}; known: {list(CATEGORIES)}")
        for p in self.prompts:
            if not p.open and p.reference is None:
                raise ValueError(f"prompt {p.id}: auto-graded prompts need a reference answer")
        return self

    @property
    def categories(self) -> tuple[str, ...]:
        present = {p.category for p in self.prompts}
        return tuple(c for c in CATEGORIES if c in present)

    def by_category(self) -> dict[str, list[SuitePrompt]]:
        out: dict[str, list[SuitePrompt]] = {c: [] for c in self.categories}
        for p in self.prompts:
            out[p.category].append(p)
        return out

    def select(self, categories: set[str] | None = None, limit_per_category: int | None = None) -> Suite:
        """A smaller suite (same version) — for quick runs and tests."""
        chosen: list[SuitePrompt] = []
        for cat, prompts in self.by_category().items():
            if categories is not None and cat not in categories:
                continue
            chosen.extend(prompts[:limit_per_category] if limit_per_category else prompts)
        return self.model_copy(update={"prompts": tuple(chosen)})


def parse_suite(data: Any) -> Suite:
    try:
        return Suite.model_validate(data)
    except ValueError as exc:
        raise ConfigError(f"invalid profiling suite: {exc}") from exc


def load_suite(path: Path | None = None) -> Suite:
    """The suite from ``path`` (YAML or JSON), default the one shipped with the profiler."""
    if path is None:
        return _default_suite()
    return _load(path)


@lru_cache(maxsize=1)
def _default_suite() -> Suite:
    return _load(SUITE_FILE)


def _load(path: Path) -> Suite:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read profiling suite {path}: {exc}") from exc
    return parse_suite(data)


__all__ = [
    "CATEGORIES",
    "SUITE_FILE",
    "Check",
    "CodeCheck",
    "ConstraintsCheck",
    "ExactCheck",
    "JsonSchemaCheck",
    "JudgeCheck",
    "KeywordsCheck",
    "NumericCheck",
    "RegexCheck",
    "Suite",
    "SuitePrompt",
    "load_suite",
    "parse_suite",
]
