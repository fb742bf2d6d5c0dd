"""The scoring model: hard filters, then a weighted sum of terms per (model, replica), then the
ranked candidates with their reasons. Pure functions over frozen slotted dataclasses and numpy
arrays; no I/O. Where each part lives: the catalog table ``catalog.py``, the fleet join
``fleet.py``, the filters ``filters.py``, the terms ``terms.py``, the weights
``scoring_config.py``; this module selects and explains (:func:`rank`, :func:`choose`) and
re-exports the names a caller of the scoring model needs, so one import serves.

**Filters** (a removed model is listed in ``filtered`` with the reason):

1. kind: embedding requests → embedding models only; chat/completion → models that generate;
2. images → vision models; tools → tools models;
3. context: estimated prompt tokens + ``max_tokens`` must fit the window (unknown windows pass);
4. operator rules: block list, allow list, a client's backend restriction.

**Fallback when the filters leave nothing** (each step adds a note to every candidate):

* no vision model for images → ``unservable`` (400) when ``unservable_without_vision`` (default),
  else the image requirement is dropped;
* no tools model → the tools requirement is dropped (the model may ignore the tools);
* nothing fits the context → ``unservable`` unless ``relax_context``, then the largest window;
* the allow list or a client's backend rule leaves nothing → that rule is ignored; the block
  list is never relaxed; nothing left at all → ``unservable``.

**Terms** (``q`` = quality preference 0..1, ``c`` = complexity, ``imp = 0.4 + 0.6·c``); each
candidate reports them in ``terms`` and they sum to its ``score``:

* ``capability = w.capability · q · imp · cap'`` and ``learned`` (same, for the learned share):
  ``cap`` = profile and benchmark scores for the category shrunk towards a size prior fitted on the
  fleet (an unknown model gets the prior of its size: neither favoured nor punished); with
  learned estimates ``p`` from ``n_eff`` close neighbours, ``quality = (1−a)·cap + a·p`` with
  ``a = n_eff / (n_eff + learned_k)``; ``'`` = scaled by the catalog's spread for the category
  (the learned share: by the overall spread);
* ``speed = w.speed · (1−q) · speed'`` — tokens/s and TTFT on log scales (measured, else
  estimated from active parameters), scaled to the catalog's range; ``cost`` likewise from price;
* ``min_size = −w.min_size · clamp(log2(required / size) / 3)`` for the category × level table;
* ``coder = +w.coder`` for a coder model on a coding prompt, ``−w.coder/2`` elsewhere;
* ``feedback = w.feedback · mean · n/(n+5)`` (decayed user feedback, −1..1);
* ``diversity = −w.diversity · max(0, share − 1/models)`` (recent-use share);
* ``tier = −w.tier · |tier − target|`` — only with ``policy="tiers"``, which then replaces
  capability, speed, cost and min_size; ``target`` rises with complexity and ``q``;
* per replica: ``resident`` (+, loaded in VRAM), ``unhealthy`` (−), ``no_room`` (−, not loaded
  and the host lacks the memory), ``free_vram`` (+, share free), ``busy`` (−, requests in flight).

Everything but ``capability``/``learned``/``speed``/``cost`` is independent of ``q``, and those
are linear in it, so raising ``q`` moves the choice towards models with more capability and less
speed — with capability and speed following size, never to a smaller model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from turnout.common.schemas.route import CandidateV1, RouteReplyV1, RouteRequestV1
from turnout.scorer.catalog import B, F, ModelSpec, ModelTable
from turnout.scorer.filters import Constraints, Selection, select, select_requested
from turnout.scorer.fleet import FleetState, ReplicaTable
from turnout.scorer.prompt_analysis import PromptAnalysis
from turnout.scorer.scoring_config import OVERALL, TIERS, ScoringConfig, Weights
from turnout.scorer.terms import REPLICA_TERMS, Learned, ModelState, TermArrays, model_terms, replica_terms

__all__ = [
    "OVERALL",
    "TIERS",
    "Constraints",
    "FleetState",
    "Learned",
    "ModelSpec",
    "ModelState",
    "ModelTable",
    "Ranking",
    "ReplicaTable",
    "Scored",
    "ScoringConfig",
    "Weights",
    "choose",
    "model_terms",
    "rank",
    "select",
]

MODEL_NOT_FOUND = "model_not_found"
UNSERVABLE = "unservable"


@dataclass(frozen=True, slots=True)
class Scored:
    model: str
    backend: str
    upstream_model: str
    score: float
    terms: Mapping[str, float]
    reasons: tuple[str, ...]

    def to_wire(self) -> CandidateV1:
        return CandidateV1(
            model=self.model,
            backend=self.backend,
            upstream_model=self.upstream_model,
            score=self.score,
            reasons=list(self.reasons),
            terms=dict(self.terms),
        )


@dataclass(frozen=True, slots=True)
class Ranking:
    analysis: PromptAnalysis
    candidates: tuple[Scored, ...] = ()
    filtered: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    notes: tuple[str, ...] = ()
    unservable: str | None = None
    unservable_code: str | None = None
    catalog_version: str = ""
    quality: float = 0.5
    """The quality preference the decision used."""
    chosen: int = -1
    """Model row of the first candidate (−1: none); for benchmarks and tests."""

    def to_reply(self, max_candidates: int = 8) -> RouteReplyV1:
        return RouteReplyV1(
            candidates=[c.to_wire() for c in self.candidates[:max_candidates]],
            analysis=self.analysis.to_wire(),
            filtered=dict(self.filtered),
            unservable=self.unservable,
            unservable_code=self.unservable_code,
            catalog_version=self.catalog_version,
        )


def rank(
    req: RouteRequestV1,
    a: PromptAnalysis,
    table: ModelTable,
    reps: ReplicaTable,
    cfg: ScoringConfig,
    *,
    cons: Constraints | None = None,
    state: ModelState | None = None,
    learned: Learned | None = None,
    limit: int | None = 8,
) -> Ranking:
    """Filters, terms, ranking; ``limit=None`` explains every candidate."""
    cons = cons or Constraints()
    need = a.tokens + (req.max_tokens or 0)
    if cons.requested is not None:
        idx = table.index.get(cons.requested)
        if idx is None:
            return Ranking(
                a,
                unservable=f"model '{cons.requested}' not found",
                unservable_code=MODEL_NOT_FOUND,
                catalog_version=table.version,
            )
        sel = select_requested(req, idx, need, table)
        if cons.requested_how:
            sel.notes.insert(0, cons.requested_how)
    else:
        sel = select(req.kind, req.has_images, req.has_tools, need, table, cons, cfg)
    if sel.unservable is not None:
        return Ranking(
            a,
            filtered=MappingProxyType(sel.filtered),
            unservable=sel.unservable,
            unservable_code=UNSERVABLE,
            catalog_version=table.version,
        )
    rmask = sel.mask[reps.model]
    if cons.backends is not None:
        on = np.array([b in cons.backends for b in reps.backend], dtype=bool)
        if (rmask & on).any():
            rmask = rmask & on
        else:
            sel.notes.append("the client's backend rule leaves no suitable replica: ignored")
    q = req.quality if req.quality is not None else cons.quality if cons.quality is not None else cfg.default_quality
    terms = model_terms(a, q, table, cfg, state, learned if cons.requested is None else None)
    mscore = terms.total
    rterms = replica_terms(reps, cfg)
    rscore = mscore[reps.model] + rterms.sum(axis=0)
    rows = np.flatnonzero(rmask)
    if rows.size == 0:
        return Ranking(
            a,
            filtered=MappingProxyType(sel.filtered),
            notes=tuple(sel.notes),
            unservable="no replica is available",
            unservable_code=UNSERVABLE,
            catalog_version=table.version,
        )
    order = rows[np.argsort(-rscore[rows], kind="stable")]
    if cons.pinned is not None and cons.requested is None:
        pin = table.index.get(cons.pinned)
        if pin is not None:
            first = order[reps.model[order] == pin]
            if first.size:
                order = np.concatenate([first, order[reps.model[order] != pin]])
                sel.notes.append(f"pinned for {a.category} prompts: {cons.pinned}")
    chosen = int(reps.model[order[0]])
    if limit is not None:
        order = order[:limit]
    cands = tuple(_scored(int(j), a, q, table, reps, terms, rterms, rscore, sel, cons) for j in order)
    return Ranking(
        a,
        cands,
        MappingProxyType(sel.filtered),
        tuple(sel.notes),
        catalog_version=table.version,
        quality=q,
        chosen=chosen,
    )


def choose(a: PromptAnalysis, q: float, table: ModelTable, mask: B, cfg: ScoringConfig, learned: Learned | None) -> int:
    """The best model row among ``mask`` (no replicas, no reasons): the benchmark's inner loop."""
    s = model_terms(a, q, table, cfg, None, learned).total
    s = np.where(mask, s, -np.inf)
    return int(np.argmax(s))


def _scored(
    j: int,
    a: PromptAnalysis,
    q: float,
    table: ModelTable,
    reps: ReplicaTable,
    terms: TermArrays,
    rterms: F,
    rscore: F,
    sel: Selection,
    cons: Constraints,
) -> Scored:
    i = int(reps.model[j])
    spec = table.specs[i]
    t = {name: round(float(terms.values[k, i]), 4) for k, name in enumerate(terms.names) if terms.values[k, i] != 0.0}
    t.update({name: round(float(rterms[k, j]), 4) for k, name in enumerate(REPLICA_TERMS) if rterms[k, j] != 0.0})
    size = f"{table.params_b[i]:g}B" if table.size_known[i] else "size unknown"
    if table.eff_b[i] < table.params_b[i] - 1e-6:
        size += f" (MoE, ~{table.eff_b[i]:.0f}B effective)"
    cat = a.category if a.category in table.capability else OVERALL
    ev = float(table.evidence[cat][i])
    reasons = [
        f"{a.level} {a.category} prompt (complexity {a.complexity:.2f}), quality preference {q:.2f}",
        f"{size}, {TIERS[int(table.tier[i])]} tier",
        f"capability {table.capability[cat][i]:.2f} for {cat}"
        + (f" ({ev:.0f} graded prompts/benchmark)" if ev > 0 else " (size prior: no profile or benchmark)"),
        f"~{table.tokens_per_s[i]:.0f} tok/s ({'measured' if table.speed_measured[i] else 'estimated'})",
    ]
    bench = spec.benchmark.get(cat, spec.benchmark.get(OVERALL))
    if bench is not None:
        reasons.append(f"benchmark {bench:.2f}")
    if t.get("learned"):
        reasons.append(f"learned from similar graded prompts ({t['learned']:+.3f})")
    if t.get("min_size", 0.0) < 0:
        reasons.append(f"below the minimum size for {a.level} {a.category} ({t['min_size']:+.2f})")
    if table.coder[i]:
        reasons.append(
            "coder model for a coding prompt" if a.category == "coding" else "coder model, non-coding prompt"
        )
    if t.get("feedback"):
        reasons.append(f"user feedback ({t['feedback']:+.3f})")
    backend = reps.backend[j]
    if reps.resident[j]:
        reasons.append(f"loaded on {backend}")
    if not reps.healthy[j]:
        reasons.append(f"{backend} reported unhealthy")
    if reps.no_room[j]:
        reasons.append("not loaded, and its host lacks the free memory")
    if reps.inflight[j] > 0:
        reasons.append(f"{reps.inflight[j]:.0f} requests in flight on {backend}")
    reasons.extend(cons.notes)
    reasons.extend(sel.notes)
    return Scored(spec.name, backend, reps.upstream[j], round(float(rscore[j]), 4), MappingProxyType(t), tuple(reasons))
