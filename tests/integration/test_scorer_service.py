"""The scorer service in-process against real Redis and Postgres: it answers real RPC calls from
the catalog in Postgres, publishes the snapshot, follows catalog and fleet changes, and serves
its ops endpoints."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from sqlalchemy import select, update

from tests.conftest import migrated_database
from turnout.common.backends.names import parse_model_name
from turnout.common.catalog import derive_capabilities
from turnout.common.db.models import Backend, Benchmark, Deployment, Model
from turnout.common.db.session import engine_scope, make_sessionmaker
from turnout.common.keys import Keys
from turnout.common.rpc import EXPLAIN_V1, ROUTE_V1, RpcClient
from turnout.common.rpc.server import RpcContext
from turnout.common.schemas.catalog import CatalogSnapshotV1
from turnout.common.schemas.fleet import HostStateV1, LoadedModelV1
from turnout.common.schemas.route import RequestKind, RouteReplyV1, RouteRequestV1
from turnout.devstack.infra import free_port
from turnout.scorer.app import Running, running_scorer
from turnout.scorer.settings import ScorerSettings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def scorer_db(pg_admin_url: str) -> Iterator[str]:
    """A database of this module's own: its code reads whole tables."""
    with migrated_database(pg_admin_url, "scorer") as url:
        yield url


async def add_models(
    database_url: str, models: dict[str, list[str]], *, kinds: dict[str, str] | None = None, **fields: object
) -> None:
    """models: name -> backends it is deployed on (created as needed, Ollama unless ``kinds`` says otherwise)."""
    async with engine_scope(database_url) as engine:
        async with make_sessionmaker(engine)() as session, session.begin():
            existing = await session.execute(select(Backend))
            backends: dict[str, Backend] = {b.name: b for b in existing.scalars()}
            for name, on in models.items():
                info = parse_model_name(name)
                m = Model(
                    name=name,
                    family=info.family,
                    params_b=info.params_b,
                    active_params_b=info.active_params_b,
                    capabilities=derive_capabilities(name).model_dump(),
                    details={"coder": info.coder},
                    **fields,
                )
                session.add(m)
                for b in on:
                    if b not in backends:
                        backends[b] = Backend(name=b, kind=(kinds or {}).get(b, "ollama"), url=f"http://{b}:11434")
                        session.add(backends[b])
                    session.add(Deployment(model=m, backend=backends[b], upstream_name=name))


async def wait_for(check: Callable[[], Awaitable[bool]], *, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@asynccontextmanager
async def scorer_on(
    redis_url: str, database_url: str, key_prefix: str
) -> AsyncIterator[tuple[Running, ScorerSettings]]:
    """The scorer service running in-process on this Redis and database, its RPC server connected."""
    settings = ScorerSettings.load(
        environment="test",
        redis_url=redis_url,
        database_url=database_url,
        key_prefix=key_prefix,
        backends=[],
        scorer={"ops_host": "127.0.0.1", "ops_port": free_port(), "catalog_refresh_s": 60, "fleet_poll_s": 60},
    )
    async with running_scorer(settings, registry=CollectorRegistry(), rid="scorer-test") as running:
        await wait_for(lambda: _true(running.server.connected), what="the RPC server")
        yield running, settings


@pytest.fixture
async def scorer(redis_url: str, scorer_db: str, key_prefix: str) -> AsyncIterator[tuple[Running, ScorerSettings]]:
    async with scorer_on(redis_url, scorer_db, key_prefix) as running:
        yield running


async def _true(v: bool) -> bool:
    return v


@pytest.fixture
async def rpc(redis_url: str, keys: Keys) -> AsyncIterator[RpcClient]:
    client = RpcClient(redis_url, keys, registry=CollectorRegistry())
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def call(rpc: RpcClient, **req: object) -> RouteReplyV1:
    return await rpc.call(ROUTE_V1, RouteRequestV1.model_validate(req), timeout=2.0)


@pytest.fixture(scope="module")
def seeded(scorer_db: str) -> str:
    asyncio.run(
        add_models(
            scorer_db,
            {"llama3.2:1b": ["gpu1", "gpu2"], "qwen2.5-coder:32b": ["gpu1"], "llava:7b": ["gpu2"], "bge-m3": ["gpu1"]},
        )
    )
    return scorer_db


async def test_the_scorer_answers_a_real_rpc_call_from_the_catalog_in_postgres(seeded, scorer, rpc):
    # a low quality preference: the 1B with its two replicas first (the default, 0.65, takes the 7B)
    reply = await call(rpc, text="Hi there!", quality=0.3)
    assert [c.model for c in reply.candidates] == ["llama3.2:1b", "llama3.2:1b", "llava:7b", "qwen2.5-coder:32b"]
    assert {c.backend for c in reply.candidates[:2]} == {"gpu1", "gpu2"}
    assert reply.candidates[0].reasons[0].startswith("simple general prompt")

    vision = await call(rpc, text="What is in this picture?", has_images=True)
    assert [(c.model, c.backend) for c in vision.candidates] == [("llava:7b", "gpu2")]

    embed = await call(rpc, kind="embedding", text="embed me")
    assert [c.model for c in embed.candidates] == ["bge-m3"]

    missing = await call(rpc, text="hi", requested_model="nope:1b")
    assert (missing.unservable, missing.unservable_code) == ("model 'nope:1b' not found", "model_not_found")

    # no GPU host known: the VRAM planner has nothing to do, and the handler answers with the
    # reply's JSON encoded straight from the ranking (no model built), a valid reply
    running, _ = scorer
    ctx = RpcContext(call_id="c1", request_id=None, deadline=time.monotonic() + 2.0)
    direct = await running.scorer.route(RouteRequestV1(text="What is in this picture?", has_images=True), ctx)
    assert isinstance(direct, bytes)
    assert RouteReplyV1.model_validate_json(direct).model_dump_json().encode() == direct
    assert [(c.model, c.backend) for c in RouteReplyV1.model_validate_json(direct).candidates] == [("llava:7b", "gpu2")]
    # a decision the planner looks at (one that knows no host: it routes as ranked, and says so)
    # is reworked on the plain values and goes out as direct bytes too, never as a model
    assert running.scorer.vram is not None
    running.scorer.vram.would_decide = lambda candidates: candidates > 0  # type: ignore[method-assign]
    planned = await running.scorer.route(RouteRequestV1(text="What is in this picture?", has_images=True), ctx)
    assert isinstance(planned, bytes)
    reply = RouteReplyV1.model_validate_json(planned)
    assert reply.model_dump_json().encode() == planned
    assert [(c.model, c.backend) for c in reply.candidates] == [("llava:7b", "gpu2")]
    assert reply.candidates[0].reasons[-1].startswith("vram: ")


async def test_the_loaded_catalog_is_published_as_a_snapshot_for_gateways(seeded, scorer, rpc, redis: Redis, keys):
    reply = await call(rpc, text="hello")
    snap = CatalogSnapshotV1.model_validate(orjson.loads(await redis.get(keys.catalog_snapshot)))
    assert snap.version == reply.catalog_version != ""
    assert [m.name for m in snap.models] == ["bge-m3", "llama3.2:1b", "llava:7b", "qwen2.5-coder:32b"]
    llama = next(m for m in snap.models if m.name == "llama3.2:1b")
    assert [(r.backend, r.upstream_model) for r in llama.replicas] == [("gpu1", "llama3.2:1b"), ("gpu2", "llama3.2:1b")]
    assert next(m for m in snap.models if m.name == "qwen2.5-coder:32b").coder


async def test_the_scorer_reloads_on_catalog_changed(seeded, scorer, rpc, redis: Redis, keys):
    running, _ = scorer
    assert (await call(rpc, text="hi", requested_model="phi3:3.8b")).unservable_code == "model_not_found"
    await add_models(seeded, {"phi3:3.8b": ["gpu1"]})
    async with engine_scope(seeded) as engine, make_sessionmaker(engine)() as session, session.begin():
        model_id = (await session.execute(select(Model.id).where(Model.name == "phi3:3.8b"))).scalar_one()
        session.add(Benchmark(source="t", metric="mmlu", raw_model="phi3", model_id=model_id, raw_value=0.7, score=0.7))
    before = running.scorer.reloads
    await redis.publish(keys.catalog_changed, b"{}")

    async def reloaded() -> bool:
        reply = await call(rpc, text="hi", requested_model="phi3:3.8b")
        return bool(reply.candidates)

    await wait_for(reloaded, what="the new model to be routable")
    assert running.scorer.reloads > before
    reply = await call(rpc, text="hi", requested_model="phi3:3.8b")
    assert "benchmark 0.70" in reply.candidates[0].reasons

    async with engine_scope(seeded) as engine, make_sessionmaker(engine)() as session, session.begin():
        await session.execute(update(Model).where(Model.name == "phi3:3.8b").values(active=False))
    await redis.publish(keys.catalog_changed, b"{}")

    async def gone() -> bool:
        return (await call(rpc, text="hi", requested_model="phi3:3.8b")).unservable_code == "model_not_found"

    await wait_for(gone, what="the deactivated model to disappear")


async def test_fleet_state_from_the_gpu_agents_moves_the_resident_replica_first(seeded, scorer, rpc, redis, keys):
    before = await call(rpc, text="Hi there!", quality=0.3)  # the 1B, on both replicas
    assert [c.backend for c in before.candidates[:2]] == ["gpu1", "gpu2"]
    state = HostStateV1(
        host="host-b", backend="gpu2", loaded_models=[LoadedModelV1(name="llama3.2:1b")], ts=time.time()
    )
    await redis.set(keys.fleet_host("host-b"), state.model_dump_json(), ex=30)
    await redis.zadd(keys.fleet_hosts, {"host-b": time.time()})
    await redis.publish(keys.fleet_changed, b"host-b")

    async def resident_first() -> bool:
        reply = await call(rpc, text="Hi there!", quality=0.3)
        # the reason, not the order alone: a tie with gpu1 can put gpu2 first before the fleet is read
        return reply.candidates[0].backend == "gpu2" and "loaded on gpu2" in reply.candidates[0].reasons

    await wait_for(resident_first, what="the resident replica to rank first")
    reply = await call(rpc, text="Hi there!", quality=0.3)
    assert "loaded on gpu2" in reply.candidates[0].reasons


async def test_ops_endpoints_report_readiness_and_scorer_metrics(seeded, scorer, rpc):
    _, settings = scorer
    await call(rpc, text="Hi there!")
    base = f"http://127.0.0.1:{settings.scorer.ops_port}"
    async with httpx.AsyncClient(base_url=base, timeout=5) as http:
        ready = await http.get("/ready")
        assert ready.status_code == 200
        fine = {"running": True, "restarts": 0, "last_error": None}
        tasks = ("catalog-loop", "fleet-loop", "catalog-listener", "rules-watch", "rpc-server")
        body = ready.json()
        assert (body["status"], body["checks"]) == ("ok", {"redis": True, "catalog": True, "rpc": True})
        assert set(tasks) <= set(body["tasks"])  # (+ learned-loop, vram-refresh when those are on)
        assert all(state == fine for state in body["tasks"].values()), body["tasks"]
        assert (await http.get("/health")).json() == {"status": "ok", "service": "scorer"}
        metrics = (await http.get("/metrics")).text
    assert 'turnout_scorer_decisions_total{category="general"} 1.0' in metrics
    assert "turnout_scorer_catalog_models 4.0" in metrics
    assert 'turnout_scorer_catalog_reloads_total{outcome="ok"}' in metrics
    # what the scorer counts in flight: the gateways' counts as read (none here) and its own decisions
    assert "turnout_scorer_inflight_read 0.0" in metrics
    assert re.search(r"^turnout_scorer_inflight_noted [01]\.0$", metrics, re.M), metrics


async def test_models_the_rules_block_are_published_as_hidden(
    seeded, redis_url, key_prefix, redis: Redis, keys, tmp_path
):
    rules = tmp_path / "rules.yaml"
    rules.write_text('block: ["qwen*"]\n')
    settings = ScorerSettings.load(
        environment="test",
        redis_url=redis_url,
        database_url=seeded,
        key_prefix=key_prefix,
        backends=[],
        scorer={
            "ops_host": "127.0.0.1",
            "ops_port": free_port(),
            "catalog_refresh_s": 60,
            "fleet_poll_s": 60,
            "routing": {"rules_file": str(rules)},
        },
    )
    async with running_scorer(settings, registry=CollectorRegistry(), rid="scorer-hidden") as running:
        await wait_for(lambda: _true(running.server.connected), what="the RPC server")
        snap = CatalogSnapshotV1.model_validate(orjson.loads(await redis.get(keys.catalog_snapshot)))
        assert snap.hidden == ["qwen2.5-coder:32b"]
        rules.write_text('block: ["llava*"]\n')
        running.scorer.engine.rules.reload()
        await running.scorer.reload_catalog()
        snap = CatalogSnapshotV1.model_validate(orjson.loads(await redis.get(keys.catalog_snapshot)))
        assert snap.hidden == ["llava:7b"]


@pytest.fixture(scope="module")
def token_db(pg_admin_url: str) -> Iterator[str]:
    """Embedding models on an Ollama box and, for one of them, on an OpenAI-compatible server too."""
    with migrated_database(pg_admin_url, "scorertok") as url:
        asyncio.run(
            add_models(
                url,
                {"nomic-embed-text:latest": ["ollama-box"], "bge-m3": ["ollama-box", "vllm-box"]},
                kinds={"vllm-box": "openai"},
            )
        )
        yield url


async def test_token_id_embedding_input_goes_only_to_backends_that_accept_token_ids(
    token_db: str, redis_url: str, key_prefix: str, rpc: RpcClient
) -> None:
    """Ollama takes embedding input as text only: token ids go to an OpenAI-compatible replica,
    the rest is filtered with the reason in explain; a model served only by Ollama is refused
    with a reason a client can read."""
    async with scorer_on(redis_url, token_db, key_prefix):
        text = await call(rpc, kind="embedding", text="embed me")
        assert {(c.model, c.backend) for c in text.candidates} == {
            ("bge-m3", "ollama-box"),
            ("bge-m3", "vllm-box"),
            ("nomic-embed-text:latest", "ollama-box"),
        }
        tokens = await call(rpc, kind="embedding", token_input=True, est_prompt_tokens=3)
        assert [(c.model, c.backend) for c in tokens.candidates] == [("bge-m3", "vllm-box")]
        explained = await rpc.call(
            EXPLAIN_V1, RouteRequestV1(kind=RequestKind.EMBEDDING, token_input=True), timeout=2.0
        )
        assert explained.filtered["nomic-embed-text:latest"] == (
            "token-id input: served only by Ollama backends, which take text, not token ids"
        )
        assert [(c.model, c.backend) for c in explained.candidates] == [("bge-m3", "vllm-box")]
        assert "token-id input: bge-m3's replicas on ollama-box (Ollama: text only) left out" in (
            explained.candidates[0].reasons
        )
        named = await call(rpc, kind="embedding", token_input=True, requested_model="nomic-embed-text:latest")
        assert named.candidates == []
        assert named.unservable_code == "unservable"
        assert named.unservable is not None and named.unservable.startswith(
            "token-id input needs a backend that accepts token ids (an OpenAI-compatible server such as vLLM or "
            "llama.cpp)"
        )
        assert named.filtered == {
            "nomic-embed-text:latest": "token-id input: served only by Ollama backends, which take text, not token ids"
        }
