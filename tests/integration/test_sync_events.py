"""The event consumer: request and feedback events from the Redis streams into Postgres,
idempotently, with malformed events dead-lettered and stale pending ones claimed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asyncpg.exceptions import InternalClientError
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, InternalError

from turnout.common.arq import CTX_KEY
from turnout.common.arq_running import close_worker
from turnout.common.db.models import DeadLetter, Feedback, RoutingDecision
from turnout.common.db.session import engine_scope, make_sessionmaker
from turnout.common.schemas.events import EVENT_FIELD, AttemptV1, FeedbackEventV1, RequestEventV1
from turnout.common.schemas.route import CandidateV1, PromptAnalysisV1
from turnout.sync.events import EventConsumer, rejected_by_postgres
from turnout.sync.settings import SyncSettings
from turnout.sync.worker import SyncContext, build_context, build_worker

pytestmark = pytest.mark.integration

TS = 1763840000.25


def settings_for(redis_url: str, db: str, key_prefix: str, **sync: Any) -> SyncSettings:
    return SyncSettings.load(
        environment="test",
        redis_url=redis_url,
        database_url=db,
        key_prefix=key_prefix,
        backends=[],
        sync={"benchmarks_on_schedule": False, "benchmarks_at_startup": False, "block_ms": 50, **sync},
    )


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def wctx(redis_url, db, key_prefix, registry) -> AsyncIterator[SyncContext]:
    redis = Redis.from_url(redis_url)
    ctx = await build_context(settings_for(redis_url, db, key_prefix), redis, registry=registry)
    try:
        yield ctx
    finally:
        await ctx.exit_stack.aclose()
        await redis.aclose()


def request_event(request_id: str = "req-1", response_id: str | None = "chatcmpl-1", **kw: Any) -> RequestEventV1:
    return RequestEventV1(
        request_id=request_id,
        response_id=response_id,
        ts=TS,
        requested_model=None,
        model="llama3.1:8b",
        backend="gpu1",
        status=200,
        stream=True,
        latency_ms=812.5,
        ttft_ms=95.0,
        route_ms=1.2,
        prompt_tokens=31,
        completion_tokens=120,
        analysis=PromptAnalysisV1(category="general", complexity=0.1, level="simple", signals=["greeting"]),
        candidates=[CandidateV1(model="llama3.1:8b", backend="gpu1", upstream_model="llama3.1:8b", score=0.5)],
        attempts=[AttemptV1(model="llama3.1:8b", backend="gpu1", outcome="ok", latency_ms=800.0)],
        **kw,
    )


async def publish(redis: Redis, stream: str, *events: RequestEventV1 | FeedbackEventV1) -> None:
    for ev in events:
        await redis.xadd(stream, {EVENT_FIELD: ev.model_dump_json()})


async def table(db: str, model: type[Any]) -> list[Any]:
    async with engine_scope(db) as engine, make_sessionmaker(engine)() as session:
        return list((await session.execute(select(model).order_by(model.id))).scalars())


async def drain(consumer: EventConsumer, redis_url: str) -> int:
    conn = Redis.from_url(redis_url)
    try:
        await consumer.ensure_groups(conn)
        return await consumer.drain(conn)
    finally:
        await conn.aclose()


async def pending(redis: Redis, stream: str, group: str) -> int:
    return int((await redis.xpending(stream, group))["pending"])


async def test_request_and_feedback_events_are_stored_once(wctx, db, redis_url, redis, keys, registry):
    consumer = wctx.consumer
    await publish(redis, keys.request_events, request_event())
    await publish(
        redis,
        keys.feedback_events,
        FeedbackEventV1(response_id="chatcmpl-1", score=1.0, comment="great", client="key:a", ts=TS + 5),
        FeedbackEventV1(response_id="chatcmpl-unknown", score=-1.0, ts=TS + 6),
        FeedbackEventV1(response_id="chatcmpl-1", score=-1.0, client="paired-sampling", ts=TS + 7, model="qwen2.5:72b"),
    )
    assert await drain(consumer, redis_url) == 4

    [decision] = await table(db, RoutingDecision)
    assert (decision.request_id, decision.response_id, decision.model, decision.backend, decision.kind) == (
        "req-1",
        "chatcmpl-1",
        "llama3.1:8b",
        "gpu1",
        "chat",
    )
    assert (decision.status, decision.outcome, decision.route_source, decision.stream) == (200, "ok", "scorer", True)
    assert (decision.latency_ms, decision.ttft_ms, decision.prompt_tokens, decision.completion_tokens) == (
        812.5,
        95.0,
        31,
        120,
    )
    assert decision.requested_at.timestamp() == TS
    assert decision.analysis == {
        "category": "general",
        "complexity": 0.1,
        "level": "simple",
        "signals": ["greeting"],
        "embedding": None,
    }
    assert [c["model"] for c in decision.candidates] == ["llama3.1:8b"]
    assert decision.attempts == [{"model": "llama3.1:8b", "backend": "gpu1", "outcome": "ok", "latency_ms": 800.0}]
    feedback = await table(db, Feedback)
    assert [(f.response_id, f.model, f.score, f.comment, f.client) for f in feedback] == [
        ("chatcmpl-1", "llama3.1:8b", 1.0, "great", "key:a"),
        ("chatcmpl-unknown", None, -1.0, None, None),
        ("chatcmpl-1", "qwen2.5:72b", -1.0, None, "paired-sampling"),  # the event names the judged model
    ]

    # the same events delivered again (a crash between commit and XACK): nothing new
    await publish(redis, keys.request_events, request_event())
    await publish(redis, keys.feedback_events, FeedbackEventV1(response_id="chatcmpl-1", score=1.0, ts=TS + 5))
    assert await drain(consumer, redis_url) == 2
    assert len(await table(db, RoutingDecision)) == 1
    assert len(await table(db, Feedback)) == 3
    for stream in (keys.request_events, keys.feedback_events):
        assert await pending(redis, stream, consumer.group) == 0
    reg = registry
    assert reg.get_sample_value("turnout_sync_events_stored_total", {"stream": "requests"}) == 1
    assert reg.get_sample_value("turnout_sync_events_stored_total", {"stream": "feedback"}) == 3
    assert reg.get_sample_value("turnout_sync_events_skipped_total", {"stream": "requests", "reason": "duplicate"}) == 1


async def test_malformed_events_go_to_dead_letters_and_are_acknowledged(wctx, db, redis_url, redis, keys):
    consumer = wctx.consumer
    await redis.xadd(keys.request_events, {EVENT_FIELD: b"{not json"})
    await redis.xadd(keys.request_events, {"something": "else", "and": "more"})
    await redis.xadd(keys.feedback_events, {EVENT_FIELD: b'{"response_id": "x", "score": 5, "ts": 1}'})
    await publish(redis, keys.request_events, request_event("req-ok"), request_event("r" * 200))
    assert await drain(consumer, redis_url) == 5

    assert [d.request_id for d in await table(db, RoutingDecision)] == ["req-ok"]
    dead = await table(db, DeadLetter)
    assert sorted((d.queue, d.job) for d in dead) == [
        (keys.feedback_events, "feedback_event"),
        (keys.request_events, "request_event"),
        (keys.request_events, "request_event"),
        (keys.request_events, "request_event"),
    ]
    errors = {d.payload["data"]: d.error for d in dead}
    assert errors["{not json"].startswith("invalid event: 1 error(s)")
    assert errors[None] == "no 'data' field; fields: ['and', 'something']"
    assert "rejected by Postgres" in next(e for raw, e in errors.items() if raw and "r" * 200 in raw)
    for stream in (keys.request_events, keys.feedback_events):
        assert await pending(redis, stream, consumer.group) == 0


async def test_events_a_dead_consumer_left_pending_are_claimed(wctx, db, redis_url, redis, keys):
    await publish(redis, keys.request_events, request_event("req-a"), request_event("req-b"))
    consumer = wctx.consumer
    conn = Redis.from_url(redis_url)
    try:
        await consumer.ensure_groups(conn)
        taken = await conn.xreadgroup(consumer.group, "crashed-worker", {keys.request_events: ">"}, count=10)
        assert len(taken[0][1]) == 2  # read, never acknowledged
        assert await consumer.drain(conn) == 0  # not ours (yet)
        await asyncio.sleep(0.05)
        survivor = EventConsumer(
            redis_url=redis_url,
            keys=keys,
            sessionmaker=wctx.sessionmaker,
            metrics=wctx.metrics,
            group=consumer.group,
            consumer="survivor",
            claim_idle_s=0.01,
        )
        assert await survivor.claim_stale(conn) == 2
        assert await survivor.drain(conn) == 2
    finally:
        await conn.aclose()
    assert sorted(d.request_id for d in await table(db, RoutingDecision)) == ["req-a", "req-b"]
    assert await pending(redis, keys.request_events, consumer.group) == 0


async def test_the_worker_runs_the_consumer_from_startup_to_shutdown(redis_url, db, key_prefix, redis, keys):
    settings = settings_for(redis_url, db, key_prefix, consume_events=True)
    worker = build_worker(settings, registry=CollectorRegistry(), poll_delay=0.05)
    task = asyncio.create_task(worker.async_run())
    try:
        await publish(redis, keys.request_events, request_event("req-live"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not await table(db, RoutingDecision):
            await asyncio.sleep(0.05)
        assert [d.request_id for d in await table(db, RoutingDecision)] == ["req-live"]
        wctx = worker.ctx[CTX_KEY]
        assert isinstance(wctx, SyncContext) and wctx.consumer.running
    finally:
        await close_worker(worker)
        await asyncio.gather(task, return_exceptions=True)
    assert wctx.consumer_task is not None and wctx.consumer_task.done()


async def test_only_what_postgres_itself_rejected_is_taken_apart_not_a_lost_connection(db):
    # a batch is stored event by event (and the ones Postgres refuses dead-lettered) only when
    # Postgres rejected it; a connection lost under it is retried whole (issue 13: during a
    # Postgres outage, asyncpg's "cannot switch to state …; another operation is in progress"
    # was taken for a rejection)
    async with engine_scope(db) as engine, make_sessionmaker(engine)() as session:
        with pytest.raises(DBAPIError) as refused:
            await session.execute(text("INSERT INTO routing_decisions (request_id) VALUES (NULL)"))
        await session.rollback()
        pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        async with engine_scope(db) as other, other.connect() as admin:
            await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(DBAPIError) as terminated:
            await session.execute(text("SELECT 1"))
    assert rejected_by_postgres(refused.value)  # 23502: a NOT NULL column
    assert not rejected_by_postgres(terminated.value)
    # what the consumer logged during the outage, as asyncpg raised it (no SQLSTATE: client-side)
    lost = InternalClientError("cannot switch to state 15; another operation (2) is in progress")
    assert not rejected_by_postgres(InternalError("INSERT INTO routing_decisions …", None, lost))
