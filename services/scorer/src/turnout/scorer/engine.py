"""The routing engine: analysis → (classifier) → rules → filters → scoring (+ learned) → reply,
with the shared routing cache around it. One instance per scorer process; state (catalog,
fleet, feedback, learned index, rules) is swapped in whole by the loaders, off the request path.

* :meth:`RoutingEngine.decide` — synchronous and pure given the current state: what ``route``
  and ``explain`` both run, so an explanation is exactly the decision.
* :meth:`RoutingEngine.route` — the RPC handler's body: the in-process decision memo, the
  shared cache lookup, classifier when unsure, ``decide``, cache store, recent-use bookkeeping
  for the diversity term.
* :meth:`RoutingEngine.explain` — ``decide`` with every candidate, no cache, no bookkeeping.

**The decision memo** (:class:`~turnout.scorer.caches.DecisionMemo`) keeps, per request
features (the analysis' digest of text, system prompt length, messages, images, tools, JSON
mode, token estimate and kind, plus the requested model, client and address), what a decision
computes before ranking: the analysis, the prompt embedding (and its wire form), the rules'
constraints and the learned estimate — the expensive part (analysis, embedding, k-NN). It is
valid while the catalog table, the rules, the learned index and the router prior are the ones it
was computed with (:meth:`RoutingEngine.memo_version`). The ranking itself is run again on every
hit: quality preference, feedback, recent use (diversity) and every fleet-dependent term
(residency, health, room, circuits, load) are read as they are now, so a hit gives exactly the
decision a miss would, and no fleet version is needed in the key. The fleet version
(:attr:`RoutingEngine.fleet_version`: a digest of residency, health, room and open circuits per
replica; it does not move with load or free-memory ticks) namespaces the shared Redis cache,
whose replies are reused whole. Not memoised: prompts the LLM classifier would be asked about.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from turnout.common.schemas.catalog import CatalogSnapshotV1
from turnout.common.schemas.explain import ExplainAnalysisV1, ExplainReplyV1
from turnout.common.schemas.route import CandidateV1, RequestKind, RouteReplyV1, RouteRequestV1
from turnout.embeddings import Embedder, StaticEmbedder
from turnout.scorer.caches import DecisionMemo, Prepared, RoutingCache, Same
from turnout.scorer.classifier import ClassifierConfig, LLMClassifier
from turnout.scorer.learned import LearnedIndex, encode_embedding
from turnout.scorer.learned_prior import RouterPrior, blend, model_features, prompt_features
from turnout.scorer.notes import MAX_NOTE_S, Notes
from turnout.scorer.prompt_analysis import AnalysisConfig, Analyzer, PromptAnalysis, PromptFeatures, prompt_tokens
from turnout.scorer.rules import RulesStore
from turnout.scorer.scoring import (
    OVERALL,
    Constraints,
    FleetState,
    Learned,
    ModelSpec,
    ModelState,
    ModelTable,
    Ranked,
    Ranking,
    ReplicaTable,
    Scored,
    ScoringConfig,
    Weights,
    rank,
)
from turnout.scorer.settings import RoutingOptions, ScorerOptions
from turnout.scorer.terms import (
    BUSY_ROW,
    BackendQueue,
    PromptRows,
    Queues,
    backend_wait,
    busy_value,
    expected_wait_s,
    replica_terms,
    reply_tokens,
    ttft_line,
    wait_term,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    virtual_models: frozenset[str] = frozenset({"turnout/auto"})
    max_candidates: int = 8
    diversity_half_life: float = 200.0
    """Decisions after which a model's recent-use count has halved."""
    prior_mass: float = 4.0
    """How many close graded neighbours the router prior counts as (``learned_prior.blend``)."""
    memo_size: int = 2048
    """Request features whose prepared decision inputs are kept (module docstring); 0 = off."""
    kept_rows: int = 256
    """Of those, the most recently decided whose model-term rows are kept too (``terms.PromptRows``:
    9 float64 rows per model, 7 KB each at 100 models, 72 KB at 1,000: 1.8 / 18 MB in all)."""
    inflight_lag_s: float = 0.35
    """How long after a decision a read of the gateways' in-flight counts surely holds its request
    (their ``inflight_publish_s``, 0.25 s, and a margin): a noted decision counts on its own until
    such a read, or until its expected time is over (``notes.py``). 0: every read holds every
    decision before it (the fleet bench's exact counts)."""
    inflight_margin_s: float = 0.05
    """A read holds a decision for a gateway that names itself when that gateway took its counts
    this long after the decision, by the two hosts' wall clocks (``notes.py``)."""


class RoutingEngine:
    def __init__(
        self,
        cfg: EngineConfig | None = None,
        *,
        rules: RulesStore | None = None,
        embedder: Embedder | None = None,
        learned: LearnedIndex | None = None,
        prior: RouterPrior | None = None,
        classifier: LLMClassifier | None = None,
        cache: RoutingCache | None = None,
        memo: DecisionMemo | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg or EngineConfig()
        self.clock = clock
        """What the noted decisions' times are read on (the fleet bench: its virtual time)."""
        self.wall_clock = wall_clock
        """What a noted decision's time is compared with the gateways' times of their counts on."""
        self.rules = rules or RulesStore(None)
        self.embedder = embedder
        self.learned = learned
        self.prior = prior
        self.classifier = classifier
        self.cache = cache
        self.memo = memo if memo is not None else DecisionMemo(self.cfg.memo_size)
        self._kept: OrderedDict[Hashable, PromptRows] = OrderedDict()
        """Per memo key, the prompt's model-term rows (``kept_rows`` at most, least recent out)."""
        self.analyzer = Analyzer(self.cfg.analysis)
        self._snapshot = CatalogSnapshotV1()
        self._fleet = FleetState()
        self._feedback: dict[str, tuple[float, float]] = {}
        self.table = ModelTable.build((), self.cfg.scoring)
        self._theta, self._phi = model_features(np.zeros(0), np.zeros(0))
        self.replicas = ReplicaTable.build(self.table)
        self._rterms = replica_terms(self.replicas, self.cfg.scoring)
        self._rsum = self._rterms.sum(axis=0)
        self._queues = Queues.build(self.replicas, self.table.rep_vram, {}, self.cfg.scoring)
        self._wait: tuple[np.ndarray, np.ndarray] | None = None
        """Each replica's expected wait (``terms.expected_wait_s``) and the time ahead of a request
        the speed term counts (``Queues.time_ahead_s``), computed when the fleet or the in-flight
        counts as read change (:meth:`_new_waits`) and moved in place by notes and expiries
        (:meth:`_move`)."""
        self._backend_queues: dict[int, BackendQueue] = {}
        """Per backend (its index in the queues), its queue as the last recomputation of its waits
        left it (:meth:`note_routed`); emptied with the waits."""
        self._feedback_arrays = (np.zeros(0), np.zeros(0))
        self._row_of: dict[tuple[str, str], int] = {}
        self._inflight: Mapping[tuple[str, str], int] = {}
        """The gateways' in-flight counts as last read."""
        self._notes = Notes()
        """The decisions handed out since that the counts may not hold (``notes.py``)."""
        self._recent = np.zeros(0)
        self._rules_version = self.rules.current.version
        self._fleet_gen = "0"
        self._table_gen = 0

    # --- state -----------------------------------------------------------------------------

    @property
    def version(self) -> str:
        """Catalog + rules + fleet version: the shared routing cache's namespace."""
        return f"{self.table.version}.{self.rules.current.version}.{self._fleet_gen}"

    @property
    def fleet_version(self) -> str:
        """A digest of each replica's residency, health, room and open circuit: it moves when a
        model is loaded or evicted, a backend goes down, a host runs out of room or a circuit
        opens or closes — not with in-flight counts or free-memory changes that move no flag."""
        return self._fleet_gen

    def memo_version(self) -> tuple[object, ...]:
        """What the memo's entries are valid for (module docstring). The learned index and the
        prior are compared by identity (:class:`~turnout.scorer.caches.Same`), the index by its
        version too."""
        learned = self.learned
        return (
            self._table_gen,
            self.rules.current.version,
            Same(learned),
            learned.version if learned is not None else -1,
            Same(self.prior),
        )

    def set_catalog(self, snapshot: CatalogSnapshotV1, extra: Mapping[str, ModelSpec] | None = None) -> None:
        """Rebuild the model table; ``extra`` may replace a model's spec (richer profiles, prices)."""
        self._snapshot = snapshot
        self._rebuild(extra)

    def _rebuild(self, extra: Mapping[str, ModelSpec] | None = None) -> None:
        self.table = ModelTable.from_snapshot(
            self._snapshot, self.cfg.scoring, tiers=self.rules.current.tiers, extra=extra
        )
        self._table_gen += 1
        self._kept.clear()  # rows of the old table: they would never match again, and hold it alive
        self._theta, self._phi = model_features(self.table.capability[OVERALL], self.table.power)
        self._recent = np.zeros(self.table.size)
        self._row_of = {k: j for j, k in enumerate(zip(self.table.rep_backend, self.table.rep_upstream, strict=True))}
        self._align_feedback()
        self._rules_version = self.rules.current.version
        self.set_fleet(self._fleet, read=False)

    @property
    def fleet(self) -> FleetState:
        return self._fleet

    def set_fleet(self, fleet: FleetState, *, read: bool = True, taken_at: Mapping[str, float] | None = None) -> None:
        """Join the fleet state with the catalog's replicas (:meth:`ReplicaTable.build`); its
        in-flight counts are a read just taken (:meth:`set_load`, with ``taken_at``) unless
        ``read`` is false (the same fleet again, for a new catalog: the last read's counts stay)."""
        self._fleet = fleet
        if read:
            self._inflight = fleet.inflight
            self._absorb(taken_at)
        reps = ReplicaTable.build(self.table, fleet)
        # cached decisions follow residency and health, not every change of free memory
        # (a digest, not hash(): the namespace is shared by every scorer replica through Redis)
        digest = hashlib.blake2b(digest_size=4)
        for a in (reps.resident, reps.healthy, reps.no_room, reps.circuit_open):
            digest.update(a.tobytes())
        self._fleet_gen = digest.hexdigest()
        self.replicas = replace(reps, inflight=self._counts())
        self._rterms = replica_terms(self.replicas, self.cfg.scoring)
        self._rsum = self._rterms.sum(axis=0)
        self._queues = Queues.build(self.replicas, self.table.rep_vram, fleet.gpus_by_backend, self.cfg.scoring)
        self._new_waits()

    def set_load(self, inflight: Mapping[tuple[str, str], int], taken_at: Mapping[str, float] | None = None) -> None:
        """The gateways' in-flight counts per (backend, upstream model), as just read (each
        gateway of ``taken_at`` took its counts at that wall time): they replace the counts, and
        hold the decisions noted ``inflight_lag_s`` or more before, and those for a gateway that
        took its counts ``inflight_margin_s`` or more after them (``notes.py``); the others still
        count on top of them."""
        self._inflight = inflight
        self._absorb(taken_at)
        self.replicas = replace(self.replicas, inflight=self._counts())
        self._rterms = replica_terms(self.replicas, self.cfg.scoring)
        self._rsum = self._rterms.sum(axis=0)
        self._new_waits()

    def _new_waits(self) -> None:
        """The waits of a new fleet state or read, computed now rather than by the next decision:
        a read comes every ``load_poll_s`` whether or not decisions do, and the first decision after
        one paid the whole table's waits (``bench/scorer_decision.py``, a named model's repeat,
        paired in one process: p99 144 → 116 µs planner off, 216 → 181 µs on; p50 the same)."""
        self._wait = None
        self._backend_queues = {}
        self._waits()

    def _absorb(self, taken_at: Mapping[str, float] | None) -> None:
        self._notes.absorb(self.clock(), self.cfg.inflight_lag_s, taken_at, self.cfg.inflight_margin_s)

    def inflight_read(self) -> int:
        """Requests in flight as the gateways' counts last read had them (summed)."""
        return sum(self._inflight.values())

    def inflight_noted(self) -> int:
        """Decisions counted in flight on top of that read: noted since, their time not over."""
        return self._notes.live(self.clock())

    def _counts(self) -> np.ndarray:
        """Per replica, the counts as last read plus the live notes."""
        counts = self._notes.on_top_of(self._inflight)
        keys = zip(self.table.rep_backend, self.table.rep_upstream, strict=True)
        return np.array([float(counts.get(k, 0)) for k in keys], dtype=np.float64)

    def note_routed(self, backend: str, upstream: str, req: RouteRequestV1 | None = None) -> None:
        """A request (``req``; ``None``: an average one) is about to go to this replica: count it
        in flight there until its expected time is over or a read of the gateways' counts holds it
        (``notes.py``), so that the decisions before then see it."""
        j = self._row_of.get((backend, upstream))
        if j is None:
            return
        now = self.clock()
        gateway = req.gateway_id if req is not None else None
        self._notes.add(
            (backend, upstream),
            now,
            now + self._expected_time_s(j, req),
            gateway,
            self.wall_clock() if gateway else 0.0,
        )
        self._move(j, 1.0)

    def _expected_time_s(self, j: int, req: RouteRequestV1 | None) -> float:
        """How long a request sent to replica ``j`` now is expected to be in flight: the wait ahead
        of it there, a load of its model if it is not loaded, its time to the first token and its
        reply (``max_tokens``, at most ``wait_tokens``, the average reply the queue model counts)
        at the model's speed; at most ``MAX_NOTE_S``, which is also the answer where a speed is
        not a number."""
        sc = self.cfg.scoring
        m = self.table.rep_model[j]
        base, slope = ttft_line(self.table, sc)
        tokens, reply = 0, sc.wait_tokens
        if req is not None:  # PromptFeatures.tokens, without building the features (4 µs)
            tokens = prompt_tokens(req.est_prompt_tokens, len(req.text) + req.system_chars)
            reply = reply_tokens(req.max_tokens, sc)
        t = float(base[m] + slope[m] * max(float(tokens), sc.ttft_probe_tokens))
        t += reply / max(float(self.replicas.tokens_per_s[j]), 0.1) + float(self._queues.load_s[j])
        if self._wait is not None:
            t += float(self._wait[0][j])
        return t if t < MAX_NOTE_S else MAX_NOTE_S  # NaN compares false

    def _expire_notes(self) -> None:
        """Take the noted decisions whose time is over out of the counts (before a decision)."""
        notes = self._notes
        if notes.next_expiry() > (now := self.clock()):
            return
        for key in notes.expire(now):
            j = self._row_of.get(key)
            if j is not None:
                self._move(j, -1.0)

    def _move(self, j: int, step: float) -> None:
        """Replica ``j`` holds ``step`` (±1) requests more: its busy term and replica sum written as
        Python floats (:func:`busy_value`; the column summed as the whole table is), and its
        backend's waits moved through that backend's queue (:meth:`BackendQueue.moved`: one row,
        unless the queue itself moves) or recomputed for that backend alone.

        In place: the in-flight counts, replica terms, their sums and the waits are the engine's
        own arrays (each read and fleet state builds new ones, and nothing keeps them past a call:
        a ranking takes copies, :attr:`waits`' callers read it at once). Copying the four arrays
        and the replica table on every note and expiry cost ~10 % of a named model's decision
        (``bench/scorer_decision.py``'s setup, paired in one process: p50 ×0.88–0.90)."""
        sc = self.cfg.scoring
        counts = self.replicas.inflight
        before = float(counts[j])
        counts[j] = before + step
        rterms = self._rterms
        rterms[BUSY_ROW, j] = busy_value(before + step, sc)
        total = 0.0  # as numpy sums a column: from 0.0, row after row
        for v in rterms[:, j].tolist():
            total += v
        self._rsum[j] = total
        if self._wait is not None:  # only the waits on this replica's backend move
            q = self._queues
            k = int(q.backend[j])
            queue = self._backend_queues.get(k)
            one = queue.moved(j, before, step, q, sc) if queue is not None else None
            wait, ahead = self._wait
            if one is None:
                rows = q.rows_of(j)
                part, queue = backend_wait(counts, rows, q, sc)
                wait[rows] = part
                ahead[rows] = q.time_ahead_s(part, rows)
                if queue is not None:
                    self._backend_queues[k] = queue
                else:
                    self._backend_queues.pop(k, None)
            else:
                wait[j] = one
                ahead[j] = one + (float(q.load_s[j]) if q.needs_room[j] else 0.0)

    @property
    def waits(self) -> np.ndarray:
        """Each replica's expected wait (s) before its prompt is read — a slot, and its backend's
        queue behind a load (:func:`~turnout.scorer.terms.expected_wait_s`) — from the fleet and
        the in-flight counts as last read plus the decisions since."""
        return self._waits()[0]

    def _waits(self) -> tuple[np.ndarray, np.ndarray]:
        if self._wait is None:
            wait = expected_wait_s(self.replicas, self.cfg.scoring, self._queues)
            self._backend_queues = {}
            self._wait = (wait, self._queues.time_ahead_s(wait))
        return self._wait

    def expected_waits(self, candidates: Sequence[Ranked]) -> list[float]:
        """Each candidate's expected wait (s) (:attr:`waits`); 0 for an unknown replica. The VRAM
        planner's admission step and the gateway's first-byte bound (``wait_s``) read it."""
        waits = self.waits
        rows = [self._row_of.get((c.backend, c.upstream_model), -1) for c in candidates]
        return [float(waits[j]) if j >= 0 else 0.0 for j in rows]

    def set_feedback(self, by_model: Mapping[str, tuple[float, float]]) -> None:
        """Model -> (decayed mean feedback −1..1, decayed count)."""
        self._feedback = dict(by_model)
        self._align_feedback()

    def _align_feedback(self) -> None:
        n = self.table.size
        mean, cnt = np.zeros(n), np.zeros(n)
        for name, (m, c) in self._feedback.items():
            i = self.table.index.get(name)
            if i is not None:
                mean[i], cnt[i] = m, c
        self._feedback_arrays = (mean, cnt)

    def _state(self) -> ModelState:
        n = self.table.size
        mean, cnt = self._feedback_arrays
        total = float(self._recent.sum())
        share = self._recent / total if total > 0 else np.zeros(n)
        return ModelState(mean, cnt, share)

    # --- deciding --------------------------------------------------------------------------

    def analyze(self, req: RouteRequestV1) -> PromptAnalysis:
        return self.analyzer.analyze_request(req)

    def embed(self, req: RouteRequestV1) -> np.ndarray | None:
        if self.embedder is None or req.kind is RequestKind.EMBEDDING or not req.text:
            return None
        text = req.text[:4000]
        if isinstance(self.embedder, StaticEmbedder):
            vec: np.ndarray = self.embedder.encode_one(text)  # the word-cached path
            return vec
        out: np.ndarray = self.embedder.encode([text])[0]
        return out

    def decide(
        self,
        req: RouteRequestV1,
        a: PromptAnalysis | None = None,
        embedding: np.ndarray | None = None,
        *,
        limit: int | None = None,
    ) -> Ranking:
        self._check_rules()
        self._expire_notes()
        a = a or self.analyze(req)
        cons = self.constraints(req, a)
        learned = self.learned_estimate(a, embedding) if cons.requested is None else None
        return self._rank(req, a, cons, learned, limit)

    def _check_rules(self) -> None:
        if self.rules.current.version != self._rules_version:
            self._rebuild()  # tier overrides may have changed

    def constraints(self, req: RouteRequestV1, a: PromptAnalysis | str) -> Constraints:
        """The client rules' and the named model's constraints for a prompt of this analysis (or
        category)."""
        requested = req.requested_model or None
        if requested in self.cfg.virtual_models:
            requested = None
        category = a if isinstance(a, str) else a.category
        return self.rules.current.constraints(requested, req.client, category, self.table, req.client_ip)

    def _rank(
        self,
        req: RouteRequestV1,
        a: PromptAnalysis,
        cons: Constraints,
        learned: Learned | None,
        limit: int | None,
        keep: PromptRows | None = None,
    ) -> Ranking:
        """The ranking proper: everything that reads quality, feedback, recent use and the fleet
        (``keep``: the prompt's model-term rows, kept between its decisions)."""
        return rank(
            req,
            a,
            self.table,
            self.replicas,
            self.cfg.scoring,
            cons=cons,
            state=self._state() if cons.requested is None else None,  # a named model has no model terms
            learned=learned,
            limit=limit if limit is not None else self.cfg.max_candidates,
            rterms=self._rterms,
            rsum=self._rsum,
            wait_s=self._waits()[1],
            keep=keep,
        )

    def learned_estimate(self, a: PromptAnalysis, embedding: np.ndarray | None) -> Learned | None:
        """The k-NN index's estimates blended with the router prior's (``learned_prior.blend``)."""
        if embedding is None or self.table.size == 0:
            return None
        knn_p = knn_n = prior_p = None
        if self.learned is not None and len(self.learned):
            knn_p, knn_n = self.learned.aligned(embedding, self.table.names)
        prior = self.prior
        if prior is not None and prior.dims == embedding.shape[0]:
            prior_p = prior.estimate(prompt_features(embedding, a.complexity, a.tokens), self._theta, self._phi)
        out = blend(prior_p, knn_p, knn_n, self.cfg.prior_mass)
        return Learned(*out) if out is not None else None

    def learned_info(self) -> dict[str, object]:
        """What the learned term is made of right now (for ``/admin/explain``)."""
        return {
            "prior": self.prior.version if self.prior is not None else None,
            "prior_mass": self.cfg.prior_mass,
            "knn_prompts": len(self.learned) if self.learned is not None else 0,
            "learned_k": self.cfg.scoring.learned_k,
        }

    async def route(self, req: RouteRequestV1, *, budget_s: float | None = None) -> RouteReplyV1:
        """``budget_s``: what is left of the caller's deadline; the classifier is asked inline
        only when it fits (``classifier.py``)."""
        out = await self.route_answer(req, budget_s=budget_s)
        return out.reply() if isinstance(out, Answer) else out

    async def route_answer(self, req: RouteRequestV1, *, budget_s: float | None = None) -> RouteReplyV1 | Answer:
        """:meth:`route`, with a decision made now given as its :class:`Answer` (the reply not built
        yet: the handler sends :meth:`Answer.wire` when nothing else changes the reply); a routing
        cache hit is a reply."""
        self._check_rules()
        self._expire_notes()
        features = PromptFeatures.from_request(req)
        digest = features.digest()
        key = (digest, req.requested_model, req.client, req.client_ip)
        version = self.memo_version()
        prep = self.memo.get(key, version)
        if prep is not None:
            return self._answer(req, prep, self._rows(key))
        embedding = self.embed(req)
        if self.cache is not None:
            hit = await self.cache.get(req, self.version, embedding, budget_s=budget_s)
            if hit is not None:
                reply = self.replicas_now(hit[0], req, features.tokens)
                self._used(reply.candidates[0].model if reply.candidates else None)
                return with_embedding(reply, embedding)
        a = self.analyzer.analyze(features, digest)
        memoise = self.classifier is None or not self.classifier.should_ask(a)
        if self.classifier is not None:
            a = await self.classifier.refine(req.text, a, budget_s=budget_s)
        cons = self.constraints(req, a)
        learned = self.learned_estimate(a, embedding) if cons.requested is None else None
        prep = Prepared(a, cons, learned, encode_embedding(embedding) if embedding is not None else None)
        if memoise:
            self.memo.put(key, version, prep)
        answer = self._answer(req, prep, self._rows(key) if memoise else None)
        if self.cache is not None and answer.ranking.candidates:  # written after the reply goes
            self.cache.store_later(req, self.version, answer.reply(), embedding)
        return answer

    def _rows(self, key: Hashable) -> PromptRows | None:
        """The model-term rows kept for a memo key (a new, empty one when none are)."""
        if self.cfg.kept_rows <= 0:
            return None
        rows = self._kept.get(key)
        if rows is None:
            rows = self._kept[key] = PromptRows()
            if len(self._kept) > self.cfg.kept_rows:
                self._kept.popitem(last=False)
        else:
            self._kept.move_to_end(key)
        return rows

    def _answer(self, req: RouteRequestV1, prep: Prepared, keep: PromptRows | None = None) -> Answer:
        ranking = self._rank(req, prep.analysis, prep.constraints, prep.learned, None, keep)
        self._used(ranking.candidates[0].model if ranking.candidates else None)
        return Answer(ranking, self.cfg.max_candidates, prep.embedding_wire)

    def replicas_now(self, reply: RouteReplyV1, req: RouteRequestV1 | None = None, tokens: float = 0.0) -> RouteReplyV1:
        """A cached reply with each model's replicas re-ordered by their replica terms now (load,
        residency, health, room) and, for the request ``req`` of ``tokens``, by their waits as the
        speed term counts them (``wait``, with ``queue_aware``: as :func:`rank` orders a model's
        replicas); the models and their order stay as cached."""
        cands = reply.candidates
        slots: dict[str, list[int]] = {}
        for i, c in enumerate(cands):
            slots.setdefault(c.model, []).append(i)
        if all(len(idx) < 2 for idx in slots.values()):
            return reply
        now = self._rterms.sum(axis=0)
        sc = self.cfg.scoring
        if req is not None and sc.queue_aware and sc.policy == "score":
            keys = [(cands[i].backend, cands[i].upstream_model) for idx in slots.values() if len(idx) > 1 for i in idx]
            rows = np.array([j for k in keys if (j := self._row_of.get(k)) is not None], dtype=np.intp)
            ahead = self._waits()[1][rows]
            if any(ahead.tolist()):  # as rank() weighs them: the request's quality preference, the prompt's times
                cons = self.constraints(req, reply.analysis.category)
                q = req.quality if req.quality is not None else cons.quality
                q = q if q is not None else sc.default_quality
                length = reply_tokens(req.max_tokens, sc)
                now[rows] += wait_term(ahead, self.replicas.model[rows], tokens, q, self.table, sc, length)

        def replica_score(c: CandidateV1) -> float:
            j = self._row_of.get((c.backend, c.upstream_model))
            return float(now[j]) if j is not None else 0.0

        out = list(cands)
        for idx in slots.values():
            if len(idx) > 1:
                for i, c in zip(idx, sorted((cands[i] for i in idx), key=replica_score, reverse=True), strict=True):
                    out[i] = c
        return reply if out == cands else reply.model_copy(update={"candidates": out})

    async def explain(self, req: RouteRequestV1) -> Ranking:
        """Every candidate, with terms and reasons; nothing cached, nothing counted (the classifier's
        answers are cached, so an explanation sees the analysis the route saw)."""
        a = self.analyze(req)
        if self.classifier is not None:
            a = await self.classifier.refine(req.text, a)
        return self.decide(req, a, self.embed(req), limit=10_000)

    def _used(self, first: str | None) -> None:
        """Count ``first``, the model a reply put first (``None``: no candidate), for the diversity term."""
        if first is None or self._recent.size == 0:
            return
        self._recent *= 0.5 ** (1.0 / self.cfg.diversity_half_life)
        i = self.table.index.get(first)
        if i is not None:
            self._recent[i] += 1.0


@dataclass(frozen=True, slots=True)
class Answer:
    """A decision made now, before its reply is built: :meth:`reply` validates one,
    :meth:`wire` encodes its JSON bytes directly (byte for byte ``reply().model_dump_json()``)."""

    ranking: Ranking
    max_candidates: int
    embedding: str | None
    """The embedding as the reply's analysis carries it (base64 float16)."""

    @property
    def candidates(self) -> tuple[Scored, ...]:
        """The reply's candidates, best first."""
        return self.ranking.candidates[: self.max_candidates]

    def reply(self) -> RouteReplyV1:
        """The reply as a validated model (what the routing cache stores)."""
        return self.ranking.to_reply(self.max_candidates, self.embedding, filtered=False)

    def fields(self) -> dict[str, object]:
        """The reply as plain values (:meth:`Ranking.reply_fields`; the VRAM planner's
        :meth:`~turnout.scorer.vram_reply.Rework.on_fields` changes them before they are encoded)."""
        return self.ranking.reply_fields(self.max_candidates, self.embedding, filtered=False)

    def wire(self) -> bytes:
        """The reply's JSON, with no model built (the gateway validates it on receipt)."""
        return self.ranking.reply_json(self.max_candidates, self.embedding, filtered=False)


# --------------------------------------------------------------------------- wiring helpers


def engine_config(opts: ScorerOptions) -> EngineConfig:
    r: RoutingOptions = opts.routing
    weights = Weights(**r.weights)
    return EngineConfig(
        analysis=AnalysisConfig(extra_categories={k: tuple(v) for k, v in r.extra_categories.items()}),
        scoring=ScoringConfig(
            weights=weights,
            policy=r.policy,
            speed_scale=r.speed_scale,
            queue_aware=r.queue_aware,
            tier_thresholds_b=r.tier_thresholds_b,
            unservable_without_vision=r.unservable_without_vision,
            default_quality=opts.default_quality,
            unknown_params_b=opts.unknown_params_b,
            learned_k=r.learned_k,
            max_loaded_per_gpu=opts.vram.max_loaded_per_gpu,
            load_fixed_s=opts.vram.load_fixed_s,
            load_gib_per_s=opts.vram.load_gib_per_s,
        ),
        virtual_models=frozenset(opts.virtual_models),
        max_candidates=opts.max_candidates,
        prior_mass=r.prior_mass,
        inflight_lag_s=opts.inflight_lag_s,
        inflight_margin_s=opts.inflight_margin_s,
    )


def classifier_config(r: RoutingOptions) -> ClassifierConfig | None:
    c = r.classifier
    if not c.base_url or not c.model:
        return None
    return ClassifierConfig(
        base_url=c.base_url,
        model=c.model,
        api_key=c.api_key,
        timeout_s=c.timeout_s,
        band=c.band,
        min_confidence=c.min_confidence,
    )


def explain_reply(ranking: Ranking, rules_version: str, max_candidates: int | None = None) -> ExplainReplyV1:
    a = ranking.analysis
    reply = ranking.to_reply(max_candidates or max(1, len(ranking.candidates)))
    return ExplainReplyV1(
        analysis=ExplainAnalysisV1(
            category=a.category,
            complexity=a.complexity,
            level=a.level,
            signals=list(a.reasons),
            confidence=a.confidence,
            source=a.source,
            tokens=a.tokens,
            category_scores=dict(a.category_scores),
        ),
        quality=ranking.quality,
        candidates=reply.candidates,
        filtered=dict(ranking.filtered),
        notes=list(ranking.notes),
        unservable=ranking.unservable,
        unservable_code=ranking.unservable_code,
        catalog_version=ranking.catalog_version,
        rules_version=rules_version,
    )


def with_embedding(reply: RouteReplyV1, embedding: np.ndarray | None) -> RouteReplyV1:
    """The reply with this prompt's embedding in its analysis (a cache hit answers with another
    prompt's analysis): the gateway stores it with the decision, and feedback on the reply then
    reaches the learned index (:func:`turnout.scorer.learned_loader.load_feedback`)."""
    if embedding is None or reply.analysis is None:
        return reply
    analysis = reply.analysis.model_copy(update={"embedding": encode_embedding(embedding)})
    return reply.model_copy(update={"analysis": analysis})
