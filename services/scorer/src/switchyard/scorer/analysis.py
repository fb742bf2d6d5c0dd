"""Prompt analysis: a category and a rough complexity (0..1) from cheap signals.

Signals, all computed on the prompt text (keywords on its first and last 2,000 characters):

* length — the token estimate on a log scale (16 tokens → 0, 256 → 0.5, 4,096 → 1), weight 0.35;
* code — a fenced block (+0.25) or several code-looking lines (+0.15);
* hard words — "implement", "optimize", "prove", "concurrency" … +0.1 each, at most +0.3;
* arithmetic or maths words +0.1; tools +0.1; JSON mode +0.05; a long conversation +0.05;
* a short greeting is capped at 0.05.

Category, first match wins: embedding (request kind), vision (images), code, math, reasoning,
creative, general. Level: simple below 0.3, moderate below 0.6, complex above.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from switchyard.common.schemas.route import RequestKind, RouteRequestV1

CATEGORIES = ("general", "code", "math", "reasoning", "creative", "vision", "embedding")
LEVELS = ("simple", "moderate", "complex")
SAMPLE_CHARS = 2000

_WORD = re.compile(r"[a-z][a-z0-9+#-]*")
_CODE_LINE = re.compile(
    r"(?m)^\s*(?:def |class |function |fn |pub |import |from \S+ import |#include|return\b|const |let |var |"
    r"public |private |SELECT |for \(|if \(|while \()|[;{]\s*$"
)
_ARITH = re.compile(r"\d\s*[-+*/^=]\s*\d")

_CODE_WORDS = frozenset(
    "python javascript typescript java rust golang c++ c# sql regex function bug compile compiler stacktrace "
    "exception refactor debug api endpoint script code coding program programming class method variable "
    "kubernetes docker bash shell json yaml html css react django fastapi asyncio segfault".split()
)
_MATH_WORDS = frozenset(
    "integral derivative equation equations theorem prove proof matrix matrices probability calculate "
    "compute solve algebra calculus eigenvalue polynomial lemma".split()
)
_REASONING_WORDS = frozenset(
    "why explain compare comparison analyze analyse tradeoff tradeoffs trade-off trade-offs evaluate "
    "reason reasoning pros cons implications critique".split()
)
_CREATIVE_WORDS = frozenset("story poem lyrics fiction haiku essay novel sonnet limerick screenplay creative".split())
_HARD_WORDS = frozenset(
    "implement optimize optimise algorithm algorithms complexity concurrent concurrency distributed prove proof "
    "theorem derive architecture design refactor debug lock-free scalable asymptotic rigorous multi-threaded "
    "performance invariant invariants formal formally".split()
)
_GREETINGS = frozenset("hi hello hey hiya yo thanks thank morning evening howdy greetings".split())


@dataclass(frozen=True, slots=True)
class Analysis:
    category: str
    complexity: float
    level: str
    signals: tuple[str, ...]
    tokens: int


def estimate_tokens(req: RouteRequestV1) -> int:
    if req.est_prompt_tokens > 0:
        return req.est_prompt_tokens
    return max(1, (len(req.text) + req.system_chars) // 4)


def analyze(req: RouteRequestV1) -> Analysis:
    tokens = estimate_tokens(req)
    if req.kind is RequestKind.EMBEDDING:
        return Analysis("embedding", 0.0, "simple", ("embedding",), tokens)
    text = req.text
    sample = text if len(text) <= 2 * SAMPLE_CHARS else text[:SAMPLE_CHARS] + "\n" + text[-SAMPLE_CHARS:]
    low = sample.lower()
    words = set(_WORD.findall(low))
    signals: list[str] = []

    c = 0.35 * min(1.0, max(0.0, (math.log2(tokens + 1) - 4.0) / 8.0))
    if tokens >= 1000:
        signals.append("long_prompt")
    code_score, bonus = _code(sample, words, signals)
    c += bonus
    hard = words & _HARD_WORDS
    if "step by step" in low:
        hard = hard | {"step-by-step"}
    if hard:
        c += min(0.3, 0.1 * len(hard))
        signals.append(f"hard_words:{len(hard)}")
    math_words = words & _MATH_WORDS
    arith = _ARITH.search(sample) is not None
    if math_words or arith:
        c += 0.1
        signals.append("math")
    c += _request_shape(req, signals)

    first = _WORD.match(low.lstrip())
    if tokens < 20 and first is not None and first.group(0) in _GREETINGS:
        c = min(c, 0.05)
        signals.append("greeting")

    c = round(min(1.0, max(0.0, c)), 4)
    if req.has_images:
        category = "vision"
    elif code_score >= 2 or (code_score and hard):
        category = "code"
    elif math_words and (arith or len(math_words) >= 2) or (arith and len(words) < 12):
        category = "math"
    elif words & _REASONING_WORDS:
        category = "reasoning"
    elif words & _CREATIVE_WORDS:
        category = "creative"
    else:
        category = "general"
    level = LEVELS[0] if c < 0.3 else LEVELS[1] if c < 0.6 else LEVELS[2]
    return Analysis(category, c, level, tuple(signals), tokens)


def _code(sample: str, words: set[str], signals: list[str]) -> tuple[int, float]:
    """(code evidence count, complexity bonus)."""
    score, bonus = 0, 0.0
    if "```" in sample:
        score, bonus = 2, 0.25
        signals.append("code_block")
    elif len(_CODE_LINE.findall(sample)) >= 3:
        score, bonus = 2, 0.15
        signals.append("code_lines")
    code_words = words & _CODE_WORDS
    if code_words:
        score += len(code_words)
        signals.append("code_words")
    return score, bonus


def _request_shape(req: RouteRequestV1, signals: list[str]) -> float:
    bonus = 0.0
    if req.has_tools:
        bonus += 0.1
        signals.append("tools")
    if req.json_mode:
        bonus += 0.05
        signals.append("json_mode")
    if req.n_messages > 6:
        bonus += 0.05
        signals.append("long_conversation")
    if req.has_images:
        signals.append("images")
    return bonus
