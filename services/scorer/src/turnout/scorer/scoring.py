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
4. operator rules: block list, allow list, a client's backend restriction;
5. token-id input (embeddings whose ``input`` is token ids): only replicas whose backend accepts
   token ids (OpenAI-compatible servers); Ollama's take text only. Nothing left → ``unservable``
   (400) saying so — never relaxed: Ollama would refuse the request anyway;
6. open circuits: replicas whose (backend, model) circuit, or whose backend's circuit, the
   gateways opened after repeated failures (:mod:`turnout.common.circuits`) are left out.

**Fallback when the filters leave nothing** (each step adds a note to every candidate):

* no vision model for images → ``unservable`` (400) when ``unservable_without_vision`` (default),
  else the image requirement is dropped;
* no tools model → the tools requirement is dropped (the model may ignore the tools);
* nothing fits the context → ``unservable`` unless ``relax_context``, then the largest window;
* the allow list or a client's backend rule leaves nothing → that rule is ignored; the block
  list is never relaxed; nothing left at all → ``unservable``;
* every suitable replica's circuit is open → all are kept, in score order, with a note: the
  gateway then answers 503 with ``Retry-After`` (or probes one whose cooldown is over) rather
  than the scorer guessing which dead replica to send a request to.

**Terms** (``q`` = quality preference 0..1, ``c`` = complexity, ``imp = 0.4 + 0.6·c``); each
candidate reports them in ``terms`` and they sum to its ``score``:

* ``capability = w.capability · q · imp · cap'`` and ``learned`` (same, for the learned share):
  ``cap`` = profile and benchmark scores for the category shrunk towards a size prior fitted on the
  fleet (an unknown model gets the prior of its size: neither favoured nor punished); with
  learned estimates ``p`` from ``n_eff`` close neighbours, ``quality = (1−a)·cap + a·p`` with
  ``a = n_eff / (n_eff + learned_k)``; ``'`` = scaled by the catalog's overall spread (the
  static share by the category's with ``category_span``);
* ``speed = w.speed · (1−q) · speed'`` — the expected time to a whole reply for this prompt
  (``terms.expected_latency_s``: the profile's TTFT at its probe length plus the prefill of the
  prompt's tokens beyond it, at a rate derived from that TTFT, plus the reply at the decode speed:
  ``max_tokens`` when the request asks for fewer than ``wait_tokens``, else that average reply;
  measured, else estimated from active parameters), on a linear scale of seconds spanning
  the catalog (1 the fastest for this prompt, 0 the slowest; ``speed_scale="log"``: a log scale,
  as before); ``cost`` likewise from price,
  times the prompt's size ((tokens + 200) / 400, clamped by ``cost_tokens``: what a call costs);
* ``min_size = −w.min_size · clamp(log2(required / size) / 3)`` for the category × level table;
* ``coder = +w.coder`` for a coder model on a coding prompt, ``−w.coder/2`` elsewhere;
* ``feedback = w.feedback · mean · n/(n+5)`` (decayed user feedback, −1..1);
* ``diversity = −w.diversity · max(0, share − 1/models)`` (recent-use share);
* ``tier = −w.tier · |tier − target|`` — only with ``policy="tiers"``, which then replaces
  capability, speed, cost and min_size; ``target`` rises with complexity and ``q``;
* per replica: ``resident`` (+, loaded in VRAM), ``unhealthy`` (−), ``no_room`` (−, not loaded
  and the host lacks the memory), ``free_vram`` (+, share free), ``busy`` (−, requests in flight
  per ``replica_parallel``, capped: the gateways' counts as last read, plus the decisions this
  scorer made since), ``wait`` (−, the speed term's share per replica: the seconds expected ahead
  of a new request there — a slot, and its backend's queue behind a load that waits for room —
  weighed as the speed term weighs seconds, ``−w.speed · (1−q) · wait / span``; 0 at no load;
  ``terms.expected_wait_s``, ``terms.wait_term``; ``queue_aware=False``: left out).

A request that names a model (after aliases and client rules) skips the model terms: only its
replicas are ranked, by the replica terms and ``wait`` (as a ranked request orders that model's
replicas; ``wait`` only where one of them has a wait), so the choice stays VRAM-, load- and
queue-aware.

Everything but ``capability``/``learned``/``speed``/``cost`` is independent of ``q``, and those
are linear in it, so raising ``q`` moves the choice towards models with more capability and less
speed — with capability and speed following size, never to a smaller model. Capability follows the
log of size and a reply's time the size itself, so on the linear speed scale each ``q`` has a
model in between (on a log scale both were lines in log size and the choice sat at an end).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import compress
from types import MappingProxyType
from typing import NamedTuple, Protocol

import numpy as np
import orjson

from turnout.common.schemas.route import CandidateV1, RouteReplyV1, RouteRequestV1
from turnout.scorer.catalog import B, F, I, ModelSpec, ModelTable
from turnout.scorer.filters import (
    Constraints,
    Selection,
    select,
    select_requested,
    token_input_replicas,
    without_open_circuits,
)
from turnout.scorer.fleet import FleetState, ReplicaTable
from turnout.scorer.prompt_analysis import PromptAnalysis
from turnout.scorer.scoring_config import OVERALL, TIERS, ScoringConfig, Weights
from turnout.scorer.terms import (
    REPLICA_TERMS,
    Learned,
    ModelState,
    PromptRows,
    TermArrays,
    model_terms,
    replica_terms,
    reply_tokens,
    wait_term,
)

__all__ = [
    "OVERALL",
    "TIERS",
    "Constraints",
    "FleetState",
    "Learned",
    "ModelSpec",
    "ModelState",
    "ModelTable",
    "PromptRows",
    "Ranked",
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


class Ranked(Protocol):
    """What the VRAM planner and the in-flight note read of a ranked candidate: a
    :class:`Scored` or a wire :class:`~turnout.common.schemas.route.CandidateV1` (a cached reply's)."""

    @property
    def model(self) -> str: ...
    @property
    def backend(self) -> str: ...
    @property
    def upstream_model(self) -> str: ...
    @property
    def score(self) -> float: ...


class Scored(NamedTuple):
    """One ranked candidate. A named tuple rather than a frozen dataclass: as immutable, and
    built in a quarter of the time (a frozen dataclass sets each field through
    ``object.__setattr__``: 0.70 → 0.43 µs a candidate, eight per decision)."""

    model: str
    backend: str
    upstream_model: str
    score: float
    terms: Mapping[str, float]
    """A plain dict, read-only by convention: pydantic validates a dict on its fast path, while a
    ``MappingProxyType`` went through the ``Mapping`` ABC check (8 candidates: 21 → 14 µs)."""
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        """The wire candidate as a dict (:meth:`Ranking.to_reply` validates the reply in one call)."""
        return {
            "model": self.model,
            "backend": self.backend,
            "upstream_model": self.upstream_model,
            "score": self.score,
            "reasons": self.reasons,  # validation copies them into a list and a dict
            "terms": self.terms,
            "load_s": None,
            "wait_s": None,
        }

    def to_wire(self) -> CandidateV1:
        return CandidateV1.model_validate(self.to_dict())


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

    def to_reply(self, max_candidates: int = 8, embedding: str | None = None, *, filtered: bool = True) -> RouteReplyV1:
        """The wire reply, validated from one dict in one call (measured at 8 candidates: ~20 →
        ~9 µs against a model per candidate); ``embedding`` goes into its analysis.
        ``filtered=False`` lists the filtered models only when no candidate is left (a route
        reply: at 1,000 models the map was most of the reply's bytes and its encoding time, and
        the gateway reads it nowhere; ``scorer.explain`` lists it always)."""
        return RouteReplyV1.model_validate(self.reply_fields(max_candidates, embedding, filtered=filtered))

    def reply_json(self, max_candidates: int = 8, embedding: str | None = None, *, filtered: bool = True) -> bytes:
        """``to_reply(...).model_dump_json()``'s bytes, encoded by orjson from the plain values with
        no model built (a greeting at 100 models: ~23 → ~5 µs). The scorer sends them as the
        ``scorer.route`` reply; the gateway validates the reply on receipt, and
        ``test_decision_equivalence.py`` holds the bytes equal to the pydantic encoding."""
        return orjson.dumps(self.reply_fields(max_candidates, embedding, filtered=filtered))

    def reply_fields(
        self, max_candidates: int = 8, embedding: str | None = None, *, filtered: bool = True
    ) -> dict[str, object]:
        """The reply as plain values, every field of :class:`RouteReplyV1` in its order."""
        a = self.analysis
        return {
            "candidates": [c.to_dict() for c in self.candidates[:max_candidates]],
            "analysis": {
                "category": a.category,
                "complexity": a.complexity,
                "level": a.level,
                "signals": a.reasons,
                "embedding": embedding,
            },
            "filtered": dict(self.filtered) if filtered or not self.candidates else {},
            "unservable": self.unservable,
            "unservable_code": self.unservable_code,
            "catalog_version": self.catalog_version,
        }


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
    rsum: F | None = None,
    wait_s: F | None = None,
    keep: PromptRows | None = None,
) -> Ranking:
    """Filters, terms, ranking; ``limit=None`` explains every candidate. ``rterms`` are
    :func:`replica_terms` of ``reps`` and ``rsum`` their column sums, when the caller keeps them
    per fleet state; ``wait_s`` each replica's expected wait (``terms.expected_wait_s``), which
    the speed term counts (``wait``, with ``queue_aware``); ``keep`` the prompt's model-term rows
    between its decisions (``terms.PromptRows``)."""
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
    rmask = _replica_mask(req, table, reps, sel, cons)
    if sel.unservable is not None:
        return Ranking(
            a,
            filtered=MappingProxyType(sel.filtered),
            unservable=sel.unservable,
            unservable_code=UNSERVABLE,
            catalog_version=table.version,
        )
    q = req.quality if req.quality is not None else cons.quality if cons.quality is not None else cfg.default_quality
    reply = reply_tokens(req.max_tokens, cfg)
    if rterms is None:
        rterms = replica_terms(reps, cfg)
    if rsum is None:
        rsum = rterms.sum(axis=0)
    if cons.requested is not None:
        # a named model: no ranking of models, only of its replicas (residency, room, load)
        terms = TermArrays((), np.zeros((0, table.size)))
        rscore = rsum
    else:
        terms = model_terms(a, q, table, cfg, state, learned, keep, reply)
        rscore = terms.total[reps.model] + rsum
    wterm = None
    waits = wait_s if cfg.queue_aware and cfg.policy == "score" else None
    if waits is not None and cons.requested is None and waits.any():
        wterm = wait_term(waits, reps.model, a.tokens, q, table, cfg, reply)
        rscore = rscore + wterm
    rows = rmask.nonzero()[0]  # np.flatnonzero of a 1-d mask, without its Python wrapper
    if rows.size == 0:
        return Ranking(
            a,
            filtered=MappingProxyType(sel.filtered),
            notes=tuple(sel.notes),
            unservable="no replica is available",
            unservable_code=UNSERVABLE,
            catalog_version=table.version,
        )
    if waits is not None and cons.requested is not None and any(waits[rows].tolist()):
        # a named model's replicas weigh their waits as a ranked request weighs that model's:
        # the same term (only where one of them waits: a few rows, and Python's any() on their
        # list is ~5x faster than ndarray.any())
        wterm = wait_term(waits, reps.model, a.tokens, q, table, cfg, reply)
        rscore = rscore + wterm
    pinned = cons.pinned is not None and cons.requested is None
    order = _best(rows, rscore, None if pinned else limit)
    if pinned:
        order = _pinned_first(order, a, table, reps, sel, cons)
    chosen = int(reps.model[order[0]])
    if limit is not None:
        order = order[:limit]
    cands = _scored(order, a, q, table, reps, terms, rterms, rscore, sel, cons, wterm)
    return Ranking(
        a,
        cands,
        MappingProxyType(sel.filtered),
        tuple(sel.notes),
        catalog_version=table.version,
        quality=q,
        chosen=chosen,
    )


def _replica_mask(req: RouteRequestV1, table: ModelTable, reps: ReplicaTable, sel: Selection, cons: Constraints) -> B:
    """The replicas of the selected models that may serve: filters 5 and 6 and a client's backend
    rule (module docstring); ``sel.unservable`` is set when token-id input leaves none."""
    rmask = sel.mask[reps.model]
    if sel.unservable is not None:
        return rmask
    if req.token_input:
        rmask = token_input_replicas(rmask, table, sel)
        if sel.unservable is not None:
            return rmask
    rmask = without_open_circuits(rmask, reps.circuit_open, sel)
    if cons.backends is not None:
        on = np.array([b in cons.backends for b in reps.backend], dtype=bool)
        if (rmask & on).any():
            rmask = rmask & on
        else:
            sel.notes.append("the client's backend rule leaves no suitable replica: ignored")
    return rmask


def _pinned_first(
    order: I, a: PromptAnalysis, table: ModelTable, reps: ReplicaTable, sel: Selection, cons: Constraints
) -> I:
    pin = table.index.get(cons.pinned or "")
    if pin is None:
        return order
    first = order[reps.model[order] == pin]
    if not first.size:
        return order
    sel.notes.append(f"pinned for {a.category} prompts: {cons.pinned}")
    return np.concatenate([first, order[reps.model[order] != pin]])


PARTIAL_FROM = 512
"""Rows from which :func:`_best` partitions before sorting: below it one sort of every row is
cheaper (200 rows: ~4 against ~7 µs; even at ~1,000)."""


def _best(rows: I, score: F, limit: int | None) -> I:
    """``rows`` by descending ``score``, ties in row order (a stable sort), or its first ``limit``:
    then, past ``PARTIAL_FROM`` rows, only the rows scoring at least the ``limit``-th best are
    sorted (the same prefix)."""
    neg = -score[rows]
    if limit is not None and rows.size > max(4 * limit, PARTIAL_FROM):
        cut = np.partition(neg, limit - 1)[limit - 1]
        if not np.isnan(cut):
            keep: I = (neg <= cut).nonzero()[0]
            return rows[keep[neg[keep].argsort(kind="stable")]]
    return rows[neg.argsort(kind="stable")]


def choose(a: PromptAnalysis, q: float, table: ModelTable, mask: B, cfg: ScoringConfig, learned: Learned | None) -> int:
    """The best model row among ``mask`` (no replicas, no reasons): the benchmark's inner loop."""
    s = model_terms(a, q, table, cfg, None, learned).total
    s = np.where(mask, s, -np.inf)
    return int(np.argmax(s))


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
    wterm: F | None = None,
) -> tuple[Scored, ...]:
    """The candidates of replica rows ``order`` with their terms and reasons (the catalog's part
    of the reasons is precomputed in :attr:`ModelTable.reasons`; terms rounded in one pass);
    ``wterm`` the ``wait`` term per replica, when there is one."""
    models = reps.model[order]
    # every candidate's terms and score, gathered into one array and rounded in place:
    # (model terms + replica terms [+ wait] + 1, candidates), read per candidate
    nm, nr = terms.values.shape[0], rterms.shape[0]
    nw = nr + (wterm is not None)
    gathered = np.empty((nm + nw + 1, order.size))
    terms.values.take(models, axis=1, out=gathered[:nm])  # the methods: np.take wraps them in Python
    rterms.take(order, axis=1, out=gathered[nm : nm + nr])
    if wterm is not None:
        wterm.take(order, out=gathered[nm + nr])
    rscore.take(order, out=gathered[nm + nw])
    rows = gathered.round(4, out=gathered).T.tolist()
    cat = a.category if a.category in table.capability else OVERALL
    static = table.reasons[cat]
    head = f"{a.level} {a.category} prompt (complexity {a.complexity:.2f}), quality preference {q:.2f}"
    coder_note = "coder model for a coding prompt" if a.category == "coding" else "coder model, non-coding prompt"
    below = f"below the minimum size for {a.level} {a.category} ("
    tail = (*cons.notes, *sel.notes)
    names = (*terms.names, *REPLICA_TERMS, *(("wait",) if wterm is not None else ()))
    backends, upstream, model_names = reps.backend, reps.upstream, table.names
    flags = zip(
        models.tolist(),
        order.tolist(),
        table.coder[models].tolist(),
        reps.resident[order].tolist(),
        reps.healthy[order].tolist(),
        reps.no_room[order].tolist(),
        reps.inflight[order].tolist(),
        rows,
        strict=True,
    )
    out = []
    for i, j, coder, resident, healthy, no_room, inflight, row in flags:
        # the non-zero terms (a float is false only when ±0.0); the score is row[-1]
        t = dict(compress(zip(names, row, strict=False), row))
        reasons = [head, *static[i]]
        if learned := t.get("learned"):
            reasons.append(f"learned from similar graded prompts ({learned:+.3f})")
        if (min_size := t.get("min_size", 0.0)) < 0:
            reasons.append(f"{below}{min_size:+.2f})")
        if coder:
            reasons.append(coder_note)
        if feedback := t.get("feedback"):
            reasons.append(f"user feedback ({feedback:+.3f})")
        backend = backends[j]
        if resident:
            reasons.append(f"loaded on {backend}")
        if not healthy:
            reasons.append(f"{backend} reported unhealthy")
        if no_room:
            reasons.append("not loaded, and its host lacks the free memory")
        if inflight > 0:
            reasons.append(f"{inflight:.0f} requests in flight on {backend}")
        if wait := t.get("wait"):
            reasons.append(f"requests queued ahead on {backend} ({wait:+.3f})")
        reasons.extend(tail)
        out.append(Scored(model_names[i], backend, upstream[j], row[-1], t, tuple(reasons)))
    return tuple(out)
