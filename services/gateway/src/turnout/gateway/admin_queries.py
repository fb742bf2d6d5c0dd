"""What the admin API and the dashboard read from Postgres: the request log (routing decisions
with their prompt, reply, candidates and attempts), the audit log and the profiles.

Pages are cursors over the id (newest first: ``before`` is the smallest id of the page just
read; the reply's ``next_before`` asks for the following page), so that paging stays correct
while new rows arrive. Profiles page by ``offset`` (they are few and change rarely).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from turnout.common.db.models import AuditLog, Model, Profile, RoutingDecision

MAX_PAGE = 500


@dataclass(frozen=True, slots=True)
class RequestFilter:
    """Which logged requests to list: time range, model, backend, client, status, outcome."""

    since: datetime | None = None
    until: datetime | None = None
    model: str | None = None
    backend: str | None = None
    client: str | None = None
    status: int | None = None
    outcome: str | None = None

    def apply(self, stmt: Select[Any]) -> Select[Any]:
        """``stmt`` narrowed to the requests this filter selects."""
        d = RoutingDecision
        if self.since is not None:
            stmt = stmt.where(d.requested_at >= self.since)
        if self.until is not None:
            stmt = stmt.where(d.requested_at < self.until)
        if self.model is not None:
            stmt = stmt.where(d.model == self.model)
        if self.backend is not None:
            stmt = stmt.where(d.backend == self.backend)
        if self.client is not None:
            stmt = stmt.where(d.client == self.client)
        if self.status is not None:
            stmt = stmt.where(d.status == self.status)
        if self.outcome is not None:
            stmt = stmt.where(d.outcome == self.outcome)
        return stmt


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def summary(d: RoutingDecision) -> dict[str, Any]:
    """One routing decision as a request-list row: ids, model chosen, timing, status."""
    analysis = d.analysis or {}
    top = d.candidates[0] if d.candidates else None
    return {
        "id": d.id,
        "request_id": d.request_id,
        "response_id": d.response_id,
        "requested_at": _iso(d.requested_at),
        "kind": d.kind,
        "client": d.client,
        "requested_model": d.requested_model,
        "model": d.model,
        "backend": d.backend,
        "status": d.status,
        "outcome": d.outcome,
        "route_source": d.route_source,
        "stream": d.stream,
        "latency_ms": d.latency_ms,
        "ttft_ms": d.ttft_ms,
        "route_ms": d.route_ms,
        "prompt_tokens": d.prompt_tokens,
        "completion_tokens": d.completion_tokens,
        "category": analysis.get("category"),
        "level": analysis.get("level"),
        "top_reasons": (top or {}).get("reasons", [])[:3] if isinstance(top, dict) else [],
        "attempts": len(d.attempts or []),
        "logged": d.prompt is not None,
    }


def tokens_per_s(d: RoutingDecision) -> float | None:
    """Generation speed of a reply: completion tokens over the time after the first token."""
    if not d.completion_tokens or d.ttft_ms is None or d.latency_ms <= d.ttft_ms:
        return None
    return round(d.completion_tokens / ((d.latency_ms - d.ttft_ms) / 1000.0), 2)


def detail(d: RoutingDecision) -> dict[str, Any]:
    """One routing decision in full: the summary plus prompt, reply, analysis and every candidate."""
    analysis = dict(d.analysis or {})
    analysis.pop("embedding", None)  # base64 noise for a reader
    doc = summary(d)
    doc.update(
        {
            "prompt": d.prompt,
            "reply": d.reply,
            "error": d.error,
            "tokens_per_s": tokens_per_s(d),
            "decision": {
                "source": d.route_source,
                "analysis": analysis,
                "candidates": [
                    {**c, "chosen": c.get("model") == d.model and c.get("backend") == d.backend}
                    for c in d.candidates or []
                    if isinstance(c, dict)
                ],
            },
            "attempts": [{"n": i + 1, **a} for i, a in enumerate(d.attempts or []) if isinstance(a, dict)],
        }
    )
    return doc


async def list_requests(
    engine: AsyncEngine, flt: RequestFilter, *, limit: int = 50, before: int | None = None
) -> dict[str, Any]:
    """A page of logged requests, newest first; ``next_before`` pages on."""
    limit = max(1, min(limit, MAX_PAGE))
    stmt = flt.apply(select(RoutingDecision))
    if before is not None:
        stmt = stmt.where(RoutingDecision.id < before)
    stmt = stmt.order_by(RoutingDecision.id.desc()).limit(limit + 1)
    async with AsyncSession(engine) as session:
        rows = list((await session.execute(stmt)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "data": [summary(r) for r in rows],
        "next_before": rows[-1].id if more and rows else None,
    }


async def get_request(engine: AsyncEngine, request_id: str) -> dict[str, Any] | None:
    """One logged request by request id (or row id), or ``None``."""
    stmt = select(RoutingDecision).where(RoutingDecision.request_id == request_id)
    if request_id.isdigit():
        stmt = select(RoutingDecision).where(
            (RoutingDecision.request_id == request_id) | (RoutingDecision.id == int(request_id))
        )
    async with AsyncSession(engine) as session:
        row = (await session.execute(stmt.limit(1))).scalar_one_or_none()
    return detail(row) if row is not None else None


async def performance(engine: AsyncEngine, *, limit: int = 500) -> list[dict[str, Any]]:
    """The latest successful streamed chats: (model, TTFT, tokens/s) points for the scatter."""
    d = RoutingDecision
    stmt = (
        select(d)
        .where(d.status == 200, d.ttft_ms.is_not(None), d.completion_tokens.is_not(None))
        .order_by(d.id.desc())
        .limit(limit)
    )
    async with AsyncSession(engine) as session:
        rows = list((await session.execute(stmt)).scalars())
    points = []
    for r in rows:
        tps = tokens_per_s(r)
        if tps is not None and r.ttft_ms is not None and r.model:
            points.append({"model": r.model, "ttft_ms": r.ttft_ms, "tokens_per_s": tps, "request_id": r.request_id})
    return points


async def audit_log(
    engine: AsyncEngine, *, limit: int = 50, before: int | None = None, action: str | None = None
) -> dict[str, Any]:
    """A page of the admin audit log, newest first."""
    limit = max(1, min(limit, MAX_PAGE))
    stmt = select(AuditLog)
    if before is not None:
        stmt = stmt.where(AuditLog.id < before)
    if action is not None:
        stmt = stmt.where(AuditLog.action == action)
    stmt = stmt.order_by(AuditLog.id.desc()).limit(limit + 1)
    async with AsyncSession(engine) as session:
        rows = list((await session.execute(stmt)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "data": [
            {"id": r.id, "at": _iso(r.created_at), "actor": r.actor, "action": r.action, "detail": r.detail}
            for r in rows
        ],
        "next_before": rows[-1].id if more and rows else None,
    }


async def write_audit(engine: AsyncEngine, *, actor: str, action: str, detail: dict[str, Any]) -> None:
    """Record one admin action by ``actor``."""
    async with AsyncSession(engine) as session, session.begin():
        session.add(AuditLog(actor=actor[:128], action=action[:128], detail=detail))


async def profiles(
    engine: AsyncEngine, *, model: str | None = None, limit: int = 100, offset: int = 0
) -> dict[str, Any]:
    """A page of stored model profiles with the total count."""
    limit = max(1, min(limit, MAX_PAGE))
    base = select(Profile, Model.name).join(Model, Model.id == Profile.model_id)
    count = select(func.count()).select_from(Profile).join(Model, Model.id == Profile.model_id)
    if model is not None:
        base = base.where(Model.name == model)
        count = count.where(Model.name == model)
    stmt = base.order_by(Model.name, Profile.suite_version.desc(), Profile.category).limit(limit).offset(offset)
    async with AsyncSession(engine) as session:
        total = int((await session.execute(count)).scalar_one())
        rows = (await session.execute(stmt)).all()
    data = [
        {
            "model": name,
            "suite_version": p.suite_version,
            "category": p.category,
            "score": p.score,
            "n_prompts": p.n_prompts,
            "grader": p.grader,
            "ttft_ms": p.ttft_ms,
            "tokens_per_s": p.tokens_per_s,
            "prefill_tokens_per_s": p.prefill_tokens_per_s,
            "load_ms": p.load_ms,
            "vram_bytes": p.vram_bytes,
            "errors": p.errors,
            "timeouts": p.timeouts,
            "updated_at": _iso(p.updated_at),
        }
        for p, name in rows
    ]
    return {"data": data, "total": total, "limit": limit, "offset": offset}
