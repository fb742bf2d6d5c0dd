import numpy as np
import pytest

from turnout.common.schemas.catalog import CapabilitiesV1, CatalogModelV1, CatalogSnapshotV1, ReplicaV1
from turnout.common.schemas.route import CandidateV1, RequestKind, RouteReplyV1, RouteRequestV1
from turnout.embeddings.static import default_embedder
from turnout.scorer.engine import RoutingEngine
from turnout.scorer.fleet import FleetState
from turnout.scorer.learned import LearnedIndex, decode_embedding
from turnout.scorer.rules import RulesStore


def model(name: str, b: float, **caps: bool) -> CatalogModelV1:
    return CatalogModelV1(
        name=name,
        params_b=b,
        capabilities=CapabilitiesV1(**caps),
        coder="coder" in name,
        replicas=[ReplicaV1(backend="ollama", upstream_model=name)],
    )


SNAPSHOT = CatalogSnapshotV1(
    version="c1",
    models=[
        model("llama3.2:1b", 1.2),
        model("qwen2.5-coder:32b", 32, tools=True),
        model("llama3.3:70b", 70, tools=True),
        model("llava:7b", 7, vision=True),
        model("orphan:8b", 8).model_copy(update={"replicas": []}),
    ],
)


def engine(**kw) -> RoutingEngine:
    e = RoutingEngine(**kw)
    e.set_catalog(SNAPSHOT)
    return e


async def test_route_and_explain_agree():
    e = engine()
    req = RouteRequestV1(text="implement a thread-safe LRU cache in Rust with tests")
    reply = await e.route(req)
    explained = await e.explain(req)
    assert reply.candidates[0].model == explained.candidates[0].model == "qwen2.5-coder:32b"
    assert len(explained.candidates) == 4  # every routable model (orphan has no replica)
    assert reply.catalog_version == "c1"


async def test_virtual_model_routes_and_alias_resolves(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("aliases: {gpt-4: llama3.3:70b}\ntiers: {llava:7b: large}\n")
    e = engine(rules=RulesStore(path))
    auto = RouteRequestV1(text="hi", requested_model="turnout/auto", quality=0.3)
    assert (await e.route(auto)).candidates[0].model == "llama3.2:1b"
    assert (await e.route(RouteRequestV1(text="hi", requested_model="gpt-4"))).candidates[0].model == "llama3.3:70b"
    assert e.table.tier[e.table.index["llava:7b"]] == 2


async def test_fleet_state_moves_the_replica_choice():
    e = RoutingEngine()
    e.set_catalog(
        CatalogSnapshotV1(
            version="c2",
            models=[
                CatalogModelV1(
                    name="m",
                    params_b=8,
                    replicas=[ReplicaV1(backend="a", upstream_model="m"), ReplicaV1(backend="b", upstream_model="m")],
                )
            ],
        )
    )
    e.set_fleet(FleetState(resident=frozenset({("b", "m")})))
    assert (await e.route(RouteRequestV1(text="hello"))).candidates[0].backend == "b"
    e.set_fleet(FleetState(resident=frozenset({("a", "m")})))
    assert (await e.route(RouteRequestV1(text="hello"))).candidates[0].backend == "a"


async def test_learned_index_steers_similar_prompts():
    emb = default_embedder()
    idx = LearnedIndex(emb.dims)
    maths = [f"What is {i} times {i + 3}? Show the arithmetic." for i in range(30)]
    idx.add_batch(
        emb.encode(maths), ["llama3.2:1b", "llama3.3:70b"], np.tile([[0.0, 1.0]], (len(maths), 1)), source="profile"
    )
    plain = engine()
    learned = engine(embedder=emb, learned=idx)
    req = RouteRequestV1(text="What is 17 times 20? Show the arithmetic.", quality=0.5)
    assert (await plain.route(req)).candidates[0].model != "llama3.3:70b"
    top = (await learned.route(req)).candidates[0]
    assert top.model == "llama3.3:70b"
    assert top.terms["learned"] > 0


async def test_feedback_and_recent_use_feed_the_terms():
    e = engine()
    e.set_feedback({"llama3.3:70b": (1.0, 50.0)})
    chosen = {(await e.route(RouteRequestV1(text="hello"))).candidates[0].model for _ in range(5)}
    r = {c.model: c for c in (await e.explain(RouteRequestV1(text="hello"))).candidates}
    assert r["llama3.3:70b"].terms["feedback"] == pytest.approx(0.2 * 50 / 55, abs=1e-4)
    assert len(chosen) == 1
    assert r[chosen.pop()].terms["diversity"] < 0


async def test_the_reply_carries_the_prompt_embedding_for_feedback():
    """The gateway stores the reply's analysis with the decision; feedback on that reply then
    reaches the learned index through the embedding (learned_loader.load_feedback)."""
    emb = default_embedder()
    text = "Summarise the causes of the French revolution in three bullet points."
    reply = await engine(embedder=emb, learned=LearnedIndex(emb.dims)).route(RouteRequestV1(text=text))
    assert reply.analysis is not None and reply.analysis.embedding is not None
    np.testing.assert_allclose(decode_embedding(reply.analysis.embedding), emb.encode([text])[0], atol=2e-3)
    without = await engine().route(RouteRequestV1(text=text))  # no embedder configured: nothing to carry
    assert without.analysis is not None and without.analysis.embedding is None


class Clock:
    """A clock the test moves (the engine's ``clock``)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _two_replicas(clock: Clock) -> RoutingEngine:
    """Model m on backends a and b, both loaded: 0.1 s to the first token, 256 tokens/s. The
    engine's wall clock is its clock plus 5,000 s."""
    e = RoutingEngine(clock=clock, wall_clock=lambda: clock.t + 5000.0)
    replicas = [ReplicaV1(backend="a", upstream_model="m"), ReplicaV1(backend="b", upstream_model="m")]
    e.set_catalog(
        CatalogSnapshotV1(
            version="c3",
            models=[CatalogModelV1(name="m", params_b=8, ttft_ms=100.0, tokens_per_s=256.0, replicas=replicas)],
        )
    )
    e.set_fleet(FleetState(resident=frozenset({("a", "m"), ("b", "m")})))
    return e


async def test_decisions_count_as_load_until_a_read_of_the_gateways_counts_holds_them():
    clock = Clock()
    e = _two_replicas(clock)
    chosen = []
    for _ in range(4):
        req = RouteRequestV1(text="hello")
        c = (await e.route(req)).candidates[0]
        e.note_routed(c.backend, c.upstream_model, req)
        chosen.append(c.backend)
    assert chosen == ["a", "b", "a", "b"]  # each decision's request weighs on its replica
    assert np.array_equal(e._rsum, e._rterms.sum(axis=0))  # kept per column as the whole table sums
    assert list(e.replicas.inflight) == [2.0, 2.0]
    # a read 0.2 s later may not hold them yet (the gateways publish every 0.25 s): they count on top
    clock.t += 0.2
    e.set_load({("a", "m"): 2, ("b", "m"): 1})
    assert list(e.replicas.inflight) == [4.0, 3.0]
    # a read 0.4 s after them (over inflight_lag_s) holds those still in flight: it replaces them
    clock.t += 0.2
    e.set_load({("a", "m"): 7})
    assert list(e.replicas.inflight) == [7.0, 0.0]
    assert (await e.route(RouteRequestV1(text="hello"))).candidates[0].backend == "b"


async def test_a_read_holds_the_decisions_for_a_gateway_that_counted_after_them():
    """A route request that names its gateway: the read that holds its request is the first one
    with counts that gateway took ``inflight_margin_s`` (0.05 s) after the decision, however
    soon; a gateway that wrote no time, or one that names no gateway, waits for the lag."""
    clock = Clock()
    e = _two_replicas(clock)
    wall = clock.t + 5000.0
    for gw in ("g1", "g1", "g2", None):
        e.note_routed("a", "m", RouteRequestV1(text="hello", gateway_id=gw))
    assert list(e.replicas.inflight) == [4.0, 0.0]
    clock.t += 0.1
    e.set_load({("a", "m"): 1}, {"g1": wall + 0.04})  # g1 took its counts too soon after
    assert list(e.replicas.inflight) == [5.0, 0.0]
    e.set_load({("a", "m"): 2}, {"g1": wall + 0.06})  # g1's counts hold its two: g2's and the other stay
    assert list(e.replicas.inflight) == [4.0, 0.0]
    assert (e.inflight_read(), e.inflight_noted()) == (2, 2)
    clock.t += 0.3  # 0.4 s after the notes: the lag rule holds the rest
    e.set_load({("a", "m"): 3}, {"g1": wall + 0.3})
    assert list(e.replicas.inflight) == [3.0, 0.0]
    assert e.inflight_noted() == 0


async def test_a_noted_decision_counts_only_for_its_expected_time():
    """A request for 64 tokens on an idle replica of m is expected to take 0.1 s to its first
    token and 0.25 s for the rest: after 0.35 s it no longer counts, read or not."""
    clock = Clock()
    e = _two_replicas(clock)
    e.set_load({("a", "m"): 9})
    req = RouteRequestV1(text="hello", max_tokens=64)
    e.note_routed("b", "m", req)
    e.note_routed("b", "m", RouteRequestV1(text="hello"))  # 256 tokens at most, the average reply: 1.1 s
    assert list(e.replicas.inflight) == [9.0, 2.0]
    assert (e.inflight_read(), e.inflight_noted()) == (9, 2)  # the scorer's metrics read these
    clock.t += 0.34
    e.decide(req)  # a decision takes the notes whose time is over out first
    assert list(e.replicas.inflight) == [9.0, 2.0]
    clock.t += 0.02
    assert e.inflight_noted() == 1  # over, if not yet out of the counts
    e.decide(req)
    assert list(e.replicas.inflight) == [9.0, 1.0]
    # the busy term and sums as a full recomputation from these counts gives them
    noted = (e._rterms.copy(), e._rsum.copy(), e.waits.copy())
    e.set_load({("a", "m"): 9})  # 0.36 s after the notes: the read holds the one left
    assert list(e.replicas.inflight) == [9.0, 0.0]
    e.set_load({("a", "m"): 9, ("b", "m"): 1})
    assert [a.tobytes() for a in (e._rterms, e._rsum, e.waits)] == [a.tobytes() for a in noted]
    clock.t += 1.0
    e.decide(req)
    assert list(e.replicas.inflight) == [9.0, 1.0]  # absorbed, so nothing left to expire


def test_no_note_counts_longer_than_its_bound_while_no_read_comes():
    """A reply expected to take an hour (256 tokens at 0.1 tokens/s) counts for MAX_NOTE_S at
    most: what notes add while the reads fail stays bounded."""
    from turnout.scorer.notes import MAX_NOTE_S

    clock = Clock()
    e = RoutingEngine(clock=clock)
    slow = CatalogModelV1(
        name="slow",
        params_b=70,
        ttft_ms=100.0,
        tokens_per_s=0.01,
        replicas=[ReplicaV1(backend="a", upstream_model="slow")],
    )
    e.set_catalog(CatalogSnapshotV1(version="c5", models=[slow]))
    e.note_routed("a", "slow", RouteRequestV1(text="hello"))
    clock.t += MAX_NOTE_S - 0.01
    e.decide(RouteRequestV1(text="hello"))
    assert list(e.replicas.inflight) == [1.0]
    clock.t += 0.02
    e.decide(RouteRequestV1(text="hello"))
    assert list(e.replicas.inflight) == [0.0]


def test_a_cached_reply_takes_each_models_replicas_in_the_order_of_the_fleet_now():
    e = RoutingEngine()
    reps = [ReplicaV1(backend=b, upstream_model="m") for b in ("a", "b")]
    e.set_catalog(
        CatalogSnapshotV1(
            version="c4",
            models=[
                CatalogModelV1(name="m", params_b=8, replicas=reps),
                CatalogModelV1(name="n", params_b=3, replicas=[ReplicaV1(backend="a", upstream_model="n")]),
            ],
        )
    )
    cached = RouteReplyV1(
        candidates=[
            CandidateV1(model="m", backend="a", upstream_model="m", score=1.0),
            CandidateV1(model="n", backend="a", upstream_model="n", score=0.9),
            CandidateV1(model="m", backend="b", upstream_model="m", score=0.8),
        ]
    )
    e.set_fleet(FleetState(resident=frozenset({("a", "m"), ("b", "m")}), inflight={("a", "m"): 12}))
    assert [(c.model, c.backend) for c in e.replicas_now(cached).candidates] == [("m", "b"), ("n", "a"), ("m", "a")]
    e.set_fleet(FleetState(resident=frozenset({("a", "m"), ("b", "m")})))
    assert e.replicas_now(cached) is cached


async def test_a_route_reply_lists_the_filtered_models_only_when_nothing_is_left():
    e = engine()
    tools = await e.route(RouteRequestV1(text="hi", has_tools=True))
    assert tools.candidates and tools.filtered == {}
    explained = await e.explain(RouteRequestV1(text="hi", has_tools=True))
    assert explained.filtered["llama3.2:1b"] == "no tools support"
    nothing = await e.route(RouteRequestV1(kind=RequestKind.EMBEDDING, text="embed me"))
    assert nothing.candidates == [] and nothing.unservable_code == "unservable"
    assert nothing.filtered["llama3.2:1b"] == "not an embedding model"


async def test_expected_waits_follow_the_requests_ahead_and_the_models_speed():
    e = RoutingEngine()
    e.set_catalog(
        CatalogSnapshotV1(
            version="c4",
            models=[
                CatalogModelV1(
                    name="fast",
                    params_b=1,
                    tokens_per_s=256.0,
                    replicas=[ReplicaV1(backend="a", upstream_model="fast")],
                ),
                CatalogModelV1(
                    name="slow",
                    params_b=70,
                    tokens_per_s=32.0,
                    replicas=[ReplicaV1(backend="a", upstream_model="slow")],
                ),
            ],
        )
    )
    e.set_load({("a", "fast"): 6, ("a", "slow"): 6})  # 4 run at once: a new request has 3 ahead of it
    fast, slow = (CandidateV1(model=m, backend="a", upstream_model=m, score=0.0) for m in ("fast", "slow"))
    unknown = CandidateV1(model="x", backend="nowhere", upstream_model="x", score=0.0)
    assert e.expected_waits([fast, slow, unknown]) == [3 * 256 / 256, 3 * 256 / 32, 0.0]
    e.note_routed("a", "slow")  # a decision just made is one more ahead
    assert e.expected_waits([slow]) == [4 * 256 / 32]


async def test_a_request_for_a_model_that_must_wait_for_room_expects_the_drain_of_a_busy_one():
    """Backend ``a`` (one GPU, so three models at most) holds m0, m1 and m2, all serving: m3
    there waits for the least busy of them to drain (2 requests × 256 tokens / 64 tokens/s),
    which the speed term counts; on ``b``, where m3 fits, it waits for nothing."""
    e = _two_backends({("a", "m0"): 2, ("a", "m1"): 5, ("a", "m2"): 6}, b_loaded=0, b_used_gib=0)
    a3, b3 = (CandidateV1(model="m3", backend=b, upstream_model="m3", score=0.0) for b in "ab")
    assert e.expected_waits([a3, b3]) == [2 * 256 / 64, 0.0]
    ranking = e.decide(RouteRequestV1(text="Write a haiku about Oslo.", quality=0.5), limit=100)
    by = {(c.model, c.backend): c for c in ranking.candidates}
    assert by[("m3", "a")].terms["wait"] < 0 and "wait" not in by[("m3", "b")].terms
    # the decisions noted since update the waits of their backend alone: as a full recomputation
    clock = Clock()
    e.clock = clock
    for backend, model in [("a", "m3"), ("a", "m0"), ("b", "m3"), ("a", "m0"), ("b", "s"), ("a", "m3")]:
        e.note_routed(backend, model)
        noted = e.waits.copy()
        counts = dict(
            zip(zip(e.replicas.backend, e.replicas.upstream, strict=True), e.replicas.inflight.tolist(), strict=True)
        )
        clock.t += 10.0  # a read long after the note, which it holds: a full recomputation
        e.set_load({k: int(v) for k, v in counts.items()})
        assert e.waits.tolist() == pytest.approx(noted.tolist())
    assert e.expected_waits([a3])[0] > 2 * 256 / 64  # m3 queued on a, behind m0 that now drains longer


def _random_fleet(rng: np.random.Generator) -> RoutingEngine:
    """12 models of random speed and size on three backends (one 24 GiB GPU each, so some loads
    must unload a model first), each holding a random few of them, random requests in flight."""
    from turnout.common.schemas.fleet import GpuStateV1, HostStateV1, LoadedModelV1

    gib = 2**30
    backends = "abc"
    models = [
        CatalogModelV1(
            name=f"m{i}",
            params_b=float(rng.choice([1, 8, 14, 32])),
            tokens_per_s=float(rng.choice([16.0, 64.0, 64.0, 400.0])),
            vram_bytes=int(rng.integers(2, 12)) * gib,
            replicas=[ReplicaV1(backend=b, upstream_model=f"m{i}", host=b) for b in backends if rng.random() < 0.7],
        )
        for i in range(12)
    ]
    e = RoutingEngine()
    e.set_catalog(CatalogSnapshotV1(version="r", models=models))
    states = []
    for b in backends:
        held = [m for m in models if any(r.backend == b for r in m.replicas) and rng.random() < 0.4][:3]
        used = sum(m.vram_bytes or 0 for m in held)
        gpu = GpuStateV1(
            index=0, memory_total_bytes=24 * gib, memory_used_bytes=used, memory_free_bytes=24 * gib - used
        )
        loaded = [LoadedModelV1(name=m.name, size_bytes=m.vram_bytes or 0, vram_bytes=m.vram_bytes or 0) for m in held]
        states.append(HostStateV1(host=b, backend=b, gpus=[gpu], loaded_models=loaded, ts=0.0))
    keys = list(zip(e.replicas.backend, e.replicas.upstream, strict=True))
    counts = {k: int(rng.integers(1, 6)) for k in keys if rng.random() < 0.3}
    e.set_fleet(FleetState.from_hosts(states, counts))
    return e


def _count_calls(monkeypatch, name: str) -> list[int]:  # type: ignore[no-untyped-def]
    """A one-item list counting the engine module's calls of its function ``name``."""
    import turnout.scorer.engine as engine_module

    calls = [0]
    real = getattr(engine_module, name)

    def counted(*args):  # type: ignore[no-untyped-def]
        calls[0] += 1
        return real(*args)

    monkeypatch.setattr(engine_module, name, counted)
    return calls


def _count_backend_recomputes(monkeypatch) -> list[int]:  # type: ignore[no-untyped-def]
    """A one-item list counting the engine's calls of ``backend_wait`` (a backend recomputed)."""
    return _count_calls(monkeypatch, "backend_wait")


def _assert_moved_as_recomputed(e: RoutingEngine, moved: list[int], wait: np.ndarray, ahead: np.ndarray) -> None:
    """``wait``/``ahead``, the waits as they were, recomputed for the backends of the replicas
    ``moved`` (``backend_wait_s``, as the scorer did before), and the busy row over the whole array
    and the table's column sum: bit for bit what the engine holds."""
    from turnout.scorer.terms import BUSY_ROW, backend_wait_s, busy_term

    sc, counts = e.cfg.scoring, e.replicas.inflight
    for j in moved:
        rows = e._queues.rows_of(j)
        wait[rows] = backend_wait_s(counts, rows, e._queues, sc)
        ahead[rows] = e._queues.time_ahead_s(wait[rows], rows)
    assert e.waits.tobytes() == wait.tobytes()
    assert e._waits()[1].tobytes() == ahead.tobytes()
    assert e._rterms[BUSY_ROW].tobytes() == busy_term(counts, sc).tobytes()
    assert e._rsum.tobytes() == e._rterms.sum(axis=0).tobytes()


def test_a_noted_decision_moves_the_busy_term_sums_and_waits_as_recomputing_its_backend_does(monkeypatch):
    """note_routed writes one replica's busy term, replica sum and (while its backend's queue
    stays) wait as Python floats: bit for bit what the busy term over the array, the table's
    column sum and its backend's recomputation give."""
    recomputed = _count_backend_recomputes(monkeypatch)
    rng = np.random.default_rng(3)
    notes = 0
    for _ in range(30):
        e = _random_fleet(rng)
        wait, ahead = (a.copy() for a in e._waits())
        favourites = rng.choice(e.replicas.size, size=4)  # decisions pile up on a few replicas
        for _ in range(40):
            j = int(favourites[rng.integers(0, 4)] if rng.random() < 0.7 else rng.integers(0, e.replicas.size))
            e.note_routed(e.replicas.backend[j], e.replicas.upstream[j])
            notes += 1
            _assert_moved_as_recomputed(e, [j], wait, ahead)
    assert 0.05 * notes < recomputed[0] < 0.5 * notes  # both ways taken: one row, and a backend's rows


def test_a_noted_decision_whose_time_is_over_moves_the_terms_back_as_recomputing_its_backend_does(monkeypatch):
    """Notes of random expected times on random fleets, then taken out one at a time as their
    time comes (a decision runs ``_expire_notes`` first): each moves its replica's busy term,
    replica sum and its backend's waits bit for bit as recomputing them from the counts does, and
    when the last is out the counts are the read's again."""
    recomputed = _count_backend_recomputes(monkeypatch)
    rng = np.random.default_rng(5)
    expired = 0
    for _ in range(20):
        e = _random_fleet(rng)
        clock = Clock()
        e.clock = clock
        e.set_load(e.fleet.inflight)
        read = e.replicas.inflight.copy()
        for _ in range(30):
            j = int(rng.integers(0, e.replicas.size))
            req = RouteRequestV1(text="hi", max_tokens=int(rng.integers(1, 400)))
            e.note_routed(e.replicas.backend[j], e.replicas.upstream[j], req)
            clock.t += float(rng.uniform(0.0, 0.01))
        wait, ahead = (a.copy() for a in e._waits())
        while len(e._notes):
            expired += 1
            clock.t = e._notes.next_expiry()
            before = e.replicas.inflight.copy()
            e._expire_notes()
            moved = np.flatnonzero(e.replicas.inflight != before)
            assert (e.replicas.inflight[moved] < before[moved]).all()
            _assert_moved_as_recomputed(e, moved.tolist(), wait, ahead)
        assert e.replicas.inflight.tobytes() == read.tobytes()
    # both ways taken: one row, and a backend's rows (mostly the latter here: the notes were spread
    # at random, so an expiry often leaves the least busy loaded replica less busy)
    assert 0.05 * expired < recomputed[0] < 0.95 * expired


def _queued_fleet(queue_aware: bool = True, inflight: bool = True) -> RoutingEngine:
    """m0 loaded on backends ``a`` and ``b``. ``a`` (one GPU: three models at most) holds m0, m1
    and m2, all serving, and a request for m3 waits there for a load that must first unload one
    of them: everything on ``a`` waits behind it until m0 (the least busy: 1 × 256 tokens at 64
    tokens/s) drains. On ``b`` m0 serves 3 requests, within its 4 slots: no wait, but busier."""
    counts = {("a", "m0"): 1, ("a", "m1"): 5, ("a", "m2"): 6, ("a", "m3"): 1, ("b", "m0"): 3}
    return _two_backends(counts if inflight else {}, b_loaded=1, b_used_gib=12, queue_aware=queue_aware)


def _two_backends(
    counts: dict[tuple[str, str], int], *, b_loaded: int, b_used_gib: int, queue_aware: bool = True
) -> RoutingEngine:
    """m0..m3 (8B, 4 GiB, 64 tokens/s) on backends ``a`` and ``b`` (one 80 GiB GPU each, so three
    models at most), and a fast 1B ``s`` on ``b``; ``a`` holds m0, m1 and m2, ``b`` the first
    ``b_loaded`` of them, ``b_used_gib`` of its memory used; ``counts`` the requests in flight."""
    from dataclasses import replace

    from turnout.common.schemas.fleet import GpuStateV1, HostStateV1, LoadedModelV1
    from turnout.scorer.engine import EngineConfig

    gib = 2**30
    cfg = EngineConfig()
    e = RoutingEngine(cfg=replace(cfg, scoring=replace(cfg.scoring, queue_aware=queue_aware)))
    models = [
        CatalogModelV1(
            name=f"m{i}",
            params_b=8,
            tokens_per_s=64.0,
            vram_bytes=4 * gib,
            replicas=[ReplicaV1(backend=b, upstream_model=f"m{i}", host=b) for b in "ab"],
        )
        for i in range(4)
    ]
    models.append(  # a faster model gives the speed term its span of seconds
        CatalogModelV1(
            name="s", params_b=1, tokens_per_s=400.0, replicas=[ReplicaV1(backend="b", upstream_model="s", host="b")]
        )
    )
    e.set_catalog(CatalogSnapshotV1(version="q2", models=models))

    def gpu(used_gib: int) -> GpuStateV1:
        used = used_gib * gib
        return GpuStateV1(
            index=0, memory_total_bytes=80 * gib, memory_used_bytes=used, memory_free_bytes=80 * gib - used
        )

    loaded = [LoadedModelV1(name=f"m{i}", size_bytes=4 * gib, vram_bytes=4 * gib) for i in range(3)]
    states = [
        HostStateV1(host="a", backend="a", gpus=[gpu(12)], loaded_models=loaded, ts=0.0),
        HostStateV1(host="b", backend="b", gpus=[gpu(b_used_gib)], loaded_models=loaded[:b_loaded], ts=0.0),
    ]
    e.set_fleet(FleetState.from_hosts(states, counts))
    return e


NAMED = RouteRequestV1(text="Write a haiku about Oslo.", requested_model="m0", quality=0.5)


async def test_a_named_model_goes_to_the_replica_whose_host_queue_is_not_held_up_behind_a_load():
    e = _queued_fleet()
    a0, b0 = (CandidateV1(model="m0", backend=b, upstream_model="m0", score=0.0) for b in "ab")
    assert e.expected_waits([a0, b0]) == [256 / 64, 0.0]
    ranking = e.decide(NAMED, limit=10)
    assert [c.backend for c in ranking.candidates] == ["b", "a"]  # a is less busy, but its queue is held
    first, second = ranking.candidates
    assert second.terms["wait"] < 0 and "wait" not in first.terms
    assert any("queued ahead on a" in r for r in second.reasons)
    # as a ranked request orders m0's replicas: the same wait term, to the digit
    auto = {
        c.backend: c
        for c in e.decide(NAMED.model_copy(update={"requested_model": None}), limit=100).candidates
        if c.model == "m0"
    }
    assert second.terms["wait"] == auto["a"].terms["wait"]
    assert (await e.route(NAMED)).candidates[0].backend == "b"


def test_a_named_model_with_nothing_in_flight_or_queue_aware_off_keeps_the_replica_terms_order():
    idle = _queued_fleet(inflight=False).decide(NAMED, limit=10)
    idle_off = _queued_fleet(queue_aware=False, inflight=False).decide(NAMED, limit=10)
    assert [c.backend for c in idle.candidates] == ["a", "b"]  # equal replica terms: catalog order
    assert [(c.backend, c.score, c.terms) for c in idle.candidates] == [
        (c.backend, c.score, c.terms) for c in idle_off.candidates
    ]
    assert all("wait" not in c.terms for c in idle.candidates)
    off = _queued_fleet(queue_aware=False).decide(NAMED, limit=10)
    assert [c.backend for c in off.candidates] == ["a", "b"]  # the less busy one, the queue not seen
    assert all("wait" not in c.terms for c in off.candidates)


def test_a_cached_reply_takes_a_models_replicas_in_the_order_of_their_host_queues_now():
    cached = RouteReplyV1(
        candidates=[
            CandidateV1(model="m0", backend="a", upstream_model="m0", score=1.0),
            CandidateV1(model="s", backend="b", upstream_model="s", score=0.9),
            CandidateV1(model="m0", backend="b", upstream_model="m0", score=0.8),
        ]
    )
    e = _queued_fleet()
    now = e.replicas_now(cached, NAMED, 8)
    assert [(c.model, c.backend) for c in now.candidates] == [("m0", "b"), ("s", "b"), ("m0", "a")]
    assert e.replicas_now(cached) is cached  # no request to weigh the wait for: the replica terms alone
    assert _queued_fleet(queue_aware=False).replicas_now(cached, NAMED, 8) is cached
    assert _queued_fleet(inflight=False).replicas_now(cached, NAMED, 8) is cached


async def test_the_speed_term_times_the_reply_a_request_asks_for():
    """Two models alike but for speed: ``quick`` answers its first token in 50 ms and then
    decodes 40 tokens/s, ``steady`` takes 600 ms and then 400 tokens/s. An average reply (256
    tokens) takes 6.45 s on ``quick`` and 1.24 s on ``steady``; the 8 tokens a classification call
    asks for take 0.25 s and 0.62 s. Asking for the fastest, a request without ``max_tokens`` (or
    with more than the average) goes to ``steady``, one with ``max_tokens: 8`` to ``quick``, and
    the scorer's note counts that request for its own short reply."""
    e = RoutingEngine()
    e.set_catalog(
        CatalogSnapshotV1(
            version="speeds",
            models=[
                CatalogModelV1(
                    name=name,
                    params_b=8,
                    ttft_ms=ttft,
                    tokens_per_s=tps,
                    replicas=[ReplicaV1(backend=name, upstream_model=name)],
                )
                for name, ttft, tps in (("quick", 50.0, 40.0), ("steady", 600.0, 400.0))
            ],
        )
    )
    e.set_fleet(FleetState(resident=frozenset({("quick", "quick"), ("steady", "steady")})))

    async def first(max_tokens: int | None) -> str:
        return (
            (await e.route(RouteRequestV1(text="is this spam?", quality=0.0, max_tokens=max_tokens)))
            .candidates[0]
            .model
        )

    assert [await first(m) for m in (None, 4096, 256, 8, 1)] == ["steady", "steady", "steady", "quick", "quick"]
    e.note_routed("quick", "quick", RouteRequestV1(text="is this spam?", max_tokens=8))
    j = e._row_of[("quick", "quick")]
    assert e._expected_time_s(j, RouteRequestV1(text="is this spam?", max_tokens=8)) == pytest.approx(
        0.05 + 8 / 40, abs=0.01
    )


async def test_a_new_catalog_drops_the_kept_model_term_rows():
    """A memo hit reuses the prompt's model-term rows (``terms.PromptRows``); a new catalog table
    drops them all, so that none holds the old table alive."""
    e = _two_replicas(Clock())
    req = RouteRequestV1(text="hello")
    first = await e.route(req)
    assert len(e._kept) == 1 and await e.route(req) == first
    e.set_catalog(e._snapshot)
    assert len(e._kept) == 0
    assert (await e.route(req)).candidates[0].model == first.candidates[0].model
    assert len(e._kept) == 1


def test_a_read_computes_the_waits_so_that_the_next_decision_does_not(monkeypatch):
    """The whole table's waits are computed when a read (or a new fleet state) comes, not by the
    first decision after it; they are the waits of the counts read, and a decision then reads
    them as they are (plus its own note)."""
    from turnout.scorer.terms import expected_wait_s

    calls = _count_calls(monkeypatch, "expected_wait_s")
    e = _random_fleet(np.random.default_rng(7))
    calls[0] = 0
    e.set_load({(b, u): j % 3 for j, (b, u) in enumerate(zip(e.replicas.backend, e.replicas.upstream, strict=True))})
    assert calls[0] == 1
    now = expected_wait_s(e.replicas, e.cfg.scoring, e._queues)
    assert e.waits.tobytes() == now.tobytes()
    ranking = e.decide(RouteRequestV1(text="hello"))
    e.note_routed(ranking.candidates[0].backend, ranking.candidates[0].upstream_model)
    assert calls[0] == 1  # the decision and its note read the waits; only the note's backend moved
    e.set_fleet(e.fleet)
    assert calls[0] == 2
