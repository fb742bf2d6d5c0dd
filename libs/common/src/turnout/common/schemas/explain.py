"""``scorer.explain`` v1: the full routing breakdown of one request, without generating.

The request is a :class:`~turnout.common.schemas.route.RouteRequestV1` (what ``route`` gets);
the reply carries the analysis, every candidate that passed the filters with its score broken
down by term (``terms`` sum to ``score``) and its reasons, the models the filters removed and
why, and the notes the fallback rules added. ``route`` and ``explain`` run the same decision
function, so the first candidate here is what ``route`` answers for the same request and state.
"""

from __future__ import annotations

from pydantic import Field

from turnout.common.schemas import WireModel
from turnout.common.schemas.route import CandidateV1, PromptAnalysisV1


class ExplainAnalysisV1(PromptAnalysisV1):
    confidence: float = Field(default=1.0, description="How sure the heuristic is (0..1)")
    source: str = Field(default="heuristic", description="heuristic | classifier")
    tokens: int = 0
    category_scores: dict[str, float] = Field(default_factory=dict)


class ExplainReplyV1(WireModel):
    analysis: ExplainAnalysisV1 = Field(default_factory=ExplainAnalysisV1)
    quality: float = Field(default=0.5, description="The quality preference the decision used")
    candidates: list[CandidateV1] = Field(default_factory=list, description="Every candidate, best first")
    filtered: dict[str, str] = Field(default_factory=dict, description="model -> why it was removed")
    notes: list[str] = Field(default_factory=list, description="Fallbacks and rules that applied")
    unservable: str | None = None
    unservable_code: str | None = None
    catalog_version: str = ""
    rules_version: str = ""
