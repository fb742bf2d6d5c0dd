"""Prompt analysis for routing: a category, a complexity (0..1 and simple/medium/hard), and the
reasons — in well under a millisecond, cached by content hash.

**Category.** Every category gets a score from keyword and structure cues; the highest wins and
``general`` wins ties and the absence of cues. Built in: ``coding`` (fenced code, code-looking
lines, language/tool names, "implement", "refactor" …), ``reasoning`` (maths and logic: "prove",
"step by step", equations, arithmetic, "solve" …), ``creative`` ("story", "poem" …),
``summarisation`` (summarise, extract, "key points", "tl;dr" …), ``translation`` ("translate",
"in French" …) and ``general``. Extra categories come from config as keyword lists
(:class:`AnalysisConfig.extra_categories`); each matching keyword adds 1.

**Complexity** starts at 0.1 and adds (each one named in ``reasons`` with its contribution):

* length: ``0.30 · clamp((log2(tokens+1) − 4) / 8)`` — 16 tokens → 0, 256 → 0.15, 4,096 → 0.30;
* conversation depth: +0.03 per message beyond the second, at most +0.10;
* system prompt: +0.05 past 2,000 characters, +0.10 past 8,000;
* code: a fenced block +0.15, else three or more code-looking lines +0.10;
* tools +0.10, images +0.05, JSON mode +0.05;
* hard cues ("step by step", "prove", "trade-offs", "implement", "thread-safe", "optimise" …):
  +0.14 each, at most +0.42; several questions or a numbered list of requirements: +0.05;
* a coding or reasoning prompt: +0.15 (they fail more often on small models);
* easy cues ("what is", "yes or no", "define", "one word", "briefly" …): −0.10 each, at most −0.20;
* a short greeting or thanks is capped at 0.05.

The level is ``simple`` below ``medium_at`` (0.33), ``hard`` from ``hard_at`` (0.66), else
``medium``. ``confidence`` (0..1) is low when the top two categories are close or the
complexity sits near a level threshold — the optional LLM classifier is asked only then.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from turnout.common.schemas.route import PromptAnalysisV1, RequestKind, RouteRequestV1

CORE_CATEGORIES = ("coding", "reasoning", "creative", "summarisation", "translation", "general")
LEVELS = ("simple", "medium", "hard")

_WORD = re.compile(r"[a-z][a-z0-9+#'_-]*")
_CODE_LINE = re.compile(
    r"(?m)^\s*(?:def |class |function |fn |pub |impl |import |from \S+ import |#include|return\b|const |let |var |"
    r"public |private |SELECT |for \(|if \(|while \(|package |func )|[;{]\s*$"
)
_ARITH = re.compile(r"\d\s*[-+*/^=×÷]\s*\d")
_TEX_MATH = re.compile(r"\$[^$]{1,80}\$")
_NUMBERED = re.compile(r"(?m)^\s*(?:\d+[.)]|[-*•])\s+\S")
_ITEM_START = re.compile(r"\n\s*[\d*•-]")
"""A line whose first character that is not a space could start an item of ``_NUMBERED``: each
match of ``_NUMBERED`` ends on a distinct such line, so fewer of them means fewer items. It starts
with a literal, which the regex engine finds by a fast scan instead of trying every position."""

# word -> weight per category (keyword cues on the lower-cased text)
_CATEGORY_WORDS: dict[str, dict[str, float]] = {
    "coding": dict.fromkeys(
        "python javascript typescript java rust golang c++ c# kotlin swift sql regex function functions bug bugs "
        "compile compiler stacktrace traceback exception refactor debug api endpoint script code coding program "
        "programming class method variable kubernetes docker bash shell html css react django fastapi asyncio "
        "segfault implement implementation unittest pytest repo git json yaml library struct enum lru cache "
        "thread-safe mutex async await runtime npm pip".split(),
        1.0,
    ),
    "reasoning": dict.fromkeys(
        "integral derivative equation equations theorem prove proof matrix matrices probability calculate compute "
        "solve algebra calculus eigenvalue polynomial lemma logic puzzle riddle deduce infer math maths mathematical "
        "arithmetic sum product prime primes geometry triangle percent percentage ratio how-many".split(),
        1.0,
    ),
    "creative": dict.fromkeys(
        "story poem poems lyrics fiction haiku novel sonnet limerick screenplay creative imagine character "
        "characters plot rhyme verse fairy tale roleplay role-play fantasy dialogue".split(),
        1.0,
    ),
    "summarisation": dict.fromkeys(
        "summarise summarize summary summarization summarisation tl;dr tldr extract extraction bullet bullets "
        "outline condense abstract headline key-points recap".split(),
        1.5,
    ),
    "translation": dict.fromkeys(
        "translate translation translated translating traduire übersetze traduce traducir".split(),
        3.0,
    ),
}
_CATEGORY_KEYS = tuple((cat, table, frozenset(table)) for cat, table in _CATEGORY_WORDS.items())
_LANGUAGES = frozenset(
    "english french german spanish italian portuguese dutch russian chinese japanese korean arabic hindi "
    "turkish polish swedish greek hebrew vietnamese thai indonesian ukrainian czech".split()
)
_INTO_LANGUAGE = re.compile(r"\b(?:into|to|in)\s+(" + "|".join(sorted(_LANGUAGES)) + r")\b")

# (label, words, phrases): a cue fires when one of its words is in the prompt's word set or one of
# its phrases is a substring of the lower-cased prompt (no regex scans: they cost ~100 µs each on 4 kB)
_HARD_CUES: tuple[tuple[str, frozenset[str], tuple[str, ...]], ...] = tuple(
    (label, frozenset(ws.split()), phrases)
    for label, ws, phrases in (
        ("step by step", "", ("step by step", "step-by-step")),
        ("prove", "prove proving proof", ()),
        ("trade-offs", "trade-off trade-offs tradeoff tradeoffs", ("pros and cons",)),
        ("implement", "implement implementing implementation", ()),
        ("design", "design architecture architect", ()),
        ("optimise", "optimise optimize optimisation optimization optimising optimizing", ()),
        ("concurrency", "thread-safe concurrent concurrency lock-free distributed", ("thread safe",)),
        ("algorithm", "algorithm algorithms complexity asymptotic", ()),
        ("derive", "derive derivation rigorous rigorously", ()),
        ("with tests", "", ("with tests", "with unit tests", "edge cases")),
        ("analyse", "analyse analyze critique evaluate compare", ()),
        ("debug", "debug", ("root cause",)),
    )
)
_HARD_ORDER = {label: i for i, (label, _, _) in enumerate(_HARD_CUES)}
_HARD_WORD = {w: label for label, ws, _ in _HARD_CUES for w in ws}  # each word in one cue only
_HARD_WORDS = frozenset(_HARD_WORD)
_HARD_PHRASES = tuple((p, label) for label, _, phrases in _HARD_CUES for p in phrases)
_EASY_PHRASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("yes or no", ("yes or no", "true or false")),
    ("define", ("definition of",)),
    ("short answer", ("one word", "one sentence", "briefly", "in short", "short answer")),
)
_WH_START = re.compile(r"\s*(?:what|who|when|where)(?:'s| is| are| was| were)\b")
_PUNCT = str.maketrans(dict.fromkeys('!"$%&()*,./:;<=>?@[\\]^`{|}~', " "))
_GREETINGS = frozenset("hi hello hey hiya yo thanks thank thx morning evening howdy greetings bonjour hola".split())


@dataclass(frozen=True, slots=True)
class AnalysisConfig:
    """The prompt analyser's settings: extra categories, complexity levels, how much text is read."""

    extra_categories: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    """Extra category -> keywords (lower case; single words or phrases)."""
    medium_at: float = 0.33
    hard_at: float = 0.66
    sample_chars: int = 2000
    """Cues are read on the first and last ``sample_chars`` characters of a long prompt."""
    cache_size: int = 4096

    @property
    def categories(self) -> tuple[str, ...]:
        """The core categories, then the extra ones."""
        return CORE_CATEGORIES + tuple(c for c in self.extra_categories if c not in CORE_CATEGORIES)


def prompt_tokens(est_tokens: int, chars: int) -> int:
    """A prompt's size in tokens: the gateway's estimate, else four characters a token."""
    return est_tokens if est_tokens > 0 else max(1, chars // 4)


@dataclass(frozen=True, slots=True)
class PromptFeatures:
    """What the analysis reads (the request fields that matter), hashable for the cache."""

    text: str
    system_chars: int = 0
    n_messages: int = 1
    has_images: bool = False
    has_tools: bool = False
    json_mode: bool = False
    est_tokens: int = 0
    kind: str = RequestKind.CHAT.value

    @classmethod
    def from_request(cls, req: RouteRequestV1) -> PromptFeatures:
        """The features the gateway sent in a route request."""
        return cls(
            req.text,
            req.system_chars,
            req.n_messages,
            req.has_images,
            req.has_tools,
            req.json_mode,
            req.est_prompt_tokens,
            req.kind.value,
        )

    @property
    def tokens(self) -> int:
        """The prompt's size in tokens: :func:`prompt_tokens`."""
        return prompt_tokens(self.est_tokens, len(self.text) + self.system_chars)

    def digest(self) -> bytes:
        """A 16-byte digest of everything the analysis reads (the analysis cache's key)."""
        h = hashlib.blake2b(self.text.encode("utf-8", "surrogatepass"), digest_size=16)
        h.update(
            f"|{self.system_chars}|{self.n_messages}|{self.has_images:d}{self.has_tools:d}{self.json_mode:d}"
            f"|{self.est_tokens}|{self.kind}".encode()
        )
        return h.digest()


@dataclass(frozen=True, slots=True)
class PromptAnalysis:
    """What the analyser found: category, complexity and level, the cues behind them, tokens, confidence."""

    category: str
    complexity: float
    level: str
    reasons: tuple[str, ...]
    tokens: int
    confidence: float
    category_scores: tuple[tuple[str, float], ...] = ()
    source: str = "heuristic"

    def to_wire(self) -> PromptAnalysisV1:
        """The analysis as it travels in RPC replies."""
        return PromptAnalysisV1(
            category=self.category, complexity=self.complexity, level=self.level, signals=list(self.reasons)
        )


def level_of(complexity: float, cfg: AnalysisConfig) -> str:
    """``simple``, ``medium`` or ``hard`` for a complexity in 0..1."""
    return LEVELS[0] if complexity < cfg.medium_at else LEVELS[2] if complexity >= cfg.hard_at else LEVELS[1]


class Analyzer:
    """Heuristic prompt analysis with a bounded LRU cache keyed by the features' content hash."""

    def __init__(self, cfg: AnalysisConfig | None = None) -> None:
        self.cfg = cfg or AnalysisConfig()
        self._cache: OrderedDict[bytes, PromptAnalysis] = OrderedDict()
        self._extra = {
            name: (
                frozenset(k for k in kws if " " not in k),
                tuple(k for k in kws if " " in k),
            )
            for name, kws in self.cfg.extra_categories.items()
        }
        self.hits = 0
        self.misses = 0

    def analyze_request(self, req: RouteRequestV1) -> PromptAnalysis:
        """The analysis of a route request."""
        return self.analyze(PromptFeatures.from_request(req))

    def analyze(self, f: PromptFeatures, key: bytes | None = None) -> PromptAnalysis:
        """``key``: ``f.digest()`` when the caller has it already."""
        key = key or f.digest()
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            self.hits += 1
            return hit
        self.misses += 1
        out = analyze_features(f, self.cfg, self._extra)
        self._cache[key] = out
        if len(self._cache) > self.cfg.cache_size:
            self._cache.popitem(last=False)
        return out


def _at_least(pattern: re.Pattern[str], text: str, n: int) -> bool:
    """``len(pattern.findall(text)) >= n``, stopping at the n-th match."""
    return next(itertools.islice(pattern.finditer(text), n - 1, None), None) is not None


def _several_items(sample: str) -> bool:
    """Three or more numbered or bulleted lines (``_NUMBERED``); most prompts have no such line
    start, which ``_ITEM_START`` tells without the slow per-position scan."""
    return _at_least(_ITEM_START, "\n" + sample, 3) and _at_least(_NUMBERED, sample, 3)


def _sample(text: str, n: int) -> str:
    return text if len(text) <= 2 * n else text[:n] + "\n" + text[-n:]


def _arithmetic(sample: str) -> bool:
    """A formula: digits around an operator, TeX commands or inline TeX math (three cheap checks
    instead of one alternation, which tried every branch at every position: ~130 → ~70 µs on 2 kB)."""
    if "\\" in sample and ("\\frac" in sample or "\\sum" in sample or "\\int" in sample):
        return True
    if "$" in sample and _TEX_MATH.search(sample):
        return True
    return any(map(str.isdigit, sample)) and _ARITH.search(sample) is not None


def _category_scores(
    low: str,
    words: set[str],
    sample: str,
    extra: Mapping[str, tuple[frozenset[str], tuple[str, ...]]],
    why: dict[str, list[str]],
) -> dict[str, float]:
    scores = dict.fromkeys(CORE_CATEGORIES, 0.0)
    scores["general"] = 0.5
    for cat, table, keys in _CATEGORY_KEYS:
        hit = sorted(keys.intersection(words))
        if hit:
            scores[cat] += sum(table[w] for w in hit)
            why[cat].append("words " + "/".join(hit[:4]))
    if "```" in sample:
        scores["coding"] += 3.0
        why["coding"].append("code block")
    elif sample.count("\n") >= 2 and _at_least(_CODE_LINE, sample, 3):
        scores["coding"] += 2.0
        why["coding"].append("code-looking lines")
    if _arithmetic(sample):
        scores["reasoning"] += 1.5
        why["reasoning"].append("arithmetic/formula")
    m = _INTO_LANGUAGE.search(low) if scores["translation"] > 0 else None
    if m:
        scores["translation"] += 1.0
        why["translation"].append(f"target language {m.group(1)}")
    if "key points" in low or "main points" in low:
        scores["summarisation"] += 1.5
        why["summarisation"].append("'key points'")
    if "step by step" in low or "step-by-step" in low:
        scores["reasoning"] += 1.0
        why["reasoning"].append("'step by step'")
    for name, (single, phrases) in extra.items():
        hit = sorted(words & single) + [p for p in phrases if p in low]
        if hit:
            scores[name] = scores.get(name, 0.0) + float(len(hit))
            why[name].append("words " + "/".join(hit[:4]))
    return scores


def analyze_features(
    f: PromptFeatures,
    cfg: AnalysisConfig,
    extra: Mapping[str, tuple[frozenset[str], tuple[str, ...]]] | None = None,
) -> PromptAnalysis:
    """The analysis itself (no cache): see the module docstring for every rule."""
    tokens = f.tokens
    if f.kind == RequestKind.EMBEDDING.value:
        return PromptAnalysis("general", 0.0, LEVELS[0], ("embedding request",), tokens, 1.0)
    extra = extra if extra is not None else {n: (frozenset(k), ()) for n, k in cfg.extra_categories.items()}
    sample = _sample(f.text, cfg.sample_chars)
    low = sample.lower()
    words = {w.strip("'-_") for w in set(low.translate(_PUNCT).split())}  # strip each distinct word once
    why: dict[str, list[str]] = {c: [] for c in (*CORE_CATEGORIES, *extra)}
    scores = _category_scores(low, words, sample, extra, why)
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0] != "general"))
    category, top = ranked[0]
    second = ranked[1][1] if len(ranked) > 1 else 0.0
    cat_conf = min(1.0, (top - second) / max(top, 1e-9) + (0.3 if top >= 3 else 0.0))

    c, reasons = _complexity(f, sample, low, words, category, "code-looking lines" in why["coding"])
    c = round(min(1.0, max(0.0, c)), 4)
    dist = min(abs(c - cfg.medium_at), abs(c - cfg.hard_at))
    conf = round(min(cat_conf, min(1.0, dist / 0.15)), 4)
    cat_reason = f"category {category}"
    if why.get(category):
        cat_reason += ": " + "; ".join(why[category])
    elif category == "general":
        cat_reason += ": no strong cue"
    return PromptAnalysis(
        category=category,
        complexity=c,
        level=level_of(c, cfg),
        reasons=(cat_reason, *reasons),
        tokens=tokens,
        confidence=conf,
        category_scores=tuple((k, round(v, 3)) for k, v in ranked if v > 0),
    )


def _structure(f: PromptFeatures, sample: str, code_lines: bool) -> list[tuple[float, str]]:
    out: list[tuple[float, str]] = []
    tokens = f.tokens
    length = min(1.0, max(0.0, (math.log2(tokens + 1) - 4.0) / 8.0))
    if length > 0:
        out.append((0.30 * length, f"~{tokens} tokens"))
    if f.n_messages > 2:
        out.append((min(0.10, 0.03 * (f.n_messages - 2)), f"{f.n_messages} messages"))
    if f.system_chars > 2000:
        out.append((0.10 if f.system_chars > 8000 else 0.05, f"system prompt {f.system_chars} chars"))
    if "```" in sample:
        out.append((0.15, "code block"))
    elif code_lines:
        out.append((0.10, "code-looking lines"))
    for flag, delta, label in (
        (f.has_tools, 0.10, "tools"),
        (f.has_images, 0.05, "images"),
        (f.json_mode, 0.05, "JSON mode"),
    ):
        if flag:
            out.append((delta, label))
    return out


def _cues(sample: str, low: str, words: set[str], category: str) -> tuple[list[tuple[float, str]], bool]:
    out: list[tuple[float, str]] = []
    found = {_HARD_WORD[w] for w in _HARD_WORDS.intersection(words)}
    found.update(label for p, label in _HARD_PHRASES if p in low)
    hard = sorted(found, key=_HARD_ORDER.__getitem__)
    if hard:
        out.append((min(0.42, 0.14 * len(hard)), "cues " + ", ".join(f"'{h}'" for h in hard)))
    if sample.count("?") >= 3 or _several_items(sample):
        out.append((0.05, "several questions or requirements"))
    if category in ("coding", "reasoning"):
        out.append((0.15, f"{category} prompt"))
    easy = ["what is"] if _WH_START.match(low) else []
    if low.lstrip().startswith("define "):
        easy.append("define")
    easy += [label for label, phrases in _EASY_PHRASES if any(p in low for p in phrases) and label not in easy]
    if easy:
        out.append((-min(0.20, 0.10 * len(easy)), "easy cues " + ", ".join(f"'{e}'" for e in easy)))
    return out, bool(hard)


def _complexity(
    f: PromptFeatures, sample: str, low: str, words: set[str], category: str, code_lines: bool
) -> tuple[float, list[str]]:
    """Complexity before clamping, and the reasons (module docstring)."""
    cues, hard = _cues(sample, low, words, category)
    parts = _structure(f, sample, code_lines) + cues
    c = 0.1 + sum(d for d, _ in parts)
    reasons = [f"{label} ({d:+.2f})" for d, label in parts]
    first = _WORD.match(low.lstrip())
    if f.tokens < 24 and first is not None and first.group(0) in _GREETINGS and not hard:
        if c > 0.05:
            reasons.append(f"short greeting (capped at 0.05 from {c:.2f})")
        c = min(c, 0.05)
    return c, reasons
