"""Events the gateway publishes on Redis streams; the sync worker stores them in Postgres."""

from __future__ import annotations

from pydantic import Field

from turnout.common.schemas import WireModel
from turnout.common.schemas.route import CandidateV1, PromptAnalysisV1

EVENT_FIELD = "data"
"""Stream entries (``keys.request_events``, ``keys.feedback_events``) carry one field: the event's JSON."""


class AttemptV1(WireModel):
    model: str
    backend: str
    outcome: str = Field(description="ok | unavailable | timeout | status_<code> | cancelled")
    latency_ms: float = 0.0


class RequestEventV1(WireModel):
    v: int = 1
    request_id: str
    response_id: str | None = None
    ts: float
    kind: str = "chat"
    client: str | None = None
    requested_model: str | None = None
    model: str | None = None
    backend: str | None = None
    status: int = 200
    outcome: str = "ok"
    route_source: str = Field(default="scorer", description="scorer | fallback | direct | cache")
    stream: bool = False
    attempts: list[AttemptV1] = Field(default_factory=list)
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    route_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    analysis: PromptAnalysisV1 | None = None
    candidates: list[CandidateV1] = Field(default_factory=list)
    prompt: str | None = Field(
        default=None, description="Request log (opt-in): the prompt's text, secrets redacted, capped"
    )
    reply: str | None = Field(default=None, description="Request log (opt-in): the reply's text, redacted, capped")


class FeedbackEventV1(WireModel):
    v: int = 1
    response_id: str
    score: float = Field(ge=-1.0, le=1.0)
    comment: str | None = Field(default=None, max_length=4000)
    client: str | None = None
    ts: float
    model: str | None = Field(
        default=None, description="The model judged (paired sampling); unset: the model the request was routed to"
    )
