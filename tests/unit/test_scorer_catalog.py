"""What a discovered model is (facts, capabilities, merging two backends' views) and how the
scorer's catalog table turns catalog entries into numbers and joins the fleet to them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from turnout.common.backends.clients import UpstreamModel
from turnout.common.catalog import (
    derive_capabilities,
    match_key,
    merge_model_row,
    model_facts,
    parse_parameter_size,
)
from turnout.common.schemas.catalog import CapabilitiesV1, CatalogModelV1, CatalogSnapshotV1, ReplicaV1
from turnout.scorer.catalog import ModelTable, estimated_tokens_per_s, size_power
from turnout.scorer.fleet import FleetState, ReplicaTable
from turnout.scorer.scoring_config import ScoringConfig


@pytest.mark.parametrize(("text", "billions"), [("8.0B", 8.0), ("567.72M", 0.568), ("1.5T", 1500.0), ("7b", 7.0)])
def test_ollama_parameter_sizes_are_read_in_billions(text, billions):
    assert parse_parameter_size(text) == billions


@pytest.mark.parametrize("text", [None, "", "big", "8 GB", 8])
def test_unreadable_parameter_sizes_are_none(text):
    assert parse_parameter_size(text) is None


def test_capabilities_the_backend_states_win_over_the_name():
    assert derive_capabilities("mystery:7b", ["completion", "vision"]) == CapabilitiesV1(vision=True, tools=False)
    embed = derive_capabilities("llama3.1:8b", ["embedding"])
    assert (embed.embedding, embed.chat, embed.completion, embed.json_mode) == (True, False, False, False)


def test_capabilities_fall_back_to_the_name():
    assert derive_capabilities("llava:13b").vision
    assert derive_capabilities("qwen2.5:7b").tools
    embed = derive_capabilities("nomic-embed-text:latest")
    assert (embed.embedding, embed.chat, embed.tools) == (True, False, False)


def test_model_facts_take_sizes_from_ollama_details_and_moe_activity_from_the_name():
    um = UpstreamModel(
        name="qwen3:30b-a3b",
        size_bytes=18_000_000_000,
        context_length=40960,
        capabilities=("completion", "tools", "thinking"),
        details={"parameter_size": "30.5B", "quantization_level": "Q4_K_M", "family": "qwen3moe"},
    )
    f = model_facts("gpu/qwen3:30b-a3b", um)
    assert (f.name, f.family, f.params_b, f.active_params_b, f.quant, f.context_length) == (
        "gpu/qwen3:30b-a3b",
        "qwen3",
        30.5,
        3.0,
        "Q4_K_M",
        40960,
    )
    assert f.details["caps_source"] == "backend" and f.details["family"] == "qwen3moe"
    assert f.capabilities.tools and not f.capabilities.vision


def test_a_backend_that_knows_less_does_not_erase_what_another_reported():
    ollama = model_facts(
        "llama3.1:8b",
        UpstreamModel(
            name="llama3.1:8b",
            size_bytes=4_900_000_000,
            capabilities=("completion", "tools"),
            details={"parameter_size": "8.0B", "quantization_level": "Q4_K_M"},
        ),
    ).row()
    openai = model_facts("llama3.1:8b", UpstreamModel(name="llama3.1:8b", context_length=32768)).row()
    merged = merge_model_row(openai, ollama)
    assert (merged["quant"], merged["size_bytes"], merged["context_length"]) == ("Q4_K_M", 4_900_000_000, 32768)
    assert merged["capabilities"] == ollama["capabilities"]
    assert merged["details"]["caps_source"] == "backend"
    assert merge_model_row(openai, None) == openai


def test_match_keys_ignore_org_vendor_punctuation_and_quantisation():
    assert match_key("meta-llama/Llama-3.1-8B-Instruct") == match_key("llama3.1:8b-instruct-q4_K_M") == ("llama31", 8.0)
    assert match_key("Qwen/Qwen2.5-Coder-32B-Instruct") == match_key("qwen2.5-coder:32b")
    assert match_key("llama3.1:70b") != match_key("llama3.1:8b")


def test_size_and_speed_scales():
    assert (size_power(0.5), size_power(128), size_power(500)) == (0.0, 1.0, 1.0)
    assert size_power(8) == pytest.approx(0.5)
    assert estimated_tokens_per_s(1.0) == pytest.approx(250.0)
    assert estimated_tokens_per_s(8.0) == pytest.approx(71.8, abs=0.1)


def entry(name: str, **kw: object) -> CatalogModelV1:
    return CatalogModelV1(name=name, replicas=[ReplicaV1(backend="b", upstream_model=name)], **kw)  # type: ignore[arg-type]


def test_the_table_uses_moe_effective_size_measured_speed_and_a_default_size():
    table = ModelTable.from_snapshot(
        CatalogSnapshotV1(
            version="v7",
            models=[
                entry("moe", params_b=30.0, active_params_b=3.0),
                entry("dense", params_b=8.0, tokens_per_s=123.0, vram_bytes=5 * 2**30, quant="Q4_K_M"),
                entry("unknown"),
                entry("no-replicas-is-not-routable").model_copy(update={"replicas": []}),
            ],
        ),
        ScoringConfig(unknown_params_b=8.0),
        tiers={"unknown": "large"},
    )
    assert (table.version, table.size, list(table.index)) == ("v7", 3, ["moe", "dense", "unknown"])
    assert table.eff_b[0] == pytest.approx(math.sqrt(90))
    assert table.power[0] == pytest.approx(size_power(math.sqrt(90)))
    assert (table.tokens_per_s[1], bool(table.speed_measured[1]), bool(table.speed_measured[0])) == (123.0, True, False)
    assert (table.params_b[2], bool(table.size_known[2]), int(table.tier[2])) == (8.0, False, 2)
    assert table.context[2] == math.inf
    dense = table.spec("dense")
    assert dense is not None and (dense.vram_bytes, dense.quant) == (5 * 2**30, "Q4_K_M")
    assert (list(table.rep_model), table.rep_backend, table.rep_upstream) == (
        [0, 1, 2],
        ("b", "b", "b"),
        ("moe", "dense", "unknown"),
    )
    assert np.isnan(table.rep_vram[0]) and table.rep_vram[1] == 5 * 2**30


def test_the_fleet_joins_each_replica_by_backend_or_host():
    snap = CatalogSnapshotV1(
        models=[
            CatalogModelV1(
                name="m",
                vram_bytes=6 * 2**30,
                replicas=[
                    ReplicaV1(backend="a", upstream_model="m"),
                    ReplicaV1(backend="b", upstream_model="m"),
                    ReplicaV1(backend="c", upstream_model="m", host="h3"),
                ],
            )
        ]
    )
    table = ModelTable.from_snapshot(snap)
    fleet = FleetState(
        resident=frozenset({("a", "m")}),
        resident_on_host=frozenset({("h3", "m")}),
        unhealthy=frozenset({"b"}),
        free_by_backend={"a": 8 * 2**30, "b": 4 * 2**30},
        inflight={("a", "m"): 3},
    )
    reps = ReplicaTable.build(table, fleet)
    assert (list(reps.resident), list(reps.healthy), list(reps.no_room)) == (
        [True, False, True],
        [True, False, True],
        [False, True, False],
    )
    assert list(reps.free_frac[:2]) == [1.0, 0.5] and np.isnan(reps.free_frac[2])
    assert list(reps.inflight) == [3.0, 0.0, 0.0]
