"""The request event as the pipeline hands it over (a dict with pydantic values and attempt
dataclasses inside) encodes to the JSON of :class:`RequestEventV1` — what the sync worker reads."""

from __future__ import annotations

import orjson
import pytest

from turnout.common.schemas.events import RequestEventV1
from turnout.common.schemas.route import CandidateV1, PromptAnalysisV1
from turnout.gateway.events import encode_event
from turnout.gateway.forwarding import Attempt


def test_an_event_with_pydantic_values_encodes_to_the_wire_model() -> None:
    candidates = [
        CandidateV1(
            model=f"m{i}", backend="b", upstream_model=f"u{i}", score=0.5 - i / 10, reasons=["r"], terms={"speed": 0.2}
        )
        for i in range(3)
    ]
    analysis = PromptAnalysisV1(category="coding", complexity=0.58, level="medium", signals=["code block (+0.15)"])
    event = {
        "v": 1,
        "request_id": "req-1",
        "ts": 1.5,
        "kind": "chat",
        "attempts": [Attempt("m0", "b", "status_5xx", 3.2), Attempt("m1", "b", "ok", 1.0)],
        "analysis": analysis,
        "candidates": candidates,
        "route_ms": 0.4,
    }
    raw = encode_event(event)
    parsed = RequestEventV1.model_validate_json(raw)
    assert parsed.candidates == candidates
    assert parsed.analysis == analysis
    assert [a.outcome for a in parsed.attempts] == ["status_5xx", "ok"]
    assert orjson.loads(raw)["candidates"][1] == candidates[1].model_dump(mode="json")


def test_an_unknown_value_is_refused() -> None:
    with pytest.raises(TypeError):
        encode_event({"v": 1, "request_id": "r", "ts": 0.0, "x": object()})


class TaggedCandidate(CandidateV1):
    """A candidate of another class: encoded one by one through ``default``."""


@pytest.mark.parametrize("cls", [CandidateV1, TaggedCandidate])
def test_candidates_encode_as_each_ones_own_json(cls: type[CandidateV1]) -> None:
    candidates = [
        cls(model=f"m{i}", backend="b", upstream_model=f"u{i}", reasons=["r"], terms={"speed": 0.1}, load_s=1.5)
        for i in range(2)
    ]
    raw = encode_event({"v": 1, "request_id": "r", "ts": 0.0, "candidates": candidates})
    each = b",".join(c.model_dump_json().encode() for c in candidates)
    assert raw == b'{"v":1,"request_id":"r","ts":0.0,"candidates":[' + each + b"]}"
