"""Store the gateway's events in Postgres: a consumer group on the two Redis streams.

Streams ``keys.request_events`` (:class:`RequestEventV1`) and ``keys.feedback_events``
(:class:`FeedbackEventV1`); each entry carries the event's JSON in the field ``data``
(docs/events.md). Consumer group ``sync.consumer_group`` (created with ``MKSTREAM`` from id 0),
consumer name ``hostname-pid``:

* a batch is read with ``XREADGROUP`` and stored in **one transaction**, then ``XACK``-ed — an
  entry is acknowledged only after its row is committed, so a crash re-delivers it;
* storing is idempotent: decisions ``ON CONFLICT (request_id) DO NOTHING``; feedback is skipped
  when a row with the same response id, time and score exists; the feedback's model is taken
  from the decision with that response id (decisions of a batch are written first);
* an entry that does not parse, or that Postgres rejects on its own (checked one by one in
  savepoints when a batch fails), goes to ``dead_letters`` and is acknowledged — never lost
  silently, never blocking the stream;
* at start, and every ``claim_idle_s``, entries another consumer left pending that long are
  claimed (``XAUTOCLAIM``); this consumer's own pending entries are read (id ``0``) before new ones;
* Redis or Postgres down: back off (50 ms → 5 s) and retry from the pending entries. A batch
  is only taken apart (and single events dead-lettered) when Postgres *rejected* it — an error
  with a SQLSTATE of its own (:func:`rejected_by_postgres`). A connection lost under a statement
  is not that: asyncpg then raises client-side errors without a SQLSTATE ("cannot switch to
  state …; another operation is in progress", from the protocol still waiting on the dead
  statement), or the server's shutdown codes (class 57, 08); the batch is retried whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from turnout.common.aio import raise_if_cancelling
from turnout.common.db.models import DeadLetter, RoutingDecision
from turnout.common.keys import Keys
from turnout.common.links import make_redis
from turnout.common.schemas.events import EVENT_FIELD, FeedbackEventV1, RequestEventV1
from turnout.sync.metrics import SyncMetrics

log = logging.getLogger(__name__)

_FIELD = EVENT_FIELD.encode()

_FEEDBACK_SQL = text(
    """
    INSERT INTO feedback (response_id, model, score, comment, client, created_at)
    SELECT CAST(:response_id AS VARCHAR),
           COALESCE(CAST(:model AS VARCHAR),
                    (SELECT d.model FROM routing_decisions d
                      WHERE d.response_id = CAST(:response_id AS VARCHAR) AND d.model IS NOT NULL
                      ORDER BY d.id DESC LIMIT 1)),
           CAST(:score AS DOUBLE PRECISION), CAST(:comment AS TEXT), CAST(:client AS VARCHAR),
           CAST(:created_at AS TIMESTAMPTZ)
    WHERE NOT EXISTS (
        SELECT 1 FROM feedback f
         WHERE f.response_id = CAST(:response_id AS VARCHAR)
           AND f.created_at = CAST(:created_at AS TIMESTAMPTZ)
           AND f.score = CAST(:score AS DOUBLE PRECISION))
    """
)


_UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "58"})
"""Connection exception, insufficient resources, operator intervention (shutdown), system error."""


def rejected_by_postgres(exc: DBAPIError) -> bool:
    """Postgres refused the statement on its own (a constraint, a value, a type): an error with a
    SQLSTATE outside the classes that mean the server or the connection went away."""
    if exc.connection_invalidated:
        return False
    state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return isinstance(state, str) and state[:2] not in _UNAVAILABLE_SQLSTATE_CLASSES


def consumer_name() -> str:
    """This process's consumer name in the stream groups: host name and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _ts(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def _text(value: str | None) -> str | None:
    """Postgres text cannot hold NUL characters (a JSON string can)."""
    return value.replace("\x00", "\ufffd") if value is not None else None


def decision_row(ev: RequestEventV1) -> dict[str, Any]:
    """A request event as a ``routing_decisions`` row."""
    return {
        "request_id": ev.request_id,
        "response_id": ev.response_id,
        "kind": ev.kind,
        "client": ev.client,
        "requested_model": ev.requested_model,
        "model": ev.model,
        "backend": ev.backend,
        "status": ev.status,
        "outcome": ev.outcome,
        "route_source": ev.route_source,
        "stream": ev.stream,
        "latency_ms": ev.latency_ms,
        "ttft_ms": ev.ttft_ms,
        "route_ms": ev.route_ms,
        "prompt_tokens": ev.prompt_tokens,
        "completion_tokens": ev.completion_tokens,
        "error": ev.error,
        "analysis": ev.analysis.model_dump(mode="json") if ev.analysis is not None else None,
        "candidates": [c.model_dump(mode="json") for c in ev.candidates],
        "attempts": [a.model_dump(mode="json") for a in ev.attempts],
        "prompt": _text(ev.prompt),
        "reply": _text(ev.reply),
        "requested_at": _ts(ev.ts),
    }


def feedback_params(ev: FeedbackEventV1) -> dict[str, Any]:
    """A feedback event as ``feedback`` insert parameters."""
    return {
        "response_id": ev.response_id,
        "score": ev.score,
        "comment": ev.comment,
        "client": ev.client,
        "created_at": _ts(ev.ts),
        "model": ev.model,
    }


@dataclass(slots=True)
class _Entry:
    stream: str
    label: str
    entry_id: str
    raw: bytes | None


@dataclass(slots=True)
class _Batch:
    decisions: list[tuple[_Entry, RequestEventV1]] = field(default_factory=list)
    feedback: list[tuple[_Entry, FeedbackEventV1]] = field(default_factory=list)
    dead: list[tuple[_Entry, str]] = field(default_factory=list)
    acks: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))


def _decode(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class EventConsumer:
    """Stores the gateways' request and feedback events in Postgres (a Redis stream consumer group)."""

    def __init__(
        self,
        *,
        redis_url: str,
        keys: Keys,
        sessionmaker: async_sessionmaker[AsyncSession],
        metrics: SyncMetrics,
        group: str,
        consumer: str | None = None,
        batch_size: int = 200,
        block_ms: int = 1000,
        claim_idle_s: float = 60.0,
    ) -> None:
        self._url = redis_url
        self._sessionmaker = sessionmaker
        self._metrics = metrics
        self.group = group
        self.consumer = consumer or consumer_name()
        self._batch_size = batch_size
        self._block_ms = block_ms
        self._claim_idle_ms = int(claim_idle_s * 1000)
        self._claim_every_s = max(claim_idle_s / 2, 1.0)
        self.streams = {keys.request_events: "requests", keys.feedback_events: "feedback"}
        self.running = False
        self.stored = 0

    # --- loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Read, store and acknowledge events until cancelled; reconnect with back-off when Redis fails."""
        backoff = 0.05
        while True:
            conn = make_redis(self._url, block_s=self._block_ms / 1000)
            try:
                await self.ensure_groups(conn)
                await self.claim_stale(conn)
                self.running = True
                pending, last_claim = True, time.monotonic()
                while True:
                    raise_if_cancelling()
                    if time.monotonic() - last_claim > self._claim_every_s:
                        pending = await self.claim_stale(conn) > 0 or pending
                        last_claim = time.monotonic()
                    n = await self.step(conn, pending=pending)
                    if pending and n == 0:
                        pending = False
                    backoff = 0.05
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, SQLAlchemyError) as exc:
                self.running = False
                log.warning("event consumer: %s: %s; retrying in %.2fs", type(exc).__name__, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:
                self.running = False
                log.exception("event consumer failed; restarting in %.2fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                self.running = False
                with contextlib.suppress(RedisError, OSError):
                    await conn.aclose()

    async def ensure_groups(self, conn: Redis) -> None:
        """Create the consumer group on every stream (and the stream) unless it exists."""
        for stream in self.streams:
            try:
                await conn.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def claim_stale(self, conn: Redis) -> int:
        """Take over entries other consumers left pending for ``claim_idle_s``."""
        claimed = 0
        for stream in self.streams:
            start: Any = "0-0"
            while True:
                # justid would be lighter, but redis-py then drops the cursor from the reply
                reply = await conn.xautoclaim(
                    stream, self.group, self.consumer, self._claim_idle_ms, start_id=start, count=100
                )
                start = reply[0]
                claimed += len(reply[1])
                if _decode(start) == "0-0":
                    break
        if claimed:
            log.info("event consumer %s claimed %d stale pending event(s)", self.consumer, claimed)
        return claimed

    async def step(self, conn: Redis, *, pending: bool = False, block_ms: int | None = None) -> int:
        """Read one batch (own pending entries when ``pending``), store it, acknowledge it."""
        ids = "0" if pending else ">"
        block = None if pending else (self._block_ms if block_ms is None else block_ms)
        reply = await conn.xreadgroup(
            self.group, self.consumer, dict.fromkeys(self.streams, ids), count=self._batch_size, block=block
        )
        batch = self._parse(reply or [])
        n = sum(len(v) for v in batch.acks.values())
        if n == 0:
            return 0
        await self.store(batch)
        async with conn.pipeline(transaction=False) as pipe:
            for stream, entry_ids in batch.acks.items():
                pipe.xack(stream, self.group, *entry_ids)
            await pipe.execute()
        return n

    async def drain(self, conn: Redis) -> int:
        """Store everything pending and new, without blocking (tests, shutdown)."""
        total = await self.step(conn, pending=True)
        while True:
            n = await self.step(conn, block_ms=1)
            total += n
            if n == 0:
                return total

    # --- parsing -------------------------------------------------------------------------

    def _parse(self, reply: Any) -> _Batch:
        batch = _Batch()
        for stream_raw, entries in reply:
            stream = _decode(stream_raw)
            label = self.streams.get(stream, "requests")
            for entry_id_raw, fields in entries:
                entry_id = _decode(entry_id_raw)
                batch.acks[stream].append(entry_id)
                if not fields:
                    self._metrics.events_skipped.labels(label, "trimmed").inc()
                    log.warning("event %s on %s is gone from the stream (trimmed)", entry_id, stream)
                    continue
                raw = fields.get(_FIELD)
                if raw is None and len(fields) == 1:
                    raw = next(iter(fields.values()))
                entry = _Entry(stream, label, entry_id, raw)
                if raw is None:
                    batch.dead.append((entry, f"no {EVENT_FIELD!r} field; fields: {sorted(map(_decode, fields))}"))
                    continue
                try:
                    if label == "requests":
                        batch.decisions.append((entry, RequestEventV1.model_validate_json(raw)))
                    else:
                        batch.feedback.append((entry, FeedbackEventV1.model_validate_json(raw)))
                except ValidationError as exc:
                    batch.dead.append((entry, f"invalid event: {exc.error_count()} error(s): {exc}"))
        return batch

    # --- storing -------------------------------------------------------------------------

    async def store(self, batch: _Batch) -> None:
        """Store one batch in one transaction (one by one when Postgres rejects it); Postgres down raises."""
        try:
            async with self._sessionmaker() as session, session.begin():
                counts = await self._store_all(session, batch)
        except (OperationalError, InterfaceError):
            raise  # the database is unreachable: retry the whole batch later
        except DBAPIError as exc:
            if not rejected_by_postgres(exc):
                raise  # the connection went away under the batch: retry it whole later
            log.warning("storing a batch of events failed (%s); storing them one by one", exc.orig or exc)
            async with self._sessionmaker() as session, session.begin():
                counts = await self._store_each(session, batch)
        self._count(batch, counts)

    async def _store_all(self, session: AsyncSession, batch: _Batch) -> dict[str, int]:
        counts = {"requests": 0, "feedback": 0}
        if batch.decisions:
            stmt = (
                pg_insert(RoutingDecision)
                .values([decision_row(ev) for _, ev in batch.decisions])
                .on_conflict_do_nothing(index_elements=[RoutingDecision.request_id])
                .returning(RoutingDecision.id)
            )
            counts["requests"] = len((await session.execute(stmt)).all())
        for _, ev in batch.feedback:
            result = await session.execute(_FEEDBACK_SQL, feedback_params(ev))
            counts["feedback"] += int(getattr(result, "rowcount", 0) or 0)
        for entry, error in batch.dead:
            session.add(self._dead_letter(entry, error))
        return counts

    async def _store_each(self, session: AsyncSession, batch: _Batch) -> dict[str, int]:
        """Savepoint per event: a row Postgres rejects goes to dead_letters, the rest is stored."""
        counts = {"requests": 0, "feedback": 0}
        rejected: list[tuple[_Entry, str]] = []
        for entry, ev in batch.decisions:
            try:
                async with session.begin_nested():
                    stmt = (
                        pg_insert(RoutingDecision)
                        .values(decision_row(ev))
                        .on_conflict_do_nothing(index_elements=[RoutingDecision.request_id])
                        .returning(RoutingDecision.id)
                    )
                    counts["requests"] += len((await session.execute(stmt)).all())
            except DBAPIError as exc:
                if not rejected_by_postgres(exc):
                    raise
                rejected.append((entry, f"rejected by Postgres: {exc.orig or exc}"))
                counts["rejected:requests"] = counts.get("rejected:requests", 0) + 1
        for entry, fb in batch.feedback:
            try:
                async with session.begin_nested():
                    result = await session.execute(_FEEDBACK_SQL, feedback_params(fb))
                    counts["feedback"] += int(getattr(result, "rowcount", 0) or 0)
            except DBAPIError as exc:
                if not rejected_by_postgres(exc):
                    raise
                rejected.append((entry, f"rejected by Postgres: {exc.orig or exc}"))
                counts["rejected:feedback"] = counts.get("rejected:feedback", 0) + 1
        batch.dead.extend(rejected)
        for entry, error in batch.dead:
            session.add(self._dead_letter(entry, error))
        return counts

    def _dead_letter(self, entry: _Entry, error: str) -> DeadLetter:
        raw = entry.raw.decode("utf-8", "replace") if entry.raw is not None else None
        return DeadLetter(
            queue=entry.stream,
            job="request_event" if entry.label == "requests" else "feedback_event",
            payload={"entry_id": entry.entry_id, "data": raw[:100_000] if raw else raw},
            error=error[:10_000],
            attempts=1,
        )

    def _count(self, batch: _Batch, counts: dict[str, int]) -> None:
        m = self._metrics
        for label, total in (("requests", len(batch.decisions)), ("feedback", len(batch.feedback))):
            stored, rejected = counts.get(label, 0), counts.get(f"rejected:{label}", 0)
            m.events_stored.labels(label).inc(stored)
            m.events_skipped.labels(label, "duplicate").inc(max(total - stored - rejected, 0))
        for e, _ in batch.dead:
            m.events_skipped.labels(e.label, "malformed").inc()
        self.stored += counts.get("requests", 0) + counts.get("feedback", 0)
