"""Loads what the scorer learns from Postgres, off the request path.

* :func:`load_profile_outcomes` — per-prompt grades the profiler stored in
  ``profiles.details["prompts"]`` (``{id, category, status, score, grader}``); the prompt's text
  comes from the entry's ``prompt`` field or from ``prompt_texts`` (suite id → text). Each graded
  prompt becomes ``LearnedIndex.add(embedding, model, score, source)`` with source ``judge``
  when an LLM judge graded it, else ``profile``.
* :func:`load_feedback` — ``feedback`` joined to ``routing_decisions`` by ``response_id``: per
  model a time-decayed mean (−1..1) and count for the feedback term, and — for decisions whose
  analysis carries the prompt embedding (``analysis["embedding"]``, base64 float16) — graded
  outcomes ``(score + 1) / 2`` for the learned index with source ``feedback``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from turnout.common.db.models import Feedback, Model, Profile, RoutingDecision
from turnout.embeddings import Embedder
from turnout.scorer.learned import LearnedIndex, decode_embedding, prompt_key

log = logging.getLogger(__name__)


async def load_profile_outcomes(
    session: AsyncSession,
    index: LearnedIndex,
    embedder: Embedder,
    prompt_texts: Mapping[str, str] | None = None,
    *,
    batch: int = 256,
) -> int:
    """Add every graded profiling prompt to ``index``; returns how many outcomes were added."""
    rows = (
        await session.execute(select(Model.name, Profile.details).join(Profile, Profile.model_id == Model.id))
    ).all()
    texts = prompt_texts or {}
    pending: list[tuple[str, str, float, str]] = []  # (text, model, score, source)
    for name, details in rows:
        for p in (details or {}).get("prompts", []):
            score = p.get("score")
            text = p.get("prompt") or texts.get(str(p.get("id", "")))
            if score is None or not text or p.get("status", "ok") not in ("ok", "graded"):
                continue
            source = "judge" if str(p.get("grader") or "").startswith("judge") else "profile"
            pending.append((text, name, min(1.0, max(0.0, float(score))), source))
    for i in range(0, len(pending), batch):
        chunk = pending[i : i + batch]
        emb = embedder.encode([t for t, *_ in chunk])
        for (text, model, score, source), e in zip(chunk, emb, strict=True):
            index.add(e, model, score, source=source, key=prompt_key(text))
    return len(pending)


@dataclass(frozen=True, slots=True)
class FeedbackSummary:
    by_model: dict[str, tuple[float, float]]
    """model -> (decayed mean −1..1, decayed count)."""
    outcomes: int
    """Outcomes added to the learned index (those with a stored prompt embedding)."""


async def load_feedback(
    session: AsyncSession,
    index: LearnedIndex | None = None,
    *,
    half_life_days: float = 14.0,
    now: datetime | None = None,
    limit: int = 50_000,
) -> FeedbackSummary:
    now = now or datetime.now(UTC)
    q = (
        select(Feedback.score, Feedback.model, Feedback.created_at, RoutingDecision.model, RoutingDecision.analysis)
        .join(RoutingDecision, RoutingDecision.response_id == Feedback.response_id, isouter=True)
        .order_by(Feedback.created_at.desc())
        .limit(limit)
    )
    sums: dict[str, list[float]] = {}
    added = 0
    for score, fb_model, at, routed_model, analysis in (await session.execute(q)).all():
        model = fb_model or routed_model  # feedback names its model (paired sampling: the second one)
        if not model:
            continue
        age_days = max(0.0, (now - at).total_seconds() / 86400.0) if at is not None else 0.0
        w = math.pow(0.5, age_days / half_life_days)
        acc = sums.setdefault(model, [0.0, 0.0])
        acc[0] += w * float(score)
        acc[1] += w
        emb = _embedding_of(analysis)
        if index is not None and emb is not None and emb.shape[0] == index.dims:
            index.add(emb, model, (float(score) + 1.0) / 2.0, source="feedback", weight=w)
            added += 1
    by_model = {m: (s / c if c > 0 else 0.0, c) for m, (s, c) in sums.items()}
    return FeedbackSummary(by_model, added)


def _embedding_of(analysis: Any) -> np.ndarray | None:
    if not isinstance(analysis, dict) or not isinstance(analysis.get("embedding"), str):
        return None
    try:
        return decode_embedding(analysis["embedding"])
    except ValueError:
        return None
