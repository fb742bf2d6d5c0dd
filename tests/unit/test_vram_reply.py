"""A reply the VRAM planner reworks goes out as JSON encoded straight from the ranking's plain
values (``Rework.on_fields``), byte for byte what the pydantic path gave (the reply validated,
then ``model_copy``'d by the planner, then ``model_dump_json``), and a valid ``RouteReplyV1``:
on random rankings and reworks, and through ``scorer.route`` itself with a planner that knows
GPU hosts, against a twin scorer taking the pydantic path."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import MappingProxyType

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import async_sessionmaker

from tests.unit.test_decision_equivalence import TEXTS, _snapshot, odd_name, odd_ranking
from turnout.common.keys import Keys
from turnout.common.rpc import RpcContext
from turnout.common.schemas.catalog import CatalogSnapshotV1
from turnout.common.schemas.fleet import GpuStateV1, HostStateV1, LoadedModelV1
from turnout.common.schemas.route import RouteReplyV1, RouteRequestV1
from turnout.embeddings.static import default_embedder
from turnout.scorer.app import Scorer
from turnout.scorer.engine import Answer, RoutingEngine
from turnout.scorer.fleet import FleetState
from turnout.scorer.learned import LearnedIndex
from turnout.scorer.metrics import ScorerMetrics
from turnout.scorer.settings import ScorerSettings
from turnout.scorer.vram import VramOptions, host_vram, measured_sizes
from turnout.scorer.vram_reply import Rework
from turnout.scorer.vram_routing import VramCoordinator, VramView

GiB = 1024**3


def _as_before(reply: RouteReplyV1, rework: Rework) -> RouteReplyV1:
    """The planner's changes made to the model as ``vram_routing`` made them before the rework
    was kept apart (``with_load_estimates``, then ``_reordered`` per re-ordering)."""
    if not all(c.load_s is None and c.wait_s is None for c in reply.candidates) or any(
        x is not None for x in (*rework.loads, *rework.waits)
    ):
        cands = [
            c if (c.load_s, c.wait_s) == (x, w) else c.model_copy(update={"load_s": x, "wait_s": w})
            for c, x, w in zip(reply.candidates, rework.loads, rework.waits, strict=True)
        ]
        reply = reply.model_copy(update={"candidates": cands})
    for order, reason in rework.steps:
        cands = [reply.candidates[i] for i in order]
        cands[0] = cands[0].model_copy(update={"reasons": [*cands[0].reasons, reason]})
        reply = reply.model_copy(update={"candidates": cands})
    return reply


def _random_rework(rng: np.random.Generator, n: int) -> Rework:
    def estimate() -> float | None:
        return None if rng.random() < 0.4 else round(float(rng.choice([0.0, 1.0, rng.uniform(0, 120)])), 2)

    rework = Rework(tuple(estimate() for _ in range(n)), tuple(estimate() for _ in range(n)))
    for _ in range(int(rng.integers(1, 4))):  # the decision's order, then a late room's fallback
        rework = rework.then([int(i) for i in rng.permutation(n)], f"vram: {odd_name(rng)}")
    return rework


@pytest.mark.parametrize("seed", range(30))
def test_a_reworked_reply_encoded_from_plain_values_is_the_pydantic_encoding_byte_for_byte(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    finite = seed % 3 != 0
    ranking = odd_ranking(rng, finite=finite)
    for max_candidates in (8, 1, 20):
        n = len(ranking.candidates[:max_candidates])
        if n == 0:
            continue
        embedding = odd_name(rng) if rng.random() < 0.5 else None
        untouched = ranking.reply_json(max_candidates, embedding, filtered=False)
        rework = _random_rework(rng, n)
        direct = orjson.dumps(rework.on_fields(ranking.reply_fields(max_candidates, embedding, filtered=False)))
        model = ranking.to_reply(max_candidates, embedding, filtered=False)
        expected = _as_before(model, rework).model_dump_json().encode()
        assert direct == expected
        assert rework.on_reply(model).model_dump_json().encode() == expected
        if finite:
            assert RouteReplyV1.model_validate_json(direct).model_dump_json().encode() == direct
        # the ranking's candidates are not changed by a rework of its reply
        assert ranking.reply_json(max_candidates, embedding, filtered=False) == untouched
        wire = RouteReplyV1.model_validate_json(direct) if finite else None
        if wire is not None:  # the order and the reasons as the rework says
            order = rework.order()
            assert [c.model for c in wire.candidates] == [ranking.candidates[i].model for i in order]
            assert [c.load_s for c in wire.candidates] == [rework.loads[i] for i in order]


def _host_states(snap: CatalogSnapshotV1) -> list[HostStateV1]:
    """Three hosts (one per backend of ``_snapshot``), a third of the models loaded, little room left."""
    loaded: dict[int, list[LoadedModelV1]] = {0: [], 1: [], 2: []}
    for m in snap.models[::3]:
        size = int((m.params_b or 7) * 0.6 * GiB)
        for r in m.replicas:
            loaded[int(r.backend[1:])].append(LoadedModelV1(name=m.name, size_bytes=size, vram_bytes=size))
    states = []
    for j, models in loaded.items():
        used = sum(m.vram_bytes for m in models)
        gpu = GpuStateV1(
            index=0, memory_total_bytes=used + 12 * GiB, memory_used_bytes=used, memory_free_bytes=12 * GiB
        )
        states.append(HostStateV1(host=f"h{j}", backend=f"b{j}", gpus=[gpu], loaded_models=models))
    return states


def _scorer(
    snap: CatalogSnapshotV1, states: list[HostStateV1], learned: LearnedIndex, clock: Callable[[], float]
) -> Scorer:
    emb = default_embedder()
    engine = RoutingEngine(embedder=emb, learned=learned, clock=clock)
    engine.set_catalog(snap)
    engine.set_fleet(FleetState.from_hosts(states))
    scorer = Scorer(
        ScorerSettings(),
        redis=Redis(),  # not called on the route path
        sessionmaker=async_sessionmaker(),
        metrics=ScorerMetrics.create(CollectorRegistry()),
        engine=engine,
    )
    coord = VramCoordinator(VramOptions(max_loaded_per_gpu=4), redis=scorer._redis, keys=Keys(), actions=None)
    coord.update_catalog(engine.table)
    hosts = {s.host: h for s in states if (h := host_vram(s, coord.cfg)) is not None}
    coord.view = VramView(
        hosts=MappingProxyType(hosts),
        backend_host=MappingProxyType({s.backend: s.host for s in states if s.backend}),
        measured=MappingProxyType(measured_sizes(states)),
        states=tuple(states),
    )
    scorer.vram = coord
    return scorer


async def test_scorer_route_sends_a_reply_the_planner_reworked_as_direct_bytes_equal_to_the_pydantic_path() -> None:
    """Two identical scorers whose planner knows three GPU hosts: one answers through
    ``scorer.route``, the twin takes the pydantic path (the decision's reply validated, reworked
    by ``VramCoordinator.route`` as a model, the first candidate noted in flight, then
    ``model_dump_json``). Same requests in the same order: same bytes, and every reworked reply
    leaves ``scorer.route`` as bytes (the handler before answered with the model)."""
    rng = np.random.default_rng(17)
    emb = default_embedder()
    learned = LearnedIndex(emb.dims)
    learned.add_batch(emb.encode(list(TEXTS)), ["m0", "m1", "m2"], rng.random((len(TEXTS), 3)))
    snap = _snapshot(rng, 30)
    states = _host_states(snap)
    now = [0.0]  # one clock for both, moved only when the counts arrive: the same notes end at the same decisions
    direct, twin = (_scorer(snap, states, learned, lambda: now[0]) for _ in range(2))
    assert direct.vram is not None and twin.vram is not None
    ctx = RpcContext(call_id="c", request_id=None, deadline=time.monotonic() + 60.0)
    reworked = 0
    for step in range(120):
        req = RouteRequestV1(
            text=f"{rng.choice(TEXTS)} {step % 40}",
            has_tools=bool(rng.random() < 0.3),
            quality=float(rng.choice([0.2, 0.5, 0.9])),
            requested_model=[None, None, "m3"][int(rng.integers(0, 3))],
        )
        sent = await direct.route(req, ctx)
        out = await twin.engine.route_answer(req)
        assert isinstance(out, Answer)
        reply = out.reply()
        waits = twin.engine.expected_waits(reply.candidates)
        reply = await twin.vram.route(reply, remaining_s=ctx.remaining, waits=waits)
        if reply.candidates:
            twin.engine.note_routed(reply.candidates[0].backend, reply.candidates[0].upstream_model, req)
        assert isinstance(sent, bytes)
        assert sent == reply.model_dump_json().encode()
        assert RouteReplyV1.model_validate_json(sent).model_dump_json().encode() == sent
        if reply.candidates and reply.candidates[0].reasons[-1].startswith("vram: "):
            reworked += 1
        if step % 30 == 29:  # the gateways' counts arrive a second later: the noted decisions are replaced
            now[0] += 1.0
            for s in (direct, twin):
                s.engine.set_load({})
    assert direct.vram.decisions == twin.vram.decisions
    assert reworked > 100, reworked
    kinds = set(direct.vram.decisions)
    assert "resident" in kinds and len(kinds) >= 4, direct.vram.decisions
