"""Ranking: capability filters, size against prompt complexity, quality preference, requested
models, residency — over a fixed catalog, no I/O."""

from __future__ import annotations

import pytest

from switchyard.common.backends.names import parse_model_name
from switchyard.common.catalog import derive_capabilities
from switchyard.common.schemas.catalog import CapabilitiesV1, CatalogModelV1, CatalogSnapshotV1, ReplicaV1
from switchyard.common.schemas.fleet import GpuStateV1, HostStateV1, LoadedModelV1
from switchyard.common.schemas.route import RequestKind, RouteRequestV1
from switchyard.scorer.index import CatalogIndex, FleetState, LiveIndex
from switchyard.scorer.ranking import RankingConfig, rank

HARD_CODING_PROMPT = (
    "Implement a lock-free concurrent hash map in Rust. Optimize it for cache locality, explain the "
    "memory ordering you use and keep the algorithm scalable under contention.\n```rust\n"
    + "fn insert(&self, key: u64, value: u64) { let slot = self.slot(key); slot.store(value); }\n" * 120
    + "```\nAlso debug why the current version deadlocks."
)
MEDIUM_PROMPT = "Analyze the following quarterly report and summarise the key risks for the business. " * 12


def model(name: str, *backends: str, caps: CapabilitiesV1 | None = None, **kw: object) -> CatalogModelV1:
    info = parse_model_name(name)
    return CatalogModelV1(
        name=name,
        family=info.family,
        params_b=info.params_b,
        active_params_b=info.active_params_b,
        capabilities=caps or derive_capabilities(name),
        coder=info.coder,
        replicas=[ReplicaV1(backend=b, upstream_model=name) for b in backends or ("gpu1",)],
        **kw,  # type: ignore[arg-type]
    )


CATALOG = [
    model("qwen2.5:0.5b"),
    model("llama3.2:1b"),
    model("llama3.2:3b"),
    model("llama3.1:8b"),
    model("gemma2:2b"),
    model("qwen2.5:14b"),
    model("qwen2.5-coder:32b"),
    model("llama3.3:70b"),
    model("llava:7b"),
    model("nomic-embed-text"),
]


def live(models: list[CatalogModelV1] = CATALOG, fleet: FleetState | None = None) -> LiveIndex:
    index = CatalogIndex.build(CatalogSnapshotV1(version="test-1", models=models))
    return LiveIndex.build(index, fleet or FleetState())


def route(req: RouteRequestV1, index: LiveIndex | None = None, cfg: RankingConfig | None = None):
    return rank(req, index or live(), cfg or RankingConfig())


def top(req: RouteRequestV1, index: LiveIndex | None = None) -> str:
    reply = route(req, index)
    assert reply.candidates, reply.unservable
    return reply.candidates[0].model


def test_a_vision_request_lands_on_the_vision_model():
    reply = route(RouteRequestV1(text="What is in this picture?", has_images=True))
    assert [c.model for c in reply.candidates] == ["llava:7b"]
    assert reply.analysis.category == "vision"
    assert reply.filtered["llama3.2:1b"] == "no vision support"


def test_a_vision_request_with_no_vision_model_is_unservable():
    reply = route(RouteRequestV1(text="What is in this picture?", has_images=True), live(CATALOG[:4]))
    assert reply.candidates == []
    assert reply.unservable == "no vision-capable model is available for a request with images"
    assert reply.unservable_code == "unservable"


def test_a_tools_request_lands_on_a_tools_model():
    no_tools = CapabilitiesV1(tools=False)
    with_tools = CapabilitiesV1(tools=True)
    models = [
        model("gemma2:2b", caps=no_tools),
        model("phi3:3.8b", caps=no_tools),
        model("llama3.1:8b", caps=with_tools),
    ]
    assert top(RouteRequestV1(text="hi"), live(models)) == "gemma2:2b"
    reply = route(RouteRequestV1(text="hi, what's the weather in Paris?", has_tools=True), live(models))
    assert [c.model for c in reply.candidates] == ["llama3.1:8b"]
    assert reply.filtered == {"gemma2:2b": "no tools support", "phi3:3.8b": "no tools support"}


def test_tools_with_no_tools_model_fall_back_to_every_chat_model_with_a_reason():
    models = [
        model("gemma2:2b", caps=CapabilitiesV1(tools=False)),
        model("phi3:3.8b", caps=CapabilitiesV1(tools=False)),
    ]
    reply = route(RouteRequestV1(text="what's the weather?", has_tools=True), live(models))
    assert sorted(c.model for c in reply.candidates) == ["gemma2:2b", "phi3:3.8b"]
    assert reply.unservable is None
    note = "no tools-capable model available: routed to a chat model that may ignore the tools"
    assert all(note in c.reasons for c in reply.candidates)


def test_an_embedding_request_gets_only_embedding_models():
    reply = route(RouteRequestV1(kind=RequestKind.EMBEDDING, text="some text to embed"))
    assert [c.model for c in reply.candidates] == ["nomic-embed-text"]
    assert reply.analysis.category == "embedding"


def test_a_chat_request_never_gets_an_embedding_only_model():
    reply = route(RouteRequestV1(text="hello"))
    assert "nomic-embed-text" not in {c.model for c in reply.candidates}
    assert reply.filtered["nomic-embed-text"] == "embedding-only model"


def test_a_short_greeting_goes_to_a_small_fast_model():
    reply = route(RouteRequestV1(text="Hi there! How are you?"))
    assert reply.candidates[0].model == "llama3.2:1b"
    assert reply.analysis.level == "simple"
    assert "greeting" in reply.analysis.signals


def test_a_long_hard_coding_prompt_goes_to_a_bigger_coder_model():
    reply = route(RouteRequestV1(text=HARD_CODING_PROMPT))
    assert reply.analysis.category == "code"
    assert reply.analysis.level == "complex"
    assert [c.model for c in reply.candidates[:2]] == ["qwen2.5-coder:32b", "llama3.3:70b"]
    assert "coder model for a code prompt" in reply.candidates[0].reasons


@pytest.mark.parametrize(("quality", "expected"), [(0.0, "llama3.2:1b"), (0.5, "gemma2:2b"), (1.0, "qwen2.5:14b")])
def test_quality_preference_shifts_the_choice_from_speed_to_size(quality, expected):
    assert top(RouteRequestV1(text=MEDIUM_PROMPT, quality=quality)) == expected


def test_the_default_quality_preference_comes_from_the_config():
    req = RouteRequestV1(text=MEDIUM_PROMPT)
    assert route(req, cfg=RankingConfig(default_quality=1.0)).candidates[0].model == "qwen2.5:14b"


def test_a_requested_model_is_honoured_even_when_another_would_rank_higher():
    reply = route(RouteRequestV1(text="Hi!", requested_model="llama3.3:70b"))
    assert [(c.model, c.backend) for c in reply.candidates] == [("llama3.3:70b", "gpu1")]
    assert reply.candidates[0].reasons[0] == "requested model"


def test_an_alias_and_a_bare_ollama_name_resolve_to_catalog_models():
    cfg = RankingConfig(aliases={"fast": "llama3.2:1b"})
    assert rank(RouteRequestV1(text="x", requested_model="fast"), live(), cfg).candidates[0].model == "llama3.2:1b"
    models = [*CATALOG, model("mistral:latest")]
    reply = route(RouteRequestV1(text="x", requested_model="mistral"), live(models))
    assert reply.candidates[0].model == "mistral:latest"


def test_an_unknown_model_is_not_found():
    reply = route(RouteRequestV1(text="x", requested_model="gpt-17"))
    assert reply.candidates == []
    assert reply.unservable == "model 'gpt-17' not found"
    assert reply.unservable_code == "model_not_found"


def test_the_virtual_model_means_route_for_me():
    assert top(RouteRequestV1(text="Hi there!", requested_model="switchyard/auto")) == "llama3.2:1b"


def test_an_embedding_model_asked_to_chat_is_unservable():
    reply = route(RouteRequestV1(text="hello", requested_model="nomic-embed-text"))
    assert reply.unservable == "model 'nomic-embed-text' is an embedding model; it cannot serve chat requests"
    assert reply.unservable_code == "unservable"


def test_models_whose_context_window_is_too_small_are_filtered():
    models = [model("llama3.2:1b", context_length=2048), model("llama3.1:8b", context_length=131072)]
    reply = route(RouteRequestV1(text="summarise", est_prompt_tokens=3000, max_tokens=500), live(models))
    assert [c.model for c in reply.candidates] == ["llama3.1:8b"]
    assert reply.filtered == {"llama3.2:1b": "context window 2048 < ~3500 tokens"}
    reply = route(RouteRequestV1(text="summarise", est_prompt_tokens=200_000), live(models))
    assert reply.unservable == "the request needs ~200000 tokens of context; the largest available window is 131072"


def test_a_replica_with_the_model_loaded_beats_a_cold_one():
    models = [model("llama3.2:1b", "gpu1", "gpu2")]
    fleet = FleetState.from_hosts(
        [
            HostStateV1(host="h1", backend="gpu1", loaded_models=[]),
            HostStateV1(host="h2", backend="gpu2", loaded_models=[LoadedModelV1(name="llama3.2:1b")]),
        ]
    )
    assert [c.backend for c in route(RouteRequestV1(text="hi"), live(models)).candidates] == ["gpu1", "gpu2"]
    reply = route(RouteRequestV1(text="hi"), live(models, fleet))
    assert [c.backend for c in reply.candidates] == ["gpu2", "gpu1"]
    assert "loaded on gpu2" in reply.candidates[0].reasons
    assert reply.candidates[0].terms["residency"] == 0.2


def test_residency_can_beat_a_slightly_better_sized_model():
    fleet = FleetState.from_hosts(
        [HostStateV1(host="h1", backend="gpu1", loaded_models=[LoadedModelV1(name="llama3.2:3b")])]
    )
    assert top(RouteRequestV1(text="Hi there!")) == "llama3.2:1b"
    assert top(RouteRequestV1(text="Hi there!"), live(fleet=fleet)) == "llama3.2:3b"


def test_an_unhealthy_backend_and_a_full_host_rank_last():
    models = [model("llama3.2:1b", "a", "b", "c", vram_bytes=2_000_000_000)]
    fleet = FleetState.from_hosts(
        [
            HostStateV1(host="ha", backend="a", backend_ok=False),
            HostStateV1(
                host="hb",
                backend="b",
                gpus=[GpuStateV1(index=0, memory_total_bytes=8 << 30, memory_free_bytes=1 << 30)],
            ),
        ]
    )
    reply = route(RouteRequestV1(text="hi"), live(models, fleet))
    assert [c.backend for c in reply.candidates] == ["c", "b", "a"]
    assert reply.candidates[1].terms["memory"] == -0.1
    assert "a reported down by its gpu-agent" in reply.candidates[2].reasons


def test_terms_add_up_to_the_score_and_candidates_are_sorted():
    reply = route(RouteRequestV1(text=MEDIUM_PROMPT, quality=0.7))
    for c in reply.candidates:
        assert c.score == pytest.approx(sum(c.terms.values()), abs=1e-3)
    assert [c.score for c in reply.candidates] == sorted((c.score for c in reply.candidates), reverse=True)
    assert reply.catalog_version == "test-1"


def test_candidates_are_capped():
    reply = rank(RouteRequestV1(text="hi"), live(), RankingConfig(max_candidates=3))
    assert len(reply.candidates) == 3


def test_an_empty_catalog_gives_no_candidates_and_is_not_unservable():
    reply = route(RouteRequestV1(text="hi"), live([]))
    assert (reply.candidates, reply.unservable, reply.unservable_code) == ([], None, None)


def test_benchmarks_and_measured_speed_show_in_the_reasons():
    models = [model("llama3.2:1b", benchmark=0.42, tokens_per_s=310.0)]
    reasons = route(RouteRequestV1(text="hi"), live(models)).candidates[0].reasons
    assert "benchmark 0.42" in reasons
    assert "~310 tok/s (measured)" in reasons
