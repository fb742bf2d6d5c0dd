"""``scorer.explain`` v1: the full routing breakdown of one request, without generating.

The request is a :class:`~turnout.common.schemas.route.RouteRequestV1` (what ``route`` gets);
the reply carries the analysis, every candidate that passed the filters with its score broken
down by term (``terms`` sum to ``score``) and its reasons, the models the filters removed and
why, the notes the fallback rules added, the VRAM planner's substitution (``vram``) and the
final ``model``. ``route`` and ``explain`` run the same decision function and the same planner
(without its bookkeeping), so ``model`` is what ``route`` answers for the same request and state.
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


class VramExplainV1(WireModel):
    """What the VRAM planner did to the ranking (``turnout.scorer.vram_routing``)."""

    kind: str = Field(description="resident | fits | resident_within_margin | evict | fallback | no_room | unmanaged")
    reason: str = ""
    ranked_first: str = Field(default="", description="The scorer's first candidate before the planner")
    chosen: str = Field(default="", description="The planner's choice (first candidate of the reply)")
    orders: list[str] = Field(default_factory=list, description="Unloads/loads an evict decision starts")
    if_late: str | None = Field(
        default=None, description="Where an evict decision routes if the room is not made within the wait"
    )


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
    model: str | None = Field(default=None, description="The final choice: what route answers for this request now")
    vram: VramExplainV1 | None = Field(default=None, description="The VRAM planner's substitution, when it applied")
    learned: dict[str, object] = Field(
        default_factory=dict, description="The learned term's inputs: router prior version, k-NN size, blend"
    )
