"""How good a simulated model is: answer quality that depends on its size and on the prompt's
category, so that profiling tells the models apart and routing has something to choose from.

**The answer book.** A file in the profiling suite's format (``prompts:`` with ``prompt``,
``category`` and ``reference``; by default the profiler's own ``suite.yaml``, found without
importing the profiler). When a model is asked one of its prompts, it gives the reference
answer when its chance for the category (:func:`p_correct`) is above the prompt's hardness
(:attr:`Entry.hardness`, spread evenly over the category's prompts), and its usual canned reply
otherwise, which the suite's checks reject. Deterministic, and a category's share of right
answers follows the chance closely even with four prompts.

**Skill.** ``size`` is the parameter count on a log scale (0.5 B → 0, 32 B → 1). A category has
a difficulty (:data:`DIFFICULTY`: general and creative are easy, math and code hard); the chance
of a right answer is ``0.5 + 1.2 · (size − difficulty)``, bounded to [0.03, 0.97]. Coder models
(``coder`` in the name, or the ``insert`` capability) are much better at code and a little at
math, a little worse at prose; vision models are weaker at text. A model's ``skills``
(category → chance) override all of this.

In the default fleet llama3.2:1b has a 93 % chance on general prompts and 15 % on code;
qwen2.5-coder:7b 97 % on code and 85 % on math; Qwen3-30B 97 % on everything. Profiled with the
real suite (tests/integration/test_fleet_skill.py) llama3.2:1b scores code 0.2, math 0.167,
general 1.0 and qwen2.5-coder:7b code 1.0, math 0.833.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from turnout.fakefleet.config import ModelSpec

log = logging.getLogger(__name__)

DIFFICULTY = {
    "general": -0.15,
    "creative": 0.1,
    "extraction": 0.2,
    "instruction": 0.25,
    "reasoning": 0.4,
    "math": 0.45,
    "code": 0.5,
}
CODER_BONUS = {"code": 0.35, "math": 0.1, "general": -0.1, "creative": -0.15}
VISION_MALUS = 0.45
"""Vision models (llava and its kind) are weaker at text-only work than chat models of their size
(this also spreads the general scores, so a greeting goes to the small fast model: with every
model at ~1.0 on general, the scorer's size prior alone decided, for the 8B)."""
SMALLEST_B, LARGEST_B = 0.5, 32.0


def size_score(params: int) -> float:
    b = max(params / 1e9, 1e-3)
    return min(max(math.log2(b / SMALLEST_B) / math.log2(LARGEST_B / SMALLEST_B), 0.0), 1.0)


def is_coder(model: ModelSpec) -> bool:
    return "coder" in model.name.lower() or model.can("insert")


def p_correct(model: ModelSpec, category: str) -> float:
    """The chance that ``model`` answers a prompt of ``category`` right."""
    if model.skills and category in model.skills:
        return model.skills[category]
    p = 0.5 + 1.2 * (size_score(model.params) - DIFFICULTY.get(category, 0.3))
    if is_coder(model):
        p += CODER_BONUS.get(category, 0.0)
    p = min(max(p, 0.03), 0.97)
    return max(p - VISION_MALUS, 0.03) if model.can("vision") else p


def _coin(*parts: str) -> float:
    h = hashlib.blake2b("\0".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


@dataclass(frozen=True, slots=True)
class Entry:
    category: str
    reference: str
    hardness: float
    """Where the prompt sits among its category's prompts, 0..1: a model answers it right when
    its chance for the category is above this. Spread evenly over each category (in a fixed
    hashed order), so that a category's score follows the chance closely even with few prompts,
    and a stronger model answers every prompt a weaker one does."""


class AnswerBook:
    """Prompts with their category and right answer, looked up by the prompt's text."""

    def __init__(self, entries: dict[str, Entry], source: str = "") -> None:
        self._entries = entries
        self.source = source

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _key(prompt: str) -> str:
        return " ".join(prompt.split())

    @classmethod
    def from_suite(cls, doc: Any, source: str = "") -> AnswerBook:
        by_category: dict[str, list[tuple[str, str]]] = {}
        for p in (doc or {}).get("prompts") or []:
            if isinstance(p, dict) and isinstance(p.get("prompt"), str) and isinstance(p.get("reference"), str):
                category = str(p.get("category", "general"))
                by_category.setdefault(category, []).append((cls._key(p["prompt"]), p["reference"].rstrip()))
        entries: dict[str, Entry] = {}
        for category, items in by_category.items():
            ordered = sorted(items, key=lambda kv: _coin("order", kv[0]))
            for rank, (key, reference) in enumerate(ordered):
                entries[key] = Entry(category, reference, (rank + 0.5) / len(ordered))
        return cls(entries, source)

    @classmethod
    def load(cls, where: str | None) -> AnswerBook | None:
        """``where``: a path, ``"auto"`` (the profiler's suite when installed) or None/"" (none)."""
        if not where:
            return None
        path = profiler_suite() if where == "auto" else Path(where)
        if path is None:
            return None
        try:
            book = cls.from_suite(yaml.safe_load(path.read_text()), str(path))
        except (OSError, yaml.YAMLError) as exc:
            if where == "auto":
                log.warning("answer book %s unreadable (%s): models answer without it", path, exc)
                return None
            raise
        log.info("answer book: %d prompt(s) from %s", len(book), path)
        return book

    def lookup(self, prompt: str) -> Entry | None:
        return self._entries.get(self._key(prompt))

    def answer(self, model: ModelSpec, prompt: str) -> str | None:
        """The right answer when ``model`` knows it; None when the prompt is not in the book or
        the model gets it wrong."""
        entry = self.lookup(prompt)
        if entry is None:
            return None
        return entry.reference if entry.hardness < p_correct(model, entry.category) else None


def profiler_suite() -> Path | None:
    """The profiler's ``suite.yaml``, located without importing the profiler (``find_spec`` of
    ``turnout.profiler`` imports only the ``turnout`` namespace)."""
    try:
        spec = importlib.util.find_spec("turnout.profiler")
    except (ImportError, ValueError):
        return None
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(root) / "suite" / "suite.yaml"
        if path.is_file():
            return path
    return None
