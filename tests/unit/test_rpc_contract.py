"""The RPC contract is visible: a snapshot of every contract model's JSON schema, and recorded
v1 payloads that must keep parsing.

When a snapshot test fails, the contract changed. An additive change (a new optional field with
a default) keeps the version: refresh the snapshot with
``TURNOUT_UPDATE_SNAPSHOTS=1 make test-unit`` and commit it. Anything else (a field removed,
renamed, retyped or made required) is breaking: add a ``V2`` model and queue instead
(docs/rpc.md, "Versioning").
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import BaseModel

from turnout.common.rpc.contract import ALL_METHODS
from turnout.common.schemas.route import RequestKind, RouteReplyV1, RouteRequestV1

SNAPSHOTS = Path(__file__).parent / "snapshots"
FIXTURES = Path(__file__).parents[1] / "fixtures" / "rpc"
UPDATE = os.environ.get("TURNOUT_UPDATE_SNAPSHOTS") == "1"

CONTRACT_MODELS: list[type[BaseModel]] = sorted(
    {m for method in ALL_METHODS for m in (method.request, method.reply)}, key=lambda m: m.__name__
)


def test_every_rpc_method_has_its_models_snapshotted() -> None:
    assert {m.__name__ for m in CONTRACT_MODELS} >= {"RouteRequestV1", "RouteReplyV1"}


@pytest.mark.parametrize("model", CONTRACT_MODELS, ids=lambda m: m.__name__)
def test_contract_schema_matches_the_snapshot(model: type[BaseModel]) -> None:
    path = SNAPSHOTS / f"{model.__name__}.schema.json"
    current = json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"
    if UPDATE or not path.exists():
        path.write_text(current)
        if not UPDATE:
            pytest.fail(f"wrote a new snapshot {path.name}; check it in")
    assert json.loads(current) == json.loads(path.read_text()), (
        f"{model.__name__} changed. Additive change? TURNOUT_UPDATE_SNAPSHOTS=1 make test-unit. "
        "Breaking change? Add a V2 model and queue (docs/rpc.md)."
    )


def test_contract_models_ignore_unknown_fields() -> None:
    for model in CONTRACT_MODELS:
        assert model.model_config.get("extra") == "ignore", model.__name__


def test_a_recorded_v1_route_request_still_parses() -> None:
    raw = json.loads((FIXTURES / "route_request_v1.json").read_text())
    req = RouteRequestV1.model_validate(raw)
    assert (req.kind, req.has_images, req.has_tools, req.est_prompt_tokens, req.quality) == (
        RequestKind.CHAT,
        True,
        False,
        812,
        0.7,
    )


def test_a_recorded_v1_route_reply_still_parses() -> None:
    raw = json.loads((FIXTURES / "route_reply_v1.json").read_text())
    reply = RouteReplyV1.model_validate(raw)
    assert [(c.model, c.backend, c.upstream_model) for c in reply.candidates] == [
        ("llava:7b", "gpu1", "llava:7b"),
        ("qwen2.5vl:7b", "gpu2", "qwen2.5vl:7b"),
    ]
    assert reply.analysis.category == "vision"
    assert reply.filtered == {"llama3.2:3b": "no vision"}


def test_a_minimal_request_is_valid() -> None:
    """Every request field has a default: old clients that send less keep working."""
    assert RouteRequestV1.model_validate({}) == RouteRequestV1()
    assert RouteReplyV1.model_validate({}) == RouteReplyV1()
