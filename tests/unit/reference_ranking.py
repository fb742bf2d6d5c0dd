"""The routing decision as it was before the hot path was optimised (issue 17), kept as the
reference that ``test_decision_equivalence.py`` compares the optimised path against: the
filters, model terms, ranking and candidates' reasons, and the k-NN estimate. Frozen on purpose:
a change of the scoring model's meaning goes into both (the replica terms are imported, so a
change there applies to both; so are the speed term's expected TTFT and its utility, which
replaced the catalog-relative speed scale when the term became prompt-length aware)."""

# ruff: noqa
# mypy: ignore-errors

from __future__ import annotations

from types import MappingProxyType

import numpy as np

from turnout.common.schemas.route import RequestKind, RouteRequestV1
from turnout.scorer.filters import Constraints, Selection, select_requested, without_open_circuits
from turnout.scorer.prompt_analysis import LEVELS
from turnout.scorer.scoring import MODEL_NOT_FOUND, UNSERVABLE, Ranking, Scored
from turnout.scorer.scoring_config import OVERALL
from turnout.scorer.terms import REPLICA_TERMS, TermArrays, expected_latency_s, latency_utility, replica_terms


def _drop(sel: Selection, table: ModelTable, removed: B, why: str) -> None:
    for i in np.flatnonzero(removed & sel.mask):
        sel.filtered.setdefault(table.specs[i].name, why)
    sel.mask = sel.mask & ~removed


def select(
    kind: RequestKind,
    has_images: bool,
    has_tools: bool,
    need_tokens: int,
    table: ModelTable,
    cons: Constraints,
    cfg: ScoringConfig,
) -> Selection:
    """The hard filters and their documented fallback (module docstring)."""
    sel = Selection(mask=np.ones(table.size, dtype=bool), filtered={}, notes=[])
    if cons.blocked is not None:
        _drop(sel, table, cons.blocked, "blocked by an operator rule")
    if kind is RequestKind.EMBEDDING:
        _drop(sel, table, ~table.embedding, "not an embedding model")
        if not sel.mask.any():
            sel.unservable = "no embedding model is available"
        return sel
    generates = table.chat if kind is RequestKind.CHAT else table.completion
    _drop(sel, table, ~generates, "embedding-only model" if kind is RequestKind.CHAT else "no completion support")
    if not sel.mask.any():
        sel.unservable = f"no model supporting {kind.value} is available"
        return sel
    _modality(sel, table, has_images, has_tools, cfg)
    if sel.unservable is not None:
        return sel
    fits = table.context >= need_tokens
    if not (sel.mask & fits).any():
        if not cfg.relax_context:
            largest = float(table.context[sel.mask].max())
            sel.unservable = f"the request needs ~{need_tokens} tokens of context; the largest window is {largest:.0f}"
            return sel
        best = np.flatnonzero(sel.mask)[int(np.argmax(table.context[sel.mask]))]
        fits = np.zeros(table.size, dtype=bool)
        fits[best] = True
        sel.notes.append(f"no window fits ~{need_tokens} tokens: using the largest")
    for i in np.flatnonzero(sel.mask & ~fits):
        sel.filtered.setdefault(table.specs[i].name, f"context window {table.context[i]:.0f} < ~{need_tokens} tokens")
    sel.mask = sel.mask & fits
    if cons.allowed is not None:
        if (sel.mask & cons.allowed).any():
            _drop(sel, table, ~cons.allowed, "not in the allow list")
        else:
            sel.notes.append("the allow list leaves no suitable model: ignored for this request")
    return sel


def _modality(sel: Selection, table: ModelTable, has_images: bool, has_tools: bool, cfg: ScoringConfig) -> None:
    if has_images:
        if (sel.mask & table.vision).any():
            _drop(sel, table, ~table.vision, "no vision support")
        elif cfg.unservable_without_vision:
            sel.unservable = "no vision-capable model is available for a request with images"
            return
        else:
            sel.notes.append("no vision-capable model: the images will be ignored")
    if has_tools:
        if (sel.mask & table.tools).any():
            _drop(sel, table, ~table.tools, "no tools support")
        else:
            sel.notes.append("no tools-capable model: routed to a chat model that may ignore the tools")


def model_terms(
    a: PromptAnalysis,
    q: float,
    table: ModelTable,
    cfg: ScoringConfig,
    state: ModelState | None = None,
    learned: Learned | None = None,
    reply: float | None = None,
) -> TermArrays:
    """The model-level terms of the module docstring, vectorised over the catalog (``reply``: the
    reply's expected tokens; ``None``: ``wait_tokens``)."""
    w = cfg.weights
    n = table.size
    cat = a.category
    cap = table.capability_for(cat)
    key = cat if cat in table.capability else OVERALL
    low, span = table.cap_low[key], table.cap_span[key if cfg.category_span else OVERALL]
    learned_span = table.cap_span[OVERALL]  # learned estimates are on one scale across categories
    imp = 0.4 + 0.6 * a.complexity
    level = LEVELS.index(a.level) if a.level in LEVELS else 1
    zeros = np.zeros(n)
    if cfg.policy == "tiers":
        target = min(2, max(0, level + (1 if q >= 0.75 else -1 if q < 0.25 else 0)))
        tier = -w.tier * np.abs(table.tier - target).astype(np.float64)
        capability = learned_t = speed = cost = min_size = zeros
    else:
        tier = zeros
        scale = w.capability * q * imp / span
        if learned is not None:
            has = ~np.isnan(learned.p)
            alpha = np.where(has, learned.n_eff / (learned.n_eff + cfg.learned_k), 0.0)
            p = np.where(has, learned.p, cap)
            capability = scale * (1.0 - alpha) * (cap - low)
            learned_t = scale * span / learned_span * alpha * (p - low)
        else:
            capability = scale * (cap - low)
            learned_t = zeros
        latency = expected_latency_s(a.tokens, table, cfg, cfg.wait_tokens if reply is None else reply)
        speed = w.speed * (1.0 - q) * latency_utility(latency, cfg.speed_scale)
        cost = w.cost * (1.0 - q) * table.cheap
        if cfg.cost_tokens > 1.0:
            cost = cost * min(max((a.tokens + 200.0) / 400.0, 1.0 / cfg.cost_tokens), cfg.cost_tokens)
        required = cfg.min_size_b.get(cat, cfg.min_size_b.get("general", (0.0, 0.0, 0.0)))[level]
        if required > 0:
            short = np.log2(required / np.maximum(table.eff_b, 1e-3)) / 3.0
            min_size = -w.min_size * np.clip(short, 0.0, 1.0)
        else:
            min_size = zeros
    if cat == "coding":
        coder = w.coder * table.coder
    else:
        coder = -0.5 * w.coder * table.coder
    if state is not None:
        feedback = w.feedback * state.feedback_mean * state.feedback_n / (state.feedback_n + 5.0)
        diversity = -w.diversity * np.maximum(0.0, state.recent_share - 1.0 / max(n, 1))
    else:
        feedback = diversity = zeros
    names = ("capability", "learned", "speed", "cost", "min_size", "tier", "coder", "feedback", "diversity")
    values = np.vstack(
        [capability, learned_t, speed, cost, min_size, tier, coder.astype(np.float64), feedback, diversity]
    )
    return TermArrays(names, values)


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
    rterms: F | None = None,
) -> Ranking:
    """Filters, terms, ranking; ``limit=None`` explains every candidate. ``rterms`` are
    :func:`replica_terms` of ``reps`` when the caller keeps them per fleet state."""
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
    rmask = without_open_circuits(sel.mask[reps.model], reps.circuit_open, sel)
    if cons.backends is not None:
        on = np.array([b in cons.backends for b in reps.backend], dtype=bool)
        if (rmask & on).any():
            rmask = rmask & on
        else:
            sel.notes.append("the client's backend rule leaves no suitable replica: ignored")
    q = req.quality if req.quality is not None else cons.quality if cons.quality is not None else cfg.default_quality
    if rterms is None:
        rterms = replica_terms(reps, cfg)
    if cons.requested is not None:
        # a named model: no ranking of models, only of its replicas (residency, room, load)
        terms = TermArrays((), np.zeros((0, table.size)))
        rscore = rterms.sum(axis=0)
    else:
        # the reply the speed term times: max_tokens when fewer than the average reply
        short = req.max_tokens is not None and req.max_tokens < cfg.wait_tokens
        reply = float(max(req.max_tokens or 0, 0)) if short else cfg.wait_tokens
        terms = model_terms(a, q, table, cfg, state, learned, reply)
        rscore = terms.total[reps.model] + rterms.sum(axis=0)
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
    cands = _scored(order, a, q, table, reps, terms, rterms, rscore, sel, cons)
    return Ranking(
        a,
        cands,
        MappingProxyType(sel.filtered),
        tuple(sel.notes),
        catalog_version=table.version,
        quality=q,
        chosen=chosen,
    )


def _scored(
    order: I,
    a: PromptAnalysis,
    q: float,
    table: ModelTable,
    reps: ReplicaTable,
    terms: TermArrays,
    rterms: F,
    rscore: F,
    sel: Selection,
    cons: Constraints,
) -> tuple[Scored, ...]:
    """The candidates of replica rows ``order`` with their terms and reasons (the catalog's part
    of the reasons is precomputed in :attr:`ModelTable.reasons`; terms rounded in one pass)."""
    models = reps.model[order]
    mvals = np.round(terms.values[:, models], 4).T.tolist()
    rvals = np.round(rterms[:, order], 4).T.tolist()
    scores = np.round(rscore[order], 4).tolist()
    cat = a.category if a.category in table.capability else OVERALL
    static = table.reasons[cat]
    head = f"{a.level} {a.category} prompt (complexity {a.complexity:.2f}), quality preference {q:.2f}"
    coder_note = "coder model for a coding prompt" if a.category == "coding" else "coder model, non-coding prompt"
    tail = (*cons.notes, *sel.notes)
    out = []
    for k, j in enumerate(order.tolist()):
        i = int(models[k])
        t = {name: v for name, v in zip(terms.names, mvals[k], strict=True) if v != 0.0}
        t.update({name: v for name, v in zip(REPLICA_TERMS, rvals[k], strict=True) if v != 0.0})
        reasons = [head, *static[i]]
        if t.get("learned"):
            reasons.append(f"learned from similar graded prompts ({t['learned']:+.3f})")
        if t.get("min_size", 0.0) < 0:
            reasons.append(f"below the minimum size for {a.level} {a.category} ({t['min_size']:+.2f})")
        if table.coder[i]:
            reasons.append(coder_note)
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
        reasons.extend(tail)
        out.append(Scored(table.names[i], backend, reps.upstream[j], scores[k], MappingProxyType(t), tuple(reasons)))
    return tuple(out)


def estimate_one(self, query):
    """``(p, n_eff)`` per model for one query, as :meth:`estimate_batch`, searching only the
    rows above the kernel's ``floor`` (the others weigh nothing): no full partial sort."""
    q = np.asarray(query, dtype=np.float32).reshape(-1)
    m, n = len(self._models), self._rows
    if n == 0 or m == 0:
        return np.full(m, np.nan), np.zeros(m)
    cfg = self.cfg
    sims = self._emb[:n] @ q
    near = np.flatnonzero(sims > cfg.floor)
    if near.size > cfg.k:
        near = near[np.argpartition(-sims[near], cfg.k - 1)[: cfg.k]]
    means = self.model_means()
    prior = np.nan_to_num(means, nan=0.5)
    pm = cfg.prior_mass
    if near.size == 0:
        return np.where(np.isnan(means), np.nan, prior), np.zeros(m)
    kern = ((sims[near].astype(np.float64) - cfg.floor) / (1.0 - cfg.floor)) ** cfg.power
    wsum = self._wsum[near]  # (near, models)
    graded = wsum > 0
    mean_score = np.where(graded, self._sum[near] / np.maximum(wsum, 1e-12), 0.0)
    kw = kern[:, None] * np.minimum(wsum, 1.0) * graded
    n_eff = kw.sum(axis=0)
    p = ((kw * mean_score).sum(axis=0) + pm * prior) / (n_eff + pm)
    return np.where(np.isnan(means), np.nan, p), n_eff
