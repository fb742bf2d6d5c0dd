"""What a discovered model is (facts, capabilities, merging two backends' views) and how the
scorer's index turns catalog entries into numbers."""

from __future__ import annotations

import math

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
from turnout.scorer.index import CatalogIndex, power_of, size_of, speed_of


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
    assert (power_of(0.5), power_of(120), power_of(500)) == (0.0, 1.0, 1.0)
    assert power_of(8) == pytest.approx(0.505, abs=1e-3)
    assert size_of(power_of(32)) == pytest.approx(32)
    assert (speed_of(5), speed_of(300), speed_of(1)) == (0.0, pytest.approx(1.0), 0.0)


def entry(name: str, **kw: object) -> CatalogModelV1:
    return CatalogModelV1(name=name, replicas=[ReplicaV1(backend="b", upstream_model=name)], **kw)  # type: ignore[arg-type]


def test_the_index_uses_moe_effective_size_measured_speed_and_a_default_size():
    index = CatalogIndex.build(
        CatalogSnapshotV1(
            models=[
                entry("moe", params_b=30.0, active_params_b=3.0),
                entry("dense", params_b=8.0, tokens_per_s=123.0),
                entry("unknown"),
                entry("no-replicas-is-not-routable").model_copy(update={"replicas": []}),
            ]
        ),
        unknown_params_b=8.0,
    )
    assert index.size == 3
    assert index.power[0] == pytest.approx(power_of(math.sqrt(90)))
    assert (index.tokens_per_s[1], bool(index.speed_measured[1]), bool(index.speed_measured[0])) == (123.0, True, False)
    assert (index.params_b[2], bool(index.size_known[2]), index.size_labels[2]) == (8.0, False, "size unknown")
    assert index.context[2] == math.inf
