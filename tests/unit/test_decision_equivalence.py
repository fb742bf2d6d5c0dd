"""The optimised decision path gives the decisions of the reference path (``reference_ranking.py``,
the code before issue 17's optimisation) on many random catalogs, fleets and prompts; the k-NN
screen finds the neighbours the full product finds; the decision memo answers what a decision
without it answers, whatever changed in the fleet in between."""

from __future__ import annotations

from types import MappingProxyType

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from tests.unit import reference_ranking as ref
from turnout.common.schemas.catalog import CapabilitiesV1, CatalogModelV1, CatalogSnapshotV1, ReplicaV1
from turnout.common.schemas.route import RequestKind, RouteReplyV1, RouteRequestV1
from turnout.embeddings.static import default_embedder
from turnout.scorer import scoring
from turnout.scorer.caches import DecisionMemo, DecisionMemoMetrics
from turnout.scorer.engine import Answer, EngineConfig, RoutingEngine
from turnout.scorer.fleet import FleetState
from turnout.scorer.learned import LearnedConfig, LearnedIndex
from turnout.scorer.learned_prior import load_prior
from turnout.scorer.prompt_analysis import Analyzer, PromptAnalysis
from turnout.scorer.rules import Rules
from turnout.scorer.scoring import (
    Learned,
    ModelSpec,
    ModelState,
    ModelTable,
    PromptRows,
    Ranking,
    ReplicaTable,
    ScoringConfig,
    model_terms,
    rank,
)

CATEGORIES = ("coding", "reasoning", "creative", "summarisation", "translation", "general")
TEXTS = (
    "hi!",
    "thanks a lot",
    "implement a thread-safe LRU cache in Rust with tests",
    "prove that the square root of 2 is irrational, step by step",
    "write a poem about the sea",
    "summarise the key points of this report: revenue fell 3 % while costs rose",
    "translate this into French: good morning",
    "what is the capital of Portugal?",
    "```python\ndef f(x):\n    return x * 2\n```\nwhy does this fail?",
    "Compare the trade-offs of B-trees and LSM trees for a write-heavy workload. " * 6,
)


def _specs(rng: np.random.Generator, n: int, backends: int) -> tuple[ModelSpec, ...]:
    out = []
    for i in range(n):
        size = float(rng.choice([0.5, 1.2, 3, 7, 8, 14, 32, 70, 120]))
        embedding = bool(rng.random() < 0.1)
        profile = {
            c: (float(rng.random()), float(rng.integers(1, 40)))
            for c in CATEGORIES + ("overall",)
            if rng.random() < 0.3
        }
        reps = tuple(
            (f"b{j}", f"m{i}", f"h{j % 3}") for j in sorted(set(rng.integers(0, backends, int(rng.integers(1, 4)))))
        )
        out.append(
            ModelSpec(
                f"m{i}",
                size if rng.random() < 0.9 else None,
                active_params_b=size / 4 if rng.random() < 0.1 else None,
                context_length=int(rng.choice([2048, 8192, 32768, 131072])) if rng.random() < 0.9 else None,
                chat=not embedding,
                completion=not embedding and rng.random() < 0.9,
                vision=bool(rng.random() < 0.2),
                tools=bool(rng.random() < 0.5),
                embedding=embedding,
                coder=bool(rng.random() < 0.2),
                tokens_per_s=float(rng.uniform(5, 300)) if rng.random() < 0.5 else None,
                price_per_mtok=float(rng.uniform(0, 10)) if rng.random() < 0.2 else None,
                profile=profile,
                benchmark={"overall": float(rng.random())} if rng.random() < 0.4 else {},
                tier=str(rng.choice(["small", "medium", "large"])) if rng.random() < 0.1 else None,
                replicas=reps,
                vram_bytes=int(size * 0.6e9) if rng.random() < 0.7 else None,
            )
        )
    return tuple(out)


def _replicas(rng: np.random.Generator, table: ModelTable, backends: int) -> ReplicaTable:
    keys = list(zip(table.rep_backend, table.rep_upstream, strict=True))
    pick = [keys[i] for i in range(len(keys)) if rng.random() < 0.3]
    return ReplicaTable.from_specs(
        table,
        resident=frozenset(pick),
        unhealthy=frozenset(f"b{j}" for j in range(backends) if rng.random() < 0.1),
        free_frac={f"b{j}": float(rng.random()) for j in range(backends) if rng.random() < 0.7},
        no_room=frozenset(k for k in keys if rng.random() < 0.1),
        inflight={k: int(rng.integers(-1, 20)) for k in keys if rng.random() < 0.4},
        open_backends=frozenset(f"b{j}" for j in range(backends) if rng.random() < 0.05),
        open_replicas=frozenset(k for k in keys if rng.random() < 0.05),
    )


def _direct_is_pydantic(
    ranking: Ranking, max_candidates: int, embedding: str | None, *, filtered: bool, finite: bool = True
) -> str:
    """The direct encoding (``Ranking.reply_json``, what ``scorer.route`` sends) is the pydantic
    encoding byte for byte, and (its floats ``finite``: both encode NaN and ∞ as null) a valid
    reply that encodes back to itself; returns it."""
    direct = ranking.reply_json(max_candidates, embedding, filtered=filtered)
    assert direct == ranking.to_reply(max_candidates, embedding, filtered=filtered).model_dump_json().encode()
    if finite:
        assert RouteReplyV1.model_validate_json(direct).model_dump_json().encode() == direct
    return direct.decode()


def _same(fast: Ranking, slow: Ranking) -> None:
    assert fast.candidates == slow.candidates
    for filtered in (True, False):  # the wire reply, byte for byte
        wire = fast.to_reply(8, "e", filtered=filtered).model_dump_json()
        assert wire == slow.to_reply(8, "e", filtered=filtered).model_dump_json()
        assert _direct_is_pydantic(fast, 8, "e", filtered=filtered) == wire
        _direct_is_pydantic(fast, 2, None, filtered=filtered)
    assert dict(fast.filtered) == dict(slow.filtered)
    assert (fast.notes, fast.unservable, fast.unservable_code, fast.chosen, fast.quality) == (
        slow.notes,
        slow.unservable,
        slow.unservable_code,
        slow.chosen,
        slow.quality,
    )


@pytest.mark.parametrize("partial_from", [0, scoring.PARTIAL_FROM])
@pytest.mark.parametrize("seed", range(12))
def test_the_optimised_ranking_equals_the_reference_ranking(
    seed: int, partial_from: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scoring, "PARTIAL_FROM", partial_from)  # both ways of taking the best rows
    rng = np.random.default_rng(seed)
    backends = int(rng.integers(1, 8))
    cfg = ScoringConfig(policy="tiers") if seed % 5 == 4 else ScoringConfig()
    table = ModelTable.build(_specs(rng, int(rng.integers(1, 120)), backends), cfg, version=f"v{seed}")
    reps = _replicas(rng, table, backends)
    rterms = ref.replica_terms(reps, cfg)
    analyzer = Analyzer()
    rules = Rules.parse("block: ['m1*']\npins: {creative: m3}\n") if seed % 3 == 2 else Rules()
    n = table.size
    for k in range(40):  # several requests per table: the selection memo hits
        req = RouteRequestV1(
            kind=RequestKind.EMBEDDING if rng.random() < 0.1 else RequestKind.CHAT,
            text=str(rng.choice(TEXTS)),
            has_images=bool(rng.random() < 0.2),
            has_tools=bool(rng.random() < 0.4),
            max_tokens=int(rng.integers(1, 40000)) if rng.random() < 0.3 else None,
            est_prompt_tokens=int(rng.integers(0, 100000)) if rng.random() < 0.2 else 0,
            quality=float(rng.random()) if rng.random() < 0.6 else None,
        )
        a = analyzer.analyze_request(req)
        requested = f"m{int(rng.integers(0, n + 2))}" if rng.random() < 0.15 else None
        cons = rules.constraints(requested, None, a.category, table)
        state = (
            ModelState(rng.uniform(-1, 1, n), rng.uniform(0, 20, n), rng.dirichlet(np.ones(n)))
            if rng.random() < 0.7
            else None
        )
        learned = None
        if rng.random() < 0.6:
            p = np.where(rng.random(n) < 0.3, np.nan, rng.random(n))
            learned = Learned(p, rng.uniform(0, 12, n))
        limit = None if k % 4 == 0 else int(rng.integers(1, 10))
        args = (req, a, table, reps, cfg)
        kw = {"cons": cons, "state": state, "learned": learned, "limit": limit}
        _same(rank(*args, **kw, rterms=rterms), ref.rank(*args, **kw))
        _same(rank(*args, **kw), ref.rank(*args, **kw))


NAMES = ("m", "modèle-ü", "日本語:7b", 'q"uo\\te/sl', "tab\tnl\n\x01\x1f\x7f", "emoji-🚀", "\u2028\u2029")


def _odd_float(rng: np.random.Generator, *, finite: bool) -> float:
    if not finite and rng.random() < 0.2:
        return float(rng.choice([float("nan"), float("inf"), -float("inf")]))
    return float(
        rng.choice(
            [
                rng.random(),
                round(float(rng.uniform(-2, 2)), 4),
                float(rng.uniform(-1e-9, 1e-9)),
                float(rng.uniform(1e15, 1e20)),
                -0.0,
                0.0,
                1.0,
                0.1 + 0.2,
                5e-324,
                1.7976931348623157e308,
            ]
        )
    )


def odd_name(rng: np.random.Generator) -> str:
    """A name with unicode, quotes, escapes and control characters."""
    return f"{rng.choice(NAMES)}{int(rng.integers(0, 100))}"


def odd_ranking(rng: np.random.Generator, *, finite: bool) -> Ranking:
    """A ranking of 0-11 candidates with odd names and floats at their edges (NaN and ∞ unless
    ``finite``), optional fields present and absent, a filtered map."""

    def name() -> str:
        return odd_name(rng)

    cands = tuple(
        scoring.Scored(
            name(),
            name(),
            name(),
            _odd_float(rng, finite=finite),
            {name(): _odd_float(rng, finite=finite) for _ in range(int(rng.integers(0, 5)))},
            tuple(name() for _ in range(int(rng.integers(0, 4)))),
        )
        for _ in range(int(rng.integers(0, 12)))
    )
    unservable = rng.random() < 0.3
    return Ranking(
        PromptAnalysis(
            category=name(),
            complexity=_odd_float(rng, finite=finite),
            level=name(),
            reasons=tuple(name() for _ in range(int(rng.integers(0, 3)))),
            tokens=int(rng.integers(0, 1000)),
            confidence=float(rng.random()),
        ),
        candidates=cands,
        filtered=MappingProxyType({name(): name() for _ in range(int(rng.integers(0, 6)))}),
        unservable=name() if unservable else None,
        unservable_code=str(rng.choice(["model_not_found", "unservable"])) if unservable else None,
        catalog_version=name() if rng.random() < 0.8 else "",
    )


@pytest.mark.parametrize("seed", range(30))
def test_the_direct_reply_encoding_is_the_pydantic_encoding_byte_for_byte(seed: int) -> None:
    """Unicode and escaped names, floats at their edges (rounded, tiny, huge, −0, NaN, ∞), optional
    fields present and absent, a filtered map: ``reply_json`` is ``model_dump_json`` byte for byte."""
    rng = np.random.default_rng(seed)
    finite = seed % 3 != 0
    ranking = odd_ranking(rng, finite=finite)
    for filtered in (True, False):
        for max_candidates in (8, 1, 20):
            embedding = odd_name(rng) if rng.random() < 0.5 else None
            _direct_is_pydantic(ranking, max_candidates, embedding, filtered=filtered, finite=finite)


@pytest.mark.parametrize("seed", range(10))
def test_the_model_terms_equal_the_reference_terms_bit_for_bit(seed: int) -> None:
    """Rows written in place and kept per table give the plain expressions' values exactly (the
    ranking compares scores, so a last-bit difference could reorder a near-tie)."""
    rng = np.random.default_rng(100 + seed)
    cfg = ScoringConfig(policy="tiers") if seed % 5 == 4 else ScoringConfig(cost_tokens=1.0 + seed % 3)
    table = ModelTable.build(_specs(rng, int(rng.integers(1, 120)), 3), cfg, version=f"t{seed}")
    analyzer = Analyzer()
    n = table.size
    for _ in range(30):
        a = analyzer.analyze_request(RouteRequestV1(text=str(rng.choice(TEXTS))))
        q = float(rng.choice([0.0, 0.25, 0.5, 0.75, 1.0, rng.random()]))
        state = ModelState(rng.uniform(-1, 1, n), rng.uniform(0, 20, n), rng.dirichlet(np.ones(n)))
        learned = Learned(np.where(rng.random(n) < 0.3, np.nan, rng.random(n)), rng.uniform(0, 12, n))
        reply = float(rng.choice([1.0, 16.0, 255.0, float(rng.integers(0, 256))]))  # a request's max_tokens
        for s, lr in ((state, learned), (None, None), (state, None), (None, learned)):
            fast, slow = model_terms(a, q, table, cfg, s, lr), ref.model_terms(a, q, table, cfg, s, lr)
            assert fast.names == slow.names
            assert fast.values.tobytes() == slow.values.tobytes()  # ±0.0 and NaN included
            assert fast.total.tobytes() == slow.total.tobytes()
            fast, slow = (
                model_terms(a, q, table, cfg, s, lr, reply=reply),
                ref.model_terms(a, q, table, cfg, s, lr, reply),
            )
            assert fast.values.tobytes() == slow.values.tobytes()  # ±0.0 and NaN included
            assert fast.total.tobytes() == slow.total.tobytes()
        # the prompt's rows kept between its decisions: the state moves, a new preference or
        # learned estimate rebuilds them, and each call still equals the reference
        keep, kept = PromptRows(), 0
        wt = cfg.wait_tokens
        steps = ((state, q, wt), (None, q, wt), (state, q, wt), (state, 1.0 - q, wt), (state, 1.0 - q, reply))
        for s, qq, rr in steps:
            s2 = s and ModelState(s.feedback_mean, s.feedback_n, rng.dirichlet(np.ones(n)))
            kept += keep.get((table, cfg, a, learned), qq, rr) is not None
            fast = model_terms(a, qq, table, cfg, s2, learned, keep, rr)
            slow = ref.model_terms(a, qq, table, cfg, s2, learned, rr)
            assert fast.values.tobytes() == slow.values.tobytes()
            assert fast.total.tobytes() == slow.total.tobytes()
        assert kept == 2 + (q == 1.0 - q)
        copy = Learned(learned.p.copy(), learned.n_eff.copy())  # equal, but not the one the rows were kept for
        assert keep.get((table, cfg, a, copy), 1.0 - q, reply) is None


def _index(rng: np.random.Generator, rows: int, models: int, screen_from: int) -> LearnedIndex:
    dims = 32
    centres = rng.standard_normal((6, dims))
    emb = centres[rng.integers(0, 6, rows)] + 0.6 * rng.standard_normal((rows, dims))
    index = LearnedIndex(dims, LearnedConfig(capacity=max(rows, 16), screen_from=screen_from))
    scores = np.where(rng.random((rows, models)) < 0.4, np.nan, rng.random((rows, models)))
    index.add_batch(emb, [f"m{i}" for i in range(models)], scores)
    return index


@pytest.mark.parametrize("rows", [10, 700, 3000])
def test_the_knn_screen_finds_the_neighbours_of_the_full_product(rows: int) -> None:
    rng = np.random.default_rng(rows)
    index = _index(rng, rows, 7, screen_from=64)
    for _ in range(200):
        q = (index._emb[int(rng.integers(0, rows))] + rng.normal(0, rng.uniform(0.05, 1.5), 32)).astype(np.float32)
        q /= np.linalg.norm(q)
        near, sims = index._neighbours(q)
        full = index._emb[:rows] @ q
        expect = np.flatnonzero(full > index.cfg.floor)
        if expect.size > index.cfg.k:
            expect = expect[np.argpartition(-full[expect], index.cfg.k - 1)[: index.cfg.k]]
        assert set(near.tolist()) == set(expect.tolist())
        np.testing.assert_allclose(sims, full[near], atol=1e-6)
        p, n_eff = index.estimate_one(q)
        p_ref, n_ref = ref.estimate_one(index, q)
        np.testing.assert_allclose(p, p_ref, atol=1e-6)
        np.testing.assert_allclose(n_eff, n_ref, atol=1e-6)


def _snapshot(rng: np.random.Generator, n: int) -> CatalogSnapshotV1:
    models = []
    for i in range(n):
        models.append(
            CatalogModelV1(
                name=f"m{i}",
                params_b=float(rng.choice([1, 3, 8, 14, 32, 70])),
                capabilities=CapabilitiesV1(tools=bool(rng.random() < 0.5), vision=bool(rng.random() < 0.2)),
                coder=bool(rng.random() < 0.2),
                replicas=[
                    ReplicaV1(backend=f"b{j}", upstream_model=f"m{i}", host=f"h{j}") for j in (i % 3, (i + 1) % 3)
                ],
            )
        )
    return CatalogSnapshotV1(version="memo", models=models)


def _fleet(rng: np.random.Generator, snap: CatalogSnapshotV1) -> FleetState:
    keys = [(r.backend, r.upstream_model) for m in snap.models for r in m.replicas]
    return FleetState(
        resident=frozenset(k for k in keys if rng.random() < 0.3),
        unhealthy=frozenset(b for b in ("b0", "b1", "b2") if rng.random() < 0.1),
        inflight={k: int(rng.integers(0, 12)) for k in keys if rng.random() < 0.3},
        open_replicas=frozenset(k for k in keys if rng.random() < 0.05),
    )


async def test_a_memo_hit_answers_what_a_decision_without_the_memo_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    emb = default_embedder()
    learned = LearnedIndex(emb.dims)
    learned.add_batch(emb.encode(list(TEXTS)), ["m0", "m1", "m2"], rng.random((len(TEXTS), 3)))
    snap = _snapshot(rng, 30)
    registry = CollectorRegistry()
    memo = DecisionMemo(64, DecisionMemoMetrics.create(registry))
    now = [0.0]  # one clock for both, moved only when the fleet is read: the same notes end at the same decisions
    engines = [
        RoutingEngine(embedder=emb, learned=learned, memo=memo, clock=lambda: now[0]),
        RoutingEngine(EngineConfig(kept_rows=0), embedder=emb, learned=learned, clock=lambda: now[0]),
    ]
    engines[1].memo.size = 0  # no memo (nor model-term rows kept): every decision in full
    reused = [0]
    get = PromptRows.get

    def counted(self: PromptRows, objs: tuple[object, ...], q: float, reply: float) -> np.ndarray | None:
        out = get(self, objs, q, reply)
        reused[0] += out is not None
        return out

    monkeypatch.setattr(PromptRows, "get", counted)
    for e in engines:
        e.set_catalog(snap)
    for step in range(150):
        if step % 10 == 0:
            now[0] += 0.2  # some notes over, none absorbed (a read holds notes 0.35 s old)
            fleet = _fleet(rng, snap)
            for e in engines:
                e.set_fleet(fleet)
        req = RouteRequestV1(
            text=str(rng.choice(TEXTS)),
            has_tools=bool(rng.random() < 0.3),
            quality=float(rng.choice([0.2, 0.8])),
            requested_model=[None, "m3", "turnout/auto"][int(rng.integers(0, 3))],
        )
        answer = await engines[0].route_answer(req)  # what scorer.route sends: the direct bytes
        without = await engines[1].route(req)
        assert isinstance(answer, Answer)
        assert answer.wire() == without.model_dump_json().encode()
        assert answer.reply() == without
        c = without.candidates[0]
        for e in engines:
            e.note_routed(c.backend, c.upstream_model, req)
    assert memo.hits > 80 and memo.misses >= 10
    assert 10 <= reused[0] < memo.hits  # reused on hits (a named model has none; a new preference rebuilds them)
    assert registry.get_sample_value("turnout_scorer_decision_memo_lookups_total", {"outcome": "hit"}) == memo.hits
    assert registry.get_sample_value("turnout_scorer_decision_memo_lookups_total", {"outcome": "miss"}) == memo.misses


async def test_the_memo_is_dropped_when_the_learned_index_rules_or_catalog_change(tmp_path) -> None:
    emb = default_embedder()
    learned = LearnedIndex(emb.dims)
    e = RoutingEngine(embedder=emb, learned=learned)
    e.set_catalog(_snapshot(np.random.default_rng(1), 8))
    req = RouteRequestV1(text="write a poem about the sea")
    await e.route(req)
    await e.route(req)
    assert (e.memo.hits, e.memo.misses) == (1, 1)
    learned.add(emb.encode_one(req.text), "m3", 1.0)  # new graded outcome: the k-NN estimate changes
    await e.route(req)
    assert (e.memo.hits, e.memo.misses) == (1, 2)
    e.set_catalog(_snapshot(np.random.default_rng(2), 8))
    await e.route(req)
    assert (e.memo.hits, e.memo.misses) == (1, 3)
    e.set_fleet(FleetState(resident=frozenset({("b0", "m0")})))  # the fleet alone keeps it
    await e.route(req)
    assert (e.memo.hits, e.memo.misses) == (2, 3)


async def test_a_new_router_prior_or_learned_index_is_a_memo_miss() -> None:
    emb = default_embedder()
    e = RoutingEngine(embedder=emb, learned=LearnedIndex(emb.dims), prior=load_prior())
    e.set_catalog(_snapshot(np.random.default_rng(3), 8))
    req = RouteRequestV1(text="prove that there are infinitely many primes")
    assert (await e.route(req)).candidates
    e.prior = load_prior()  # the same weights, another artefact (as a reload gives)
    assert (await e.route(req)).candidates  # no crash comparing two priors
    e.learned = LearnedIndex(emb.dims)
    await e.route(req)
    await e.route(req)
    assert (e.memo.hits, e.memo.misses) == (1, 3)
