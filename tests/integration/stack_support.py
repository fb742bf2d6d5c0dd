"""A small real stack for the request-log, dashboard and CLI tests (no tests here): fake backends
speaking the real wire formats, a scorer stand-in on the real RPC, the gateway under uvicorn
with a database of its own, and the sync worker's event consumer to store what it publishes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from tests.integration.test_gateway_fakes import FakeBackend, RunningGateway, _until, run_gateway
from turnout.common.db.session import engine_scope, make_sessionmaker
from turnout.common.keys import Keys
from turnout.common.rpc import EXPLAIN_V1, ROUTE_V1, RpcContext, RpcServer
from turnout.common.schemas.explain import ExplainAnalysisV1, ExplainReplyV1
from turnout.common.schemas.route import CandidateV1, PromptAnalysisV1, RouteReplyV1, RouteRequestV1
from turnout.gateway.settings import GatewayOptions, GatewaySettings
from turnout.sync.events import EventConsumer
from turnout.sync.metrics import SyncMetrics

ADMIN_KEY = "admin-test-key-1"


def decide(req: RouteRequestV1) -> RouteReplyV1:
    """Code prompts to alpha, everything else to beta; the other one second."""
    code = "rust" in req.text.lower() or "def " in req.text
    first, second = ("alpha", "beta") if code else ("beta", "alpha")
    return RouteReplyV1(
        analysis=PromptAnalysisV1(
            category="code" if code else "general",
            complexity=0.72 if code else 0.05,
            level="hard" if code else "simple",
            signals=["code_keywords"] if code else ["greeting"],
        ),
        candidates=[
            CandidateV1(
                model=f"m-{first}",
                backend=first,
                upstream_model=f"m-{first}",
                score=0.91,
                reasons=[f"best {'code' if code else 'general'} quality 0.84", "resident on gpu0"],
                terms={"quality": 0.84, "speed": 0.4},
            ),
            CandidateV1(
                model=f"m-{second}",
                backend=second,
                upstream_model=f"m-{second}",
                score=0.52,
                reasons=["lower quality 0.41"],
                terms={"quality": 0.41, "speed": 0.9},
            ),
        ],
    )


def explain(req: RouteRequestV1) -> ExplainReplyV1:
    routed = decide(req)
    return ExplainReplyV1(
        analysis=ExplainAnalysisV1(**routed.analysis.model_dump()),
        quality=req.quality if req.quality is not None else 0.5,
        candidates=routed.candidates,
        filtered={"m-embed": "cannot chat"},
    )


@contextlib.asynccontextmanager
async def scorer_standin(redis_url: str, keys: Keys) -> AsyncIterator[list[RouteRequestV1]]:
    """The scorer's two methods on the real RPC, answered by :func:`decide`; yields what it saw."""
    seen: list[RouteRequestV1] = []
    server = RpcServer(redis_url, keys, replica_id="standin-scorer")

    async def route(req: RouteRequestV1, _: RpcContext) -> RouteReplyV1:
        seen.append(req)
        return decide(req)

    async def explain_(req: RouteRequestV1, _: RpcContext) -> ExplainReplyV1:
        seen.append(req)
        return explain(req)

    server.register(ROUTE_V1, route)
    server.register(EXPLAIN_V1, explain_)
    task = asyncio.create_task(server.serve())
    try:
        await _until(lambda: server.connected)
        yield seen
    finally:
        await server.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)


@dataclass
class Stack:
    gateway: RunningGateway
    alpha: FakeBackend
    beta: FakeBackend
    routed: list[RouteRequestV1]
    consumer: EventConsumer
    redis_url: str
    keys: Keys
    db: str

    @property
    def url(self) -> str:
        return self.gateway.url

    async def store_events(self) -> int:
        """What the sync worker does: the published events into Postgres, now."""
        conn = Redis.from_url(self.redis_url)
        try:
            await self.consumer.ensure_groups(conn)
            return await self.consumer.drain(conn)
        finally:
            await conn.aclose()


@contextlib.asynccontextmanager
async def running_stack(
    redis_url: str, db: str, key_prefix: str, *, admin_key: str | None = ADMIN_KEY, **gateway: Any
) -> AsyncIterator[Stack]:
    keys = Keys(key_prefix)
    alpha, beta = FakeBackend("alpha"), FakeBackend("beta")
    await alpha.start()
    await beta.start()
    opts = {"route_timeout_s": 1.0, "catalog_refresh_s": 0.05, "inflight_publish_s": 0.05, **gateway}
    settings = GatewaySettings.load(
        environment="test",
        redis_url=redis_url,
        database_url=db,
        key_prefix=key_prefix,
        admin_key=admin_key,
        backends=[{"name": b.name, "kind": b.kind, "url": b.url} for b in (alpha, beta)],
        gateway=GatewayOptions(**opts),
    )
    try:
        async with (
            scorer_standin(redis_url, keys) as routed,
            run_gateway(settings) as gw,
            engine_scope(db) as engine,
        ):
            consumer = EventConsumer(
                redis_url=redis_url,
                keys=keys,
                sessionmaker=make_sessionmaker(engine),
                metrics=SyncMetrics.create(CollectorRegistry()),
                group="test-sync",
                block_ms=10,
            )
            yield Stack(gw, alpha, beta, routed, consumer, redis_url, keys, db)
    finally:
        await alpha.stop()
        await beta.stop()
