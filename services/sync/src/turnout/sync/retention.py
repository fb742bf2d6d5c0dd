"""Retention of the request log: routing decisions (and the prompts and replies stored with them)
older than ``sync.retention.max_age_days`` are deleted, then the oldest beyond
``sync.retention.max_rows``; the audit log keeps ``sync.retention.audit_max_age_days``.

Runs as the ``prune_request_log`` job on the sync worker's schedule (``sync.retention.every_s``,
hourly by default) and on demand. Deletes go in batches of ``batch_rows`` (one short transaction
each), so a large backlog never holds a long lock on the table the event consumer writes to.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from turnout.common.arq import CronInterval

log = logging.getLogger(__name__)


class RetentionOptions(BaseModel):
    """How long routing decisions and the audit log are kept, and how many rows at most."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Prune routing decisions and the audit log on a schedule")
    every_s: CronInterval = Field(default=3600, description="Schedule (default hourly)")
    max_age_days: float = Field(default=30.0, gt=0, description="Routing decisions older than this are deleted")
    max_rows: int = Field(default=1_000_000, ge=1, description="At most this many routing decisions are kept")
    audit_max_age_days: float = Field(default=365.0, gt=0, description="Audit-log entries older than this go")
    batch_rows: int = Field(default=5000, ge=1, le=1_000_000, description="Rows deleted per transaction")


@dataclass(frozen=True, slots=True)
class PruneResult:
    """Rows deleted by age, by count, and from the audit log."""

    by_age: int
    by_count: int
    audit: int


_BY_AGE = text(
    "DELETE FROM routing_decisions WHERE id IN "
    "(SELECT id FROM routing_decisions WHERE requested_at < :cutoff ORDER BY id LIMIT :n)"
)
_AUDIT_BY_AGE = text(
    "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE created_at < :cutoff ORDER BY id LIMIT :n)"
)
# the id of the newest row that falls outside the newest max_rows (ids grow with arrival)
_COUNT_EDGE = text("SELECT id FROM routing_decisions ORDER BY id DESC OFFSET :keep LIMIT 1")
_BY_COUNT = text(
    "DELETE FROM routing_decisions WHERE id IN "
    "(SELECT id FROM routing_decisions WHERE id <= :edge ORDER BY id LIMIT :n)"
)


async def _batched(sessionmaker: async_sessionmaker[AsyncSession], stmt: object, params: dict[str, object]) -> int:
    total = 0
    while True:
        async with sessionmaker() as session, session.begin():
            result = await session.execute(stmt, params)  # type: ignore[call-overload]
            n = int(getattr(result, "rowcount", 0) or 0)
        total += n
        if n < int(params["n"]):  # type: ignore[call-overload]
            return total


async def prune(
    sessionmaker: async_sessionmaker[AsyncSession], options: RetentionOptions, *, now: datetime | None = None
) -> PruneResult:
    """Delete old routing decisions (by age, then beyond ``max_rows``) and audit entries, in batches."""
    now = now or datetime.now(UTC)
    n = options.batch_rows
    by_age = await _batched(sessionmaker, _BY_AGE, {"cutoff": now - timedelta(days=options.max_age_days), "n": n})
    async with sessionmaker() as session:
        edge = (await session.execute(_COUNT_EDGE, {"keep": options.max_rows})).scalar()
    by_count = 0 if edge is None else await _batched(sessionmaker, _BY_COUNT, {"edge": edge, "n": n})
    audit = await _batched(
        sessionmaker, _AUDIT_BY_AGE, {"cutoff": now - timedelta(days=options.audit_max_age_days), "n": n}
    )
    if by_age or by_count or audit:
        log.info("pruned %d routing decision(s) by age, %d by count, %d audit entr(ies)", by_age, by_count, audit)
    return PruneResult(by_age=by_age, by_count=by_count, audit=audit)
