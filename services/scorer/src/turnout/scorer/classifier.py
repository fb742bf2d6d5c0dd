"""Optional LLM classifier: when the heuristic analysis is unsure, ask a small model.

Asked only when :meth:`LLMClassifier.should_ask` says so — the heuristic's ``confidence`` is
below ``min_confidence`` or its complexity lies in the configured ``band`` — and only for prompts
not seen before (answers are cached by content hash in a bounded LRU). The request is an
OpenAI-compatible ``POST {base_url}/chat/completions`` with ``temperature: 0``, JSON mode and a
tight timeout on the process's shared ``aiohttp`` session; the model must answer
``{"category": "<one of the categories>", "difficulty": "simple|medium|hard"}``. Any failure
(timeout, HTTP error, unparsable or out-of-vocabulary answer) returns the heuristic analysis
unchanged and is counted; failures are cached briefly too so a broken classifier costs one
timeout per prompt, not one per request.

**Within the deadline.** ``refine(..., budget_s=…)`` gets what is left of the caller's route
deadline. A cached answer is used at once; otherwise the classifier is asked inline only when
the budget covers its timeout plus ``margin_s`` (then with the timeout cut to fit), else the
question goes to a background task that warms the cache (at most ``max_background`` at once,
further ones dropped and counted) and this request keeps the heuristic analysis — so with the
gateway's 100 ms route deadline and a 250 ms classifier the decision is never late, and the
next request with the same prompt gets the classifier's answer.

**What its label is worth** (``bench/routing_quality.py``, section ``classifier``: the data
sets' own labels as a perfect classifier, and those labels 25 % / 50 % wrong; in-distribution,
2 seeds × 100 resamples). It counts through the category: per-category profiles and the
category-keyed heuristics. Alone it helps — heuristics only, MMLU APGR by call share 0.558 ±
0.015 → 0.679 ± 0.016 with perfect subject labels (0.634 at 25 % wrong); LLMRouter APGR by
cost 0.760 ± 0.064 → 0.930 ± 0.076 with perfect cluster labels (0.698 at 25 % wrong) — but on
top of the learned term it adds nothing beyond noise (MMLU 0.655 → 0.667 ± 0.017; LLMRouter
0.982 → 1.029 ± 0.069; at 25 % wrong 0.664 and 0.998), and those labels are finer than this
classifier's categories. So its answer replaces the heuristic category and difficulty and gets
no weight of its own in scoring.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, replace

import aiohttp
import orjson

from turnout.scorer.errors import ClassifierError
from turnout.scorer.prompt_analysis import CORE_CATEGORIES, LEVELS, AnalysisConfig, PromptAnalysis

log = logging.getLogger(__name__)

# Where a classified difficulty puts the complexity (the middle of each level's range).
LEVEL_COMPLEXITY = {"simple": 0.2, "medium": 0.5, "hard": 0.8}

SYSTEM_PROMPT = (
    "You classify user prompts for a model router. Reply with JSON only: "
    '{{"category": one of [{categories}], "difficulty": one of ["simple", "medium", "hard"]}}. '
    "simple = a small model answers it well; hard = needs a large model (multi-step reasoning, "
    "non-trivial code, proofs)."
)


@dataclass(frozen=True, slots=True)
class ClassifierConfig:
    """Where the classifier model is, how long to wait, and when to ask it."""

    base_url: str
    """OpenAI-compatible base URL, e.g. ``http://ollama:11434/v1``."""
    model: str
    api_key: str | None = None
    timeout_s: float = 0.25
    band: tuple[float, float] = (0.25, 0.75)
    """Ask when the heuristic complexity lies in this band ..."""
    min_confidence: float = 0.5
    """... or its confidence is below this."""
    max_chars: int = 2000
    cache_size: int = 4096
    failure_ttl_s: float = 30.0
    margin_s: float = 0.02
    """Budget kept for the rest of the decision when asking inline."""
    max_background: int = 8
    """Background questions (cache warming) in flight at most."""


@dataclass(frozen=True, slots=True)
class _Entry:
    category: str | None
    level: str | None
    at: float


class LLMClassifier:
    """Asks a small LLM for a prompt's category and complexity when the heuristics are unsure."""

    def __init__(
        self,
        cfg: ClassifierConfig,
        session: aiohttp.ClientSession,
        *,
        analysis: AnalysisConfig | None = None,
    ) -> None:
        self.cfg = cfg
        self._session = session
        self._analysis = analysis or AnalysisConfig()
        self._categories = self._analysis.categories or CORE_CATEGORIES
        self._cache: OrderedDict[bytes, _Entry] = OrderedDict()
        self._inflight: dict[bytes, asyncio.Future[_Entry]] = {}
        self.calls = 0
        self.failures = 0
        self.cache_hits = 0
        self.deferred = 0
        self.dropped = 0
        self._background: set[asyncio.Task[None]] = set()

    def should_ask(self, a: PromptAnalysis) -> bool:
        """Whether the heuristic analysis is unsure enough to ask (low confidence or mid complexity)."""
        lo, hi = self.cfg.band
        return a.confidence < self.cfg.min_confidence or lo <= a.complexity <= hi

    async def refine(self, text: str, a: PromptAnalysis, *, budget_s: float | None = None) -> PromptAnalysis:
        """The heuristic analysis, corrected by the classifier when it is unsure; never raises.
        ``budget_s``: what is left of the caller's deadline (module docstring)."""
        if not self.should_ask(a) or not text.strip():
            return a
        key = hashlib.blake2b(text[: self.cfg.max_chars].encode("utf-8", "surrogatepass"), digest_size=16).digest()
        entry = self._cached(key)
        if entry is None and budget_s is not None and budget_s < self.cfg.timeout_s + self.cfg.margin_s:
            self.deferred += 1
            self._warm(key, text)
            return replace(a, reasons=(*a.reasons, "classifier: no time within the deadline, asked in the background"))
        if entry is None:
            fut = self._inflight.get(key)
            if fut is not None:
                try:
                    entry = await asyncio.shield(fut)
                except asyncio.CancelledError:
                    if not fut.cancelled():
                        raise  # we were cancelled ourselves
                    return a  # the asking request was cancelled: fall back for this one
            else:
                fut = asyncio.get_running_loop().create_future()
                self._inflight[key] = fut
                try:
                    entry = await self._ask(text[: self.cfg.max_chars])
                    fut.set_result(entry)
                finally:
                    if not fut.done():
                        fut.cancel()
                    self._inflight.pop(key, None)
                self._store(key, entry)
        return self._apply(a, entry)

    def _warm(self, key: bytes, text: str) -> None:
        if key in self._inflight:
            return
        if len(self._background) >= self.cfg.max_background:
            self.dropped += 1
            return
        fut: asyncio.Future[_Entry] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut

        async def ask() -> None:
            try:
                entry = await self._ask(text[: self.cfg.max_chars])
                fut.set_result(entry)
                self._store(key, entry)
            finally:
                if not fut.done():
                    fut.cancel()
                self._inflight.pop(key, None)

        task = asyncio.create_task(ask(), name="classifier-warm")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Cancel the background questions (at shutdown)."""
        for t in list(self._background):
            t.cancel()
        for t in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def _cached(self, key: bytes) -> _Entry | None:
        e = self._cache.get(key)
        if e is None:
            return None
        if e.category is None and time.monotonic() - e.at > self.cfg.failure_ttl_s:
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        self.cache_hits += 1
        return e

    def _store(self, key: bytes, e: _Entry) -> None:
        self._cache[key] = e
        if len(self._cache) > self.cfg.cache_size:
            self._cache.popitem(last=False)

    def _apply(self, a: PromptAnalysis, e: _Entry) -> PromptAnalysis:
        if e.category is None or e.level is None:
            return a
        reasons = [*a.reasons]
        category, complexity = a.category, a.complexity
        if e.category != a.category:
            reasons.append(f"classifier {self.cfg.model}: category {e.category} (heuristic said {a.category})")
            category = e.category
        if e.level != a.level:
            complexity = LEVEL_COMPLEXITY[e.level]
            reasons.append(f"classifier {self.cfg.model}: {e.level} (heuristic said {a.level})")
        if category == a.category and complexity == a.complexity:
            reasons.append(f"classifier {self.cfg.model} agrees")
        return replace(
            a,
            category=category,
            complexity=complexity,
            level=e.level,
            reasons=tuple(reasons),
            confidence=1.0,
            source="classifier",
        )

    async def _ask(self, text: str) -> _Entry:
        self.calls += 1
        body = {
            "model": self.cfg.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT.format(categories=", ".join(self._categories))},
                {"role": "user", "content": text},
            ],
            "temperature": 0,
            "max_tokens": 40,
            "response_format": {"type": "json_object"},
            "stream": False,
        }
        headers = {"Content-Type": "application/json"}
        if self.cfg.api_key:
            headers["Authorization"] = f"Bearer {self.cfg.api_key}"
        url = self.cfg.base_url.rstrip("/") + "/chat/completions"
        try:
            async with asyncio.timeout(self.cfg.timeout_s):
                async with self._session.post(url, data=orjson.dumps(body), headers=headers) as resp:
                    if resp.status != 200:
                        raise ClassifierError(f"HTTP {resp.status}")
                    payload = orjson.loads(await resp.read())
            content = payload["choices"][0]["message"]["content"]
            answer = orjson.loads(_json_part(content))
            category = str(answer.get("category", "")).strip().lower()
            level = str(answer.get("difficulty", answer.get("level", ""))).strip().lower()
            if category not in self._categories or level not in LEVELS:
                raise ClassifierError(f"answer out of vocabulary: {category!r}/{level!r}")
            return _Entry(category, level, time.monotonic())
        except (TimeoutError, aiohttp.ClientError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            self.failures += 1
            log.warning("classifier %s failed (%s): using the heuristic", self.cfg.model, type(exc).__name__)
            return _Entry(None, None, time.monotonic())


def _json_part(content: str) -> str:
    """The JSON object in a reply (small models wrap it in prose or code fences)."""
    start, end = content.find("{"), content.rfind("}")
    if start < 0 or end <= start:
        raise ClassifierError("no JSON object in the classifier's answer")
    return content[start : end + 1]
