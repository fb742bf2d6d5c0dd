"""A small real stack for the request-log, dashboard and CLI tests (no tests here): fake backends
speaking the real wire formats, a scorer stand-in on the real RPC, the gateway under uvicorn
with a database of its own, and the sync worker's event consumer to store what it publishes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from tests.integration.test_gateway_fakes import FakeBackend, FakeScorer, RunningGateway, run_gateway
from turnout.common.keys import Keys
from turnout.common.schemas.route import CandidateV1, PromptAnalysisV1, RouteReplyV1, RouteRequestV1
from turnout.common.db.session import engine_scope, make_sessionmaker
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


@dataclass
class Stack:
    gateway: RunningGateway
    alpha: FakeBackend
    beta: FakeBackend
    scorer: FakeScorer
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
            FakeScorer(redis_url, keys, decide).running() as scorer,
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
            yield Stack(gw, alpha, beta, scorer, consumer, redis_url, keys, db)
    finally:
        await alpha.stop()
        await beta.stop()
