"""Rank (model, replica) candidates for one request. Pure and synchronous: no I/O, no awaits.

**Which model.** A concrete ``requested_model`` is honoured: an exact catalog name, else an
alias (``scorer.aliases``), else ``name:latest`` for a bare Ollama name; anything else is
``unservable_code="model_not_found"``. Names in ``scorer.virtual_models`` (and no name) mean
"route for me", and the filters below apply:

* embedding requests → embedding models only; chat/completion → models that generate text
  (embedding-only models removed);
* images → vision models; none at all → ``unservable`` (nothing else could read the image);
* tools → tools-capable models; if there are none, every chat model stays in, and each
  candidate carries the reason "no tools-capable model …" (the model may ignore the tools);
* context: the estimated prompt tokens plus ``max_tokens`` must fit the model's window
  (unknown windows pass); if no window is large enough → ``unservable``.

**Score** (weights in ``scorer.weights``; ``q`` = quality preference 0..1, ``c`` = complexity):

* target size ``t = clamp(0.1 + 0.8·c + 0.6·(q − 0.5), 0.05, 1)`` on the log size scale of
  :func:`~switchyard.scorer.index.power_of` (≈1B for a greeting, ≈30B for a hard coding task);
* ``fit = −w.fit · (2·max(0, t − p) + max(0, p − t))`` — too small costs twice as much as too big;
* ``speed = w.speed · (1 − q) · speed(tok/s)`` — measured (profiles) or estimated from active size;
* ``quality = w.quality · q · quality_estimate[category]`` — size prior, benchmarks, profiles;
* ``category = +w.category`` for a coder model on a code prompt, ``−w.category/2`` on others;
* per replica: ``+w.residency`` when loaded on its host, ``−w.unhealthy`` when the gpu-agent
  reports its backend down, ``−w.memory`` when not loaded and the host lacks the free memory.

Each candidate lists these as ``terms`` (they sum to ``score``) and in words as ``reasons``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from switchyard.common.schemas.route import (
    CandidateV1,
    PromptAnalysisV1,
    RequestKind,
    RouteReplyV1,
    RouteRequestV1,
)
from switchyard.scorer.analysis import Analysis, analyze
from switchyard.scorer.index import B, CatalogIndex, F, LiveIndex, size_of
from switchyard.scorer.settings import ScorerOptions, ScoringWeights

MODEL_NOT_FOUND = "model_not_found"
UNSERVABLE = "unservable"


@dataclass(frozen=True, slots=True)
class RankingConfig:
    weights: ScoringWeights = field(default_factory=ScoringWeights)
    virtual_models: frozenset[str] = frozenset({"switchyard/auto"})
    aliases: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    default_quality: float = 0.5
    max_candidates: int = 8

    @classmethod
    def from_options(cls, o: ScorerOptions) -> RankingConfig:
        return cls(
            weights=o.weights,
            virtual_models=frozenset(o.virtual_models),
            aliases=MappingProxyType(dict(o.aliases)),
            default_quality=o.default_quality,
            max_candidates=o.max_candidates,
        )


def target_power(complexity: float, quality: float) -> float:
    return min(1.0, max(0.05, 0.1 + 0.8 * complexity + 0.6 * (quality - 0.5)))


def resolve_model(name: str, catalog: CatalogIndex, aliases: Mapping[str, str]) -> tuple[int | None, str]:
    """Catalog row of a requested name, and how it was found."""
    idx = catalog.by_name.get(name)
    if idx is not None:
        return idx, "requested model"
    target = aliases.get(name)
    if target is not None and target in catalog.by_name:
        return catalog.by_name[target], f"alias '{name}' -> {target}"
    if ":" not in name.rsplit("/", 1)[-1]:
        idx = catalog.by_name.get(f"{name}:latest")
        if idx is not None:
            return idx, f"'{name}' is '{name}:latest'"
    return None, ""


@dataclass(slots=True)
class _Selection:
    mask: B
    filtered: dict[str, str]
    notes: list[str]
    lead: str | None = None
    unservable: str | None = None


def _drop(sel: _Selection, catalog: CatalogIndex, removed: B, why: str) -> None:
    for i in np.flatnonzero(removed):
        sel.filtered.setdefault(catalog.models[i].name, why)


def _select(req: RouteRequestV1, a: Analysis, catalog: CatalogIndex) -> _Selection:
    """The route-for-me filters (module docstring)."""
    sel = _Selection(mask=np.zeros(catalog.size, dtype=bool), filtered={}, notes=[])
    if req.kind is RequestKind.EMBEDDING:
        _drop(sel, catalog, ~catalog.embedding, "not an embedding model")
        sel.mask = catalog.embedding.copy()
        if not sel.mask.any():
            sel.unservable = "no embedding model is available"
        return sel
    generates = catalog.chat if req.kind is RequestKind.CHAT else catalog.completion
    _drop(sel, catalog, catalog.embedding & ~generates, "embedding-only model")
    _drop(sel, catalog, ~generates & ~catalog.embedding, f"no {req.kind.value} support")
    mask = generates.copy()
    if not mask.any():
        sel.unservable = f"no model supporting {req.kind.value} is available"
        return sel
    if req.has_images:
        vision = mask & catalog.vision
        if not vision.any():
            sel.unservable = "no vision-capable model is available for a request with images"
            return sel
        _drop(sel, catalog, mask & ~catalog.vision, "no vision support")
        mask = vision
    if req.has_tools:
        tools = mask & catalog.tools
        if tools.any():
            _drop(sel, catalog, mask & ~catalog.tools, "no tools support")
            mask = tools
        else:
            sel.notes.append("no tools-capable model available: routed to a chat model that may ignore the tools")
    need = a.tokens + (req.max_tokens or 0)
    fits = catalog.context >= need
    if not (mask & fits).any():
        largest = int(catalog.context[mask].max())
        sel.unservable = f"the request needs ~{need} tokens of context; the largest available window is {largest}"
        return sel
    for i in np.flatnonzero(mask & ~fits):
        sel.filtered.setdefault(catalog.models[i].name, f"context window {int(catalog.context[i])} < ~{need} tokens")
    sel.mask = mask & fits
    return sel


def _select_requested(req: RouteRequestV1, a: Analysis, catalog: CatalogIndex, idx: int, how: str) -> _Selection:
    name = catalog.models[idx].name
    sel = _Selection(mask=np.zeros(catalog.size, dtype=bool), filtered={}, notes=[], lead=how)
    if req.kind is RequestKind.EMBEDDING:
        if not catalog.embedding[idx]:
            sel.unservable = f"model '{name}' is not an embedding model"
    else:
        generates = catalog.chat[idx] if req.kind is RequestKind.CHAT else catalog.completion[idx]
        if not generates:
            what = "an embedding model" if catalog.embedding[idx] else f"a model without {req.kind.value} support"
            sel.unservable = f"model '{name}' is {what}; it cannot serve {req.kind.value} requests"
        if req.has_images and not catalog.vision[idx]:
            sel.notes.append("the requested model has no vision support")
        if req.has_tools and not catalog.tools[idx]:
            sel.notes.append("the requested model has no tools support")
        if catalog.context[idx] < a.tokens + (req.max_tokens or 0):
            sel.notes.append(f"the prompt may exceed the model's context window ({int(catalog.context[idx])})")
    if sel.unservable is None:
        sel.mask[idx] = True
    return sel


def rank(req: RouteRequestV1, live: LiveIndex, cfg: RankingConfig) -> RouteReplyV1:
    catalog = live.catalog
    a = analyze(req)
    analysis = PromptAnalysisV1(category=a.category, complexity=a.complexity, level=a.level, signals=list(a.signals))
    requested = req.requested_model or None
    if requested is not None and requested in cfg.virtual_models:
        requested = None
    if requested is not None:
        idx, how = resolve_model(requested, catalog, cfg.aliases)
        if idx is None:
            return RouteReplyV1(
                analysis=analysis,
                unservable=f"model '{requested}' not found",
                unservable_code=MODEL_NOT_FOUND,
                catalog_version=catalog.version,
            )
        sel = _select_requested(req, a, catalog, idx, how)
    elif catalog.size == 0:
        return RouteReplyV1(analysis=analysis, catalog_version=catalog.version)
    else:
        sel = _select(req, a, catalog)
    if sel.unservable is not None:
        return RouteReplyV1(
            analysis=analysis,
            filtered=sel.filtered,
            unservable=sel.unservable,
            unservable_code=UNSERVABLE,
            catalog_version=catalog.version,
        )
    candidates = _score(req, a, live, cfg, sel)
    return RouteReplyV1(
        candidates=candidates, analysis=analysis, filtered=sel.filtered, catalog_version=catalog.version
    )


def _score(req: RouteRequestV1, a: Analysis, live: LiveIndex, cfg: RankingConfig, sel: _Selection) -> list[CandidateV1]:
    catalog, w = live.catalog, cfg.weights
    q = req.quality if req.quality is not None else cfg.default_quality
    embedding = req.kind is RequestKind.EMBEDDING
    t = target_power(a.complexity, q)
    zeros = np.zeros(catalog.size)
    if embedding:
        fit: F = zeros
        category: F = zeros
    else:
        under = np.maximum(0.0, t - catalog.power)
        over = np.maximum(0.0, catalog.power - t)
        fit = -w.fit * (2.0 * under + over)
        if a.category == "code":
            category = w.category * catalog.coder
        else:
            category = -0.5 * w.category * catalog.coder
    speed: F = w.speed * (1.0 - q) * catalog.speed
    quality: F = w.quality * q * catalog.quality[a.category]
    model_score = fit + speed + quality + category

    rm = catalog.replica_model
    rows = np.flatnonzero(sel.mask[rm])
    replica_score = (
        model_score[rm[rows]]
        + w.residency * live.resident[rows]
        - w.unhealthy * live.unhealthy[rows]
        - w.memory * live.no_room[rows]
    )
    best = rows[np.argsort(-replica_score, kind="stable")[: cfg.max_candidates]]

    head = f"{a.level} {a.category} prompt (complexity {a.complexity:.2f})"
    if not embedding:
        head += f": wants ~{size_of(t):.0f}B"
    lead = [sel.lead, head] if sel.lead else [head]
    coder_note = "coder model for a code prompt" if a.category == "code" else "coder model, non-code prompt"
    # plain Python scalars for the few candidates: numpy scalar access is slow one by one
    models = rm[best]
    fit_l, speed_l = np.round(fit[models], 4).tolist(), np.round(speed[models], 4).tolist()
    quality_l, category_l = np.round(quality[models], 4).tolist(), np.round(category[models], 4).tolist()
    power_l = catalog.power[models].tolist()
    resident_l, unhealthy_l = live.resident[best].tolist(), live.unhealthy[best].tolist()
    no_room_l, coder_l = live.no_room[best].tolist(), catalog.coder[models].tolist()
    out: list[CandidateV1] = []
    for k, (j, i) in enumerate(zip(best.tolist(), models.tolist(), strict=True)):
        replica = catalog.replicas[j]
        terms = {
            "fit": fit_l[k],
            "speed": speed_l[k],
            "quality": quality_l[k],
            "category": category_l[k],
            "residency": w.residency if resident_l[k] else 0.0,
            "health": -w.unhealthy if unhealthy_l[k] else 0.0,
            "memory": -w.memory if no_room_l[k] else 0.0,
        }
        reasons = list(lead)
        if not embedding:
            p = power_l[k]
            fit_word = "smaller than ideal" if p < t - 0.1 else "larger than needed" if p > t + 0.1 else "right size"
            reasons.append(f"{catalog.size_labels[i]}: {fit_word}")
        reasons.append(catalog.speed_reasons[i])
        if catalog.benchmark_reasons[i]:
            reasons.append(catalog.benchmark_reasons[i])
        if coder_l[k] and not embedding:
            reasons.append(coder_note)
        if resident_l[k]:
            reasons.append(f"loaded on {replica.backend}")
        if unhealthy_l[k]:
            reasons.append(f"{replica.backend} reported down by its gpu-agent")
        if no_room_l[k]:
            reasons.append("not loaded, and its host lacks the free memory")
        reasons.extend(sel.notes)
        out.append(
            CandidateV1.model_construct(
                model=catalog.models[i].name,
                backend=replica.backend,
                upstream_model=replica.upstream_model,
                score=round(sum(terms.values()), 4),
                reasons=reasons,
                terms=terms,
            )
        )
    return out
