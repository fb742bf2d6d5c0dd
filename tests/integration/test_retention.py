"""Retention of the request log: the sync worker's ``prune_request_log`` deletes routing decisions
past their age, then the oldest beyond the row cap, and old audit-log entries, in batches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from sqlalchemy import select

from turnout.common.arq import CTX_KEY, PRUNE_REQUEST_LOG
from turnout.common.db.models import AuditLog, RoutingDecision
from turnout.common.db.session import engine_scope, make_sessionmaker
from turnout.sync.retention import RetentionOptions, prune
from turnout.sync.settings import SyncSettings
from turnout.sync.worker import build_context, prune_request_log, worker_settings

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def decision(i: int, age_days: float) -> RoutingDecision:
    return RoutingDecision(
        request_id=f"r{i}", kind="chat", status=200, outcome="ok", route_source="scorer", latency_ms=1.0,
        requested_at=NOW - timedelta(days=age_days), prompt="p", reply="r",
    )  # fmt: skip


async def seed(db: str, ages: list[float], audit_ages: list[float]) -> None:
    async with engine_scope(db) as engine, make_sessionmaker(engine)() as session, session.begin():
        session.add_all(decision(i, age) for i, age in enumerate(ages))
        session.add_all(
            AuditLog(actor="admin-key", action=f"POST /a{i}", created_at=NOW - timedelta(days=age))
            for i, age in enumerate(audit_ages)
        )


async def remaining(db: str) -> tuple[list[str], list[str]]:
    async with engine_scope(db) as engine, make_sessionmaker(engine)() as session:
        ids = (await session.execute(select(RoutingDecision.request_id).order_by(RoutingDecision.id))).scalars()
        actions = (await session.execute(select(AuditLog.action).order_by(AuditLog.id))).scalars()
        return list(ids), list(actions)


async def test_prune_by_age_then_by_count_in_batches(db: str):
    # r0..r2 are 40 days old; r3..r9 recent; keep at most 5 -> r3, r4 go by count
    await seed(db, [40, 40, 40, 1, 1, 1, 1, 1, 1, 1], [400, 10])
    opts = RetentionOptions(max_age_days=30, max_rows=5, audit_max_age_days=365, batch_rows=2)
    async with engine_scope(db) as engine:
        result = await prune(make_sessionmaker(engine), opts, now=NOW)
        assert (result.by_age, result.by_count, result.audit) == (3, 2, 1)
        assert await remaining(db) == ([f"r{i}" for i in range(5, 10)], ["POST /a1"])
        again = await prune(make_sessionmaker(engine), opts, now=NOW)
    assert (again.by_age, again.by_count, again.audit) == (0, 0, 0)


async def test_the_job_runs_on_the_sync_worker_schedule(db: str, redis_url: str, key_prefix: str):
    await seed(db, [100, 0], [])
    settings = SyncSettings.load(
        environment="test", redis_url=redis_url, database_url=db, key_prefix=key_prefix, backends=[],
        sync={"benchmarks_on_schedule": False, "public": {"on_schedule": False}, "retention": {"every_s": 900}},
    )  # fmt: skip
    kwargs = worker_settings(settings, registry=CollectorRegistry())
    [cron_job] = [c for c in kwargs["cron_jobs"] if c.name == f"cron:{PRUNE_REQUEST_LOG}"]
    assert (cron_job.minute, cron_job.second) == ({0, 15, 30, 45}, {0})
    redis = Redis.from_url(redis_url)
    wctx = await build_context(settings, redis, registry=CollectorRegistry())
    try:
        assert await prune_request_log({CTX_KEY: wctx, "job_try": 1}) == {"by_age": 1, "by_count": 0, "audit": 0}
    finally:
        await wctx.exit_stack.aclose()
        await redis.aclose()
    assert (await remaining(db))[0] == ["r1"]
