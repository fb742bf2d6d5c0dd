"""Public model names → local model names, with a confidence.

``meta-llama/Llama-3.1-8B-Instruct`` (Hugging Face), ``llama-3.1-8b-instruct`` (LMArena) and
``Llama 3.1 Instruct 8B`` (Artificial Analysis) all name the model served locally as
``llama3.1:8b-instruct-q4_K_M`` or ``llama3.1:8b``.

**Normalisation** (:func:`normalise`): the organisation and registry path are dropped
(``meta-llama/``, ``hf.co/bartowski/``), then quantisation and file-format markers
(``q4_K_M``, ``fp16``, ``gguf``, ``awq`` …), context-length markers (``4k``, ``128k``, ``1m``) and
noise (``latest``, ``hf``, ``free``). What is left is split into words (``llama3.1`` →
``llama 3.1``; ``qwen2.5vl`` → ``qwen 2.5 vl``) and read as:

* family — the first word (a leading ``meta`` before ``llama`` is dropped);
* version — the first plain number (``3.1``; ``v0.3`` → ``0.3``; ``3.0`` == ``3``);
* size — total parameters (``8b``, ``135m``, ``8x7b`` = 56B total) and MoE active size (``a3b``);
  the local model's known parameter count (Ollama's ``parameter_size``) fills in when its name
  has none;
* role — instruct (``instruct``, ``chat``, ``it``, ``sft``) or base (``base``, ``text``, ``pt``);
  an Ollama tag without either is the instruct model (Ollama's convention);
* variants that make a different model — ``coder``, ``math``, ``vision``/``vl``, ``embed``,
  ``guard``, ``r1``, ``distill``, ``nemo``, ``mini``/``small``/``large`` …;
* other words (fine-tune names, ``oss`` …) and release dates (``2407``, ``20241022``).

**Matching** (:class:`NameMatcher`): hard rules first — same family, same version (a missing
version matches only a missing one), sizes equal within 10 % when both are known, MoE active
sizes equal when both are known, same variants, no instruct/base conflict. Candidates that pass
are scored with rapidfuzz's ``token_sort_ratio`` over family, version, variants and other words
(so an extra fine-tune word such as ``nemotron`` lowers the score), times 0.9 when only one
side's size is known, 0.9 when only one side has a revision tag (``Mixtral-8x7B-Instruct-v0.1``
vs ``mixtral:8x7b``; a family version such as Gemma's ``2`` must match exactly) and 0.95 when only
one side's role is known. A MoE name (``a3b``) and a dense one match only at the same total size. The best
candidate at or above the threshold (default 0.85) wins; ties go to the shorter, then
alphabetically first, local name. An override map (public name → local name, or ``None`` for
"never match") is consulted first, case-insensitively, with confidence 1.0.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal, Protocol

from rapidfuzz import fuzz

MatchMethod = Literal["override", "exact", "fuzzy"]

_QUANT = re.compile(
    r"(?<![a-z0-9])(?:i?q\d(?:_[a-z0-9]+)*|f16|fp16|bf16|f32|fp32|fp8|int4|int8|awq|gptq|mlx|exl2|gguf|ggml"
    r"|\d+bit|w\d+a\d+|nf4|bnb)(?![a-z0-9])"
)
_SPLIT = re.compile(r"[\s_:/,()\[\]+-]+")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([bm])$")
_MOE = re.compile(r"^(\d+)x(\d+(?:\.\d+)?)b$")
_ACTIVE = re.compile(r"^a(\d+(?:\.\d+)?)b$")
_CONTEXT = re.compile(r"^\d+(?:\.\d+)?k$")
_VERSION = re.compile(r"^v?(\d+(?:\.\d+)*)$")
_DATE = re.compile(r"^(?:\d{4}|\d{6}|\d{8})$")
_ALPHA_DIGIT = re.compile(r"^([a-z]{3,})(\d+(?:\.\d+)*)([a-z]*)$")
_DIGIT_ALPHA = re.compile(r"^(\d+(?:\.\d+)*)([a-z]{2,})$")

INSTRUCT_WORDS = frozenset({"instruct", "chat", "it", "sft", "rlhf", "dpo"})
BASE_WORDS = frozenset({"base", "text", "pt", "pretrained"})
SIZE_WORDS = frozenset({"nano", "micro", "tiny", "mini", "small", "medium", "large", "xl", "xxl"})
VARIANT_WORDS = frozenset(
    {
        "coder",
        "math",
        "vision",
        "embed",
        "guard",
        "r1",
        "distill",
        "nemo",
        "audio",
        "omni",
        "moe",
        "reasoning",
        "thinking",
        "turbo",
        "flash",
        "pro",
        "plus",
        "max",
        "lite",
        "abliterated",
        "uncensored",
    }
    | SIZE_WORDS
)
_SYNONYMS = {"code": "coder", "vl": "vision", "embedding": "embed", "v": "vision"}
_NOISE = frozenset({"latest", "hf", "free", "gguf", "ggml", "model", "the", "preview", "exp", "extended", "beta"})
_BRANDS = frozenset({"meta"})


@dataclass(frozen=True, slots=True)
class NameKey:
    """A model name taken apart: family, version, size, active size, instruct, variants."""

    raw: str
    family: str
    version: str | None
    size_b: float | None
    active_b: float | None
    instruct: bool | None
    variants: frozenset[str]
    others: tuple[str, ...]
    dates: tuple[str, ...] = ()
    soft_version: bool = False
    """The version came from a ``v``-prefixed revision tag (``v0.3``) rather than the family name."""

    @property
    def text(self) -> str:
        """What fuzzy matching compares: family, version, variants and other words."""
        parts = [self.family, self.version or "", *sorted(self.variants), *self.others]
        return " ".join(p for p in parts if p)

    @property
    def text_without_version(self) -> str:
        """The family, variants and other parts, without the version (fuzzy matching's text)."""
        return " ".join(p for p in (self.family, *sorted(self.variants), *self.others) if p)


SAME_NAME = "same name"


@dataclass(frozen=True, slots=True)
class LocalModel:
    """A catalog model that benchmark names are matched against."""

    name: str
    params_b: float | None = None
    active_params_b: float | None = None
    upstream: tuple[str, ...] = ()
    """The names backends serve it under (``gpt-4o-mini`` for ``cloud/gpt-4o-mini``), matched too."""


@dataclass(frozen=True, slots=True)
class Match:
    """A public benchmark name linked to a catalog model, how sure, and by which method."""

    public: str
    local: str
    confidence: float
    method: MatchMethod
    detail: str = ""


def _tokens(name: str) -> list[str]:
    low = name.strip().lower()
    low = low.rsplit("/", 1)[-1] if "/" in low.rstrip("/") else low
    low = low.removesuffix(".gguf")
    low = _QUANT.sub(" ", low)
    out: list[str] = []
    for tok in _SPLIT.split(low):
        tok = tok.strip(".")
        if not tok:
            continue
        m = _ALPHA_DIGIT.match(tok)
        if m and not _ACTIVE.match(tok):
            out.extend(t for t in m.groups() if t)
            continue
        m = _DIGIT_ALPHA.match(tok)
        if m and not _SIZE.match(tok) and not _CONTEXT.match(tok) and m.group(2) not in ("bit",):
            out.extend(m.groups())
            continue
        out.append(tok)
    return out


@dataclass
class _Parts:
    family: str = ""
    version: str | None = None
    soft_version: bool = False
    size: float | None = None
    active: float | None = None
    instruct: bool | None = None
    variants: set[str] = field(default_factory=set)
    others: list[str] = field(default_factory=list)
    dates: list[str] = field(default_factory=list)

    def take(self, i: int, tok: str) -> None:
        if (m := _MOE.match(tok)) is not None:
            n, each = int(m.group(1)), float(m.group(2))
            self.size, self.active = self.size or n * each, self.active or min(n, 2) * each
        elif (m := _ACTIVE.match(tok)) is not None:
            self.active = float(m.group(1))
        elif (m := _SIZE.match(tok)) is not None:
            # "1m" is a context length, not 0.001B parameters: millions count from 10M up
            if self.size is None and (m.group(2) == "b" or float(m.group(1)) >= 10):
                self.size = float(m.group(1)) / (1000.0 if m.group(2) == "m" else 1.0)
        elif _CONTEXT.match(tok):
            pass
        elif _DATE.match(tok):
            self.dates.append(tok)
        elif (m := _VERSION.match(tok)) is not None and self.version is None:
            self.version = _canon_version(m.group(1))
            self.soft_version = tok.startswith("v") and i > 1
        elif tok in INSTRUCT_WORDS:
            self.instruct = True
        elif tok in BASE_WORDS:
            self.instruct = False
        elif tok in VARIANT_WORDS:
            self.variants.add(tok)
        else:
            self.others.append(tok)


@lru_cache(maxsize=8192)
def normalise(name: str, *, local: bool = False) -> NameKey:
    """The comparable parts of a model name (see the module docstring)."""
    toks = [_SYNONYMS.get(t, t) for t in _tokens(name)]
    toks = [t for t in toks if t not in _NOISE]
    if len(toks) > 1 and toks[0] in _BRANDS:
        toks = toks[1:]
    parts = _Parts()
    for i, tok in enumerate(toks):
        if i == 0 and tok.isalpha():
            parts.family = tok
        else:
            parts.take(i, tok)
    if not parts.family and toks:
        parts.family = toks[0]
    if local and parts.instruct is None and ":" in name:
        parts.instruct = True  # Ollama tags name the chat model unless they say -text / -base
    active = parts.active
    if active is not None and parts.size is not None and active >= parts.size:
        active = None
    return NameKey(
        raw=name,
        family=parts.family,
        version=parts.version,
        size_b=parts.size,
        active_b=active,
        instruct=parts.instruct,
        variants=frozenset(parts.variants),
        others=tuple(parts.others),
        dates=tuple(parts.dates),
        soft_version=parts.soft_version,
    )


def _canon_version(v: str) -> str:
    parts = v.split(".")
    while len(parts) > 1 and parts[-1] == "0":
        parts.pop()
    return ".".join(parts)


def _same_size(a: float | None, b: float | None) -> bool | None:
    if a is None or b is None:
        return None
    return abs(a - b) <= 0.1 * max(a, b)


def compare(public: NameKey, local: NameKey) -> tuple[float, str]:
    """Confidence 0..1 that two names are the same model (0 when a hard rule fails), and why."""
    if public.family != local.family:
        return 0.0, "family differs"
    why = []
    conf = 1.0
    if public.version != local.version:
        missing = local if local.version is None else public if public.version is None else None
        other = public if missing is local else local
        if missing is None or not other.soft_version:
            return 0.0, "version differs"
        conf *= 0.9
        why.append("revision known on one side")
    size_same = _same_size(public.size_b, local.size_b)
    if size_same is False:
        return 0.0, "size differs"
    if _same_size(public.active_b, local.active_b) is False:
        return 0.0, "active size differs"
    if (public.active_b is None) != (local.active_b is None) and public.size_b != local.size_b:
        return 0.0, "MoE on one side only, sizes differ"
    pv, lv = public.variants - SIZE_WORDS, local.variants - SIZE_WORDS
    if pv != lv:
        return 0.0, f"variants differ ({'/'.join(sorted(pv ^ lv))})"
    ps, ls = public.variants & SIZE_WORDS, local.variants & SIZE_WORDS
    if ps and ls and ps != ls:
        return 0.0, "size class differs"
    if public.instruct is not None and local.instruct is not None and public.instruct != local.instruct:
        return 0.0, "instruct/base differs"
    a, b = public.text, local.text
    if public.version != local.version:  # a soft revision known on one side: compare the rest
        a, b = public.text_without_version, local.text_without_version
    a, b = " ".join(sorted(a.split())), " ".join(sorted(b.split()))
    conf *= 1.0 if a == b else fuzz.token_sort_ratio(a, b) / 100.0
    if size_same is None and (public.size_b is not None or local.size_b is not None):
        conf *= 0.9
        why.append("size known on one side")
    if public.instruct is None or local.instruct is None:
        conf *= 0.95
        why.append("role known on one side")
    return round(conf, 4), ", ".join(why)


@dataclass
class NameMatcher:
    """Matches public names against a fixed set of local models."""

    local_models: Iterable[LocalModel | str]
    threshold: float = 0.85
    overrides: Mapping[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._locals: list[tuple[LocalModel, NameKey]] = []
        for m in self.local_models:
            lm = m if isinstance(m, LocalModel) else LocalModel(m)
            for name in dict.fromkeys((lm.name, *lm.upstream)):
                key = normalise(name, local=True)
                if key.size_b is None and lm.params_b is not None:
                    key = _with_size(key, lm.params_b, lm.active_params_b)
                self._locals.append((lm, key))
        self._local_names = {lm.name for lm, _ in self._locals}
        self._exact: dict[str, str] = {}  # a name as a local model or a backend spells it: exact
        for lm, _ in self._locals:
            for name in (lm.name, *lm.upstream):
                self._exact.setdefault(name.strip().lower(), lm.name)
        self._overrides = {k.strip().lower(): v for k, v in self.overrides.items()}

    def match(self, public: str, aliases: Sequence[str] = ()) -> Match | None:
        """The best local model for ``public`` (or any of its ``aliases``), or ``None``."""
        for name in (public, *aliases):
            key = name.strip().lower()
            if key in self._overrides:
                target = self._overrides[key]
                if target is None or target not in self._local_names:
                    return None
                return Match(public, target, 1.0, "override")
        for name in (public, *aliases):
            local = self._exact.get(name.strip().lower())
            if local is not None:
                return Match(public, local, 1.0, "exact", SAME_NAME)
        best: Match | None = None
        for name in (public, *aliases):
            for m in self.candidates(name):
                m = Match(public, m.local, m.confidence, m.method, m.detail)
                if best is None or _better(m, best):
                    best = m
                break
        return best

    def candidates(self, public: str) -> list[Match]:
        """Every local model at or above the threshold, best first."""
        pkey = normalise(public)
        out = []
        for lm, lkey in self._locals:
            conf, why = compare(pkey, lkey)
            if conf >= self.threshold:
                method: MatchMethod = "exact" if conf >= 0.999 else "fuzzy"
                out.append(Match(public, lm.name, conf, method, why))
        out.sort(key=lambda m: (-m.confidence, len(m.local), m.local))
        best: dict[str, Match] = {}  # a model matched by its name and an upstream name: its best match
        for m in out:
            best.setdefault(m.local, m)
        return list(best.values())


class Linkable(Protocol):
    """A benchmark row the matcher can link: its source, metric and the names it goes by."""

    @property
    def source(self) -> str: ...
    @property
    def metric(self) -> str: ...
    @property
    def raw_model(self) -> str: ...
    @property
    def aliases(self) -> tuple[str, ...]: ...


def link(rows: Sequence[Linkable], matcher: NameMatcher) -> list[Match | None]:
    """The local model each row belongs to, aligned with ``rows``. Within one (source, metric) a
    local model is linked to one public name only — the most confident (an instruct row beats
    its base model's, an exact name beats a fuzzy one); the other rows stay unlinked."""
    matches = [matcher.match(r.raw_model, r.aliases) for r in rows]
    best: dict[tuple[str, str, str], int] = {}
    for i, (row, m) in enumerate(zip(rows, matches, strict=True)):
        if m is None:
            continue
        key = (row.source, row.metric, m.local)
        j = best.get(key)
        if j is None or _better(m, matches[j]):  # type: ignore[arg-type]
            best[key] = i
    keep = set(best.values())
    return [m if i in keep else None for i, m in enumerate(matches)]


def _better(a: Match, b: Match) -> bool:
    """More confident wins; at equal confidence the row spelling the local name itself."""
    same_a, same_b = a.detail == SAME_NAME, b.detail == SAME_NAME
    return (a.confidence, same_a, -len(a.local), b.local) > (b.confidence, same_b, -len(b.local), a.local)


def _with_size(key: NameKey, params_b: float, active_b: float | None) -> NameKey:
    return NameKey(
        raw=key.raw,
        family=key.family,
        version=key.version,
        size_b=params_b,
        active_b=key.active_b if key.active_b is not None else (active_b if active_b != params_b else None),
        instruct=key.instruct,
        variants=key.variants,
        others=key.others,
        dates=key.dates,
        soft_version=key.soft_version,
    )


__all__ = ["LocalModel", "Match", "NameKey", "NameMatcher", "compare", "link", "normalise"]
