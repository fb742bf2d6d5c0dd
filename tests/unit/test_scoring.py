import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.routing_catalog import SPECS, Router
from turnout.common.schemas.catalog import CapabilitiesV1, CatalogModelV1, ReplicaV1
from turnout.common.schemas.route import RequestKind, RouteRequestV1
from turnout.scorer.prompt_analysis import PromptAnalysis
from turnout.scorer.rules import Rules
from turnout.scorer.scoring import (
    OVERALL,
    Constraints,
    Learned,
    ModelSpec,
    ModelState,
    ModelTable,
    ReplicaTable,
    ScoringConfig,
    Weights,
    model_terms,
    rank,
)
from turnout.scorer.terms import Queues, expected_latency_s, expected_ttft_s, expected_wait_s, latency_utility

GREETING = "hi!"
HARD_CODE = "implement a thread-safe LRU cache in Rust with tests"


# --- snapshots on the fixed catalog ------------------------------------------------------


def test_short_greeting_goes_to_a_small_fast_model():
    """At the default preference (0.65) a greeting goes to the 8B, a low preference to the 1B."""
    assert Router().top(GREETING) == "llama3.1:8b"
    assert Router().top(GREETING, quality=0.3) == "llama3.2:1b"


MEDIUM = "Give me some practical advice on planning a week-long trip to Oslo with a small budget."


def test_the_choice_passes_through_the_middle_of_the_catalog_as_the_preference_rises():
    """Latency on a linear scale gives each preference a model in between: the choice goes from
    the 1B through the 7-8B models to the 70B as the preference rises. On a log scale (the speed
    term before) capability and speed both follow log size and nearly cancel, so it jumps from
    the 1B straight to the 70B."""
    tops = [Router().top(MEDIUM, quality=q / 20) for q in range(21)]
    assert tops[0] == "llama3.2:1b" and tops[-1] == "llama3.3:70b"
    assert "llama3.1:8b" in tops
    tops = [Router(cfg=ScoringConfig(speed_scale="log")).top(MEDIUM, quality=q / 20) for q in range(21)]
    assert set(tops) == {"llama3.2:1b", "llama3.3:70b"}


def test_hard_coding_prompt_goes_to_the_large_coder_model():
    r = Router().route(HARD_CODE)
    assert r.candidates[0].model == "qwen2.5-coder:32b"
    assert "coder model for a coding prompt" in r.candidates[0].reasons


def test_images_go_to_a_vision_model():
    r = Router().route("What is in this picture?", has_images=True)
    assert [c.model for c in r.candidates] == ["llava:7b"]
    assert r.filtered["llama3.3:70b"] == "no vision support"


def test_tools_go_to_a_tools_model():
    r = Router().route("What's the weather in Oslo?", has_tools=True)
    assert {c.model for c in r.candidates} == {"llama3.1:8b", "qwen2.5-coder:32b", "llama3.3:70b"}
    assert r.filtered["llama3.2:1b"] == "no tools support"


def test_aliased_and_pinned_names_go_to_their_target():
    router = Router()
    rules = Rules.parse(
        "aliases:\n  gpt-4: llama3.3:70b\n  /gpt-3\\.5.*/: llama3.1:8b\npins:\n  creative: llama3.1:8b\n"
    )
    cons = rules.constraints("gpt-4", None, "general", router.table)
    r = router.route(GREETING, cons=cons)
    assert [c.model for c in r.candidates] == ["llama3.3:70b"]
    assert r.candidates[0].reasons[-1] == "alias 'gpt-4' -> llama3.3:70b"
    assert router.top("x", cons=rules.constraints("gpt-3.5-turbo-0125", None, "general", router.table)) == "llama3.1:8b"
    pinned = router.route("Write a poem about whales", cons=rules.constraints(None, None, "creative", router.table))
    assert pinned.candidates[0].model == "llama3.1:8b"
    assert "pinned for creative prompts: llama3.1:8b" in pinned.candidates[0].reasons


def test_quality_preference_moves_a_prompt_between_models():
    router = Router()
    assert router.top("Tell me about the history of Lisbon", quality=0.0) == "llama3.2:1b"
    assert router.top("Tell me about the history of Lisbon", quality=1.0) == "llama3.3:70b"


# --- filters and fallback ------------------------------------------------------------------


def test_embedding_requests_only_see_embedding_models():
    r = Router().route("embed me", kind=RequestKind.EMBEDDING)
    assert [c.model for c in r.candidates] == ["nomic-embed-text"]


def test_chat_requests_never_see_embedding_only_models():
    r = Router().route(GREETING, limit=None)
    assert "nomic-embed-text" not in {c.model for c in r.candidates}
    assert r.filtered["nomic-embed-text"] == "embedding-only model"


def test_images_without_a_vision_model_are_unservable_by_default():
    specs = tuple(s for s in SPECS if not s.vision)
    r = Router(specs).route("what is this", has_images=True)
    assert r.candidates == ()
    assert (r.unservable_code, r.unservable) == (
        "unservable",
        "no vision-capable model is available for a request with images",
    )


def test_images_without_a_vision_model_can_fall_back_when_configured():
    specs = tuple(s for s in SPECS if not s.vision)
    r = Router(specs, ScoringConfig(unservable_without_vision=False)).route("what is this", has_images=True)
    assert r.candidates and "no vision-capable model: the images will be ignored" in r.candidates[0].reasons


def test_tools_without_a_tools_model_fall_back_to_chat_models():
    specs = tuple(ModelSpec(s.name, s.params_b, replicas=s.replicas) for s in SPECS[:2])
    r = Router(specs).route("weather?", has_tools=True)
    assert r.candidates
    assert "no tools-capable model: routed to a chat model that may ignore the tools" in r.candidates[0].reasons


def test_context_window_filters_and_is_unservable_when_nothing_fits():
    router = Router()
    r = router.route("summarise", est_prompt_tokens=20000, max_tokens=1000, limit=None)
    assert {c.model for c in r.candidates} == {"llama3.1:8b", "qwen2.5-coder:32b", "llama3.3:70b"}
    assert r.filtered["llama3.2:1b"] == "context window 8192 < ~21000 tokens"
    r = router.route("summarise", est_prompt_tokens=200_000)
    assert r.unservable_code == "unservable" and "largest window is 131072" in (r.unservable or "")
    relaxed = Router(cfg=ScoringConfig(relax_context=True)).route("summarise", est_prompt_tokens=200_000)
    assert relaxed.candidates[0].model == "llama3.3:70b"


def test_block_list_is_never_relaxed_and_allow_list_is():
    router = Router()
    rules = Rules.parse("block: ['llava*']\n")
    r = router.route("what is this", has_images=True, cons=rules.constraints(None, None, "general", router.table))
    assert r.unservable_code == "unservable"
    assert r.filtered["llava:7b"] == "blocked by an operator rule"
    allow = Rules.parse("allow: ['llama3.2*']\n")
    r = router.route("describe", has_images=True, cons=allow.constraints(None, None, "general", router.table))
    assert r.candidates[0].model == "llava:7b"
    assert "the allow list leaves no suitable model: ignored for this request" in r.candidates[0].reasons


def test_requested_model_not_found_and_requested_model_honoured():
    router = Router()
    r = router.route(GREETING, cons=Constraints(requested="nope"))
    assert (r.unservable_code, r.unservable) == ("model_not_found", "model 'nope' not found")
    r = router.route(HARD_CODE, cons=Constraints(requested="llama3.2:1b"))
    assert [c.model for c in r.candidates] == ["llama3.2:1b"]


def test_client_backend_rule_restricts_replicas():
    router = Router()
    r = router.route(HARD_CODE, cons=Constraints(backends=frozenset({"ollama-a"})), limit=None)
    assert {c.backend for c in r.candidates} == {"ollama-a"}


# --- terms ---------------------------------------------------------------------------------


def test_terms_sum_to_the_score():
    for c in Router().route(HARD_CODE, limit=None).candidates:
        assert sum(c.terms.values()) == pytest.approx(c.score, abs=1e-3)


def test_min_size_penalises_small_models_on_hard_coding():
    r = {c.model: c for c in Router().route(HARD_CODE, limit=None).candidates}
    assert r["llama3.2:1b"].terms["min_size"] == round(-0.6 * math.log2(8 / 1.2) / 3, 4)  # 2.7 halvings short
    assert "min_size" not in r["llama3.3:70b"].terms
    assert any(x.startswith("below the minimum size for hard coding") for x in r["llama3.2:1b"].reasons)


def test_coder_bonus_on_coding_and_malus_elsewhere():
    router = Router()
    code = {c.model: c for c in router.route(HARD_CODE, limit=None).candidates}
    chat = {c.model: c for c in router.route("Tell me about Lisbon", limit=None).candidates}
    assert code["qwen2.5-coder:32b"].terms["coder"] == 0.15
    assert chat["qwen2.5-coder:32b"].terms["coder"] == -0.075


def test_unknown_model_gets_the_prior_of_measured_peers_of_its_size():
    specs = [
        ModelSpec("a", 8, profile={OVERALL: (0.8, 50)}),
        ModelSpec("b", 8, profile={OVERALL: (0.6, 50)}),
        ModelSpec("c", 70, profile={OVERALL: (0.9, 50)}),
        ModelSpec("unknown", 8),
    ]
    t = ModelTable.build(specs)
    cap = t.capability[OVERALL]
    peers = (0.8 * 50 + 0.6 * 50) / 100  # the fitted line at 8B is the mean of the 8B peers
    assert cap[3] == pytest.approx(peers, abs=0.02)
    assert cap[1] < cap[3] < cap[0]  # neither favoured nor punished


def test_profile_evidence_is_shrunk_towards_the_prior():
    specs = [ModelSpec("few", 8, profile={OVERALL: (1.0, 1)}), ModelSpec("many", 8, profile={OVERALL: (0.7, 200)})]
    cap = ModelTable.build(specs).capability[OVERALL]
    assert cap[0] < 0.9  # one lucky prompt does not make a model great


def test_category_profile_beats_overall():
    specs = [
        ModelSpec("coder", 8, profile={"coding": (0.9, 100), OVERALL: (0.5, 100)}),
        ModelSpec("chat", 8, profile={"coding": (0.3, 100), OVERALL: (0.7, 100)}),
    ]
    router = Router(tuple(specs))
    assert router.top(HARD_CODE, quality=1.0) == "coder"
    assert router.top("Tell me about the weather in Lisbon", quality=1.0) == "chat"


def test_speed_term_prefers_measured_fast_models_at_low_quality():
    specs = (ModelSpec("slow", 8, tokens_per_s=10), ModelSpec("fast", 8, tokens_per_s=200))
    r = {c.model: c for c in Router(specs).route("hello there friend", quality=0.0, limit=None).candidates}
    assert r["fast"].terms["speed"] > r.get("slow").terms.get("speed", 0.0)
    assert "~200 tok/s (measured)" in r["fast"].reasons


def test_the_speed_scale_counts_seconds_alike():
    """Linear: 1 → 2 s costs an eighth of the 1 → 9 s range; on the log scale it cost 0.32 of it."""
    latency = np.array([1.0, 2.0, 9.0])
    assert latency_utility(latency).tolist() == [1.0, 0.875, 0.0]
    assert latency_utility(latency, "log").round(3).tolist() == [1.0, 0.685, 0.0]


def test_speed_term_weighs_a_long_prompts_prefill():
    # "decoder": fast decode, slow to its first token (1 s at the 50-token probe: ~50 tokens/s of
    # prefill); "prefiller": half the decode speed, 50 ms to its first token (~1,000 tokens/s)
    specs = (
        ModelSpec("decoder", 8, tokens_per_s=100, ttft_ms=1000),
        ModelSpec("prefiller", 8, tokens_per_s=50, ttft_ms=50),
    )
    router = Router(specs)
    # a short prompt: 1 s + 256 tokens / 100 = 3.6 s against 0.05 s + 5.1 s
    assert router.top("hello there friend", quality=0.0, est_prompt_tokens=40) == "decoder"
    # 2,000 tokens: 1 s × 40 + 2.6 s against 0.05 s × 40 + 5.1 s
    assert router.top("hello there friend", quality=0.0, est_prompt_tokens=2000) == "prefiller"


def test_expected_ttft_derives_the_prefill_rate_from_the_probe():
    table = ModelTable.build((ModelSpec("m", 8, tokens_per_s=40, ttft_ms=200),), ScoringConfig())
    cfg = ScoringConfig(ttft_probe_tokens=100)
    assert expected_ttft_s(30, table, cfg).tolist() == [0.2]  # shorter than the probe: the probe's TTFT
    assert expected_ttft_s(1100, table, cfg).tolist() == pytest.approx([2.2])  # 500 tokens/s of prefill
    assert expected_latency_s(1100, table, cfg).tolist() == pytest.approx([2.2 + 256 / 40])


def test_expected_ttft_uses_a_measured_prefill_rate():
    # 200 ms at the 100-token probe; 1,000 tokens/s measured: 100 ms of it is prefill, 100 ms overhead
    measured = ModelSpec("m", 8, tokens_per_s=40, ttft_ms=200, prefill_tokens_per_s=1000)
    # 50 ms at the probe but 1,000 tokens/s measured (the probe's prefill alone takes 100 ms): no overhead
    clamped = ModelSpec("c", 8, tokens_per_s=40, ttft_ms=50, prefill_tokens_per_s=1000)
    derived = ModelSpec("d", 8, tokens_per_s=40, ttft_ms=200)
    table = ModelTable.build((measured, clamped, derived), ScoringConfig())
    cfg = ScoringConfig(ttft_probe_tokens=100)
    assert expected_ttft_s(30, table, cfg).tolist() == pytest.approx([0.2, 0.1, 0.2])  # the probe's length
    # 0.1 + 1,100 / 1,000 | 0 + 1.1 | the derived rate (500 tokens/s, no overhead): 2.2
    assert expected_ttft_s(1100, table, cfg).tolist() == pytest.approx([1.2, 1.1, 2.2])
    assert expected_latency_s(1100, table, cfg).tolist() == pytest.approx([1.2 + 6.4, 1.1 + 6.4, 2.2 + 6.4])


def test_a_measured_prefill_rate_wins_long_prompts_for_a_model_slower_to_its_first_token():
    # "quick": 100 ms at the probe, no prefill rate measured (derived: 500 tokens/s);
    # "prefiller": 150 ms at the probe, 5,000 tokens/s measured (140 ms overhead)
    specs = (
        ModelSpec("quick", 8, tokens_per_s=50, ttft_ms=100),
        ModelSpec("prefiller", 8, tokens_per_s=50, ttft_ms=150, prefill_tokens_per_s=5000),
    )
    router = Router(specs)
    assert router.top("hello there friend", quality=0.0, est_prompt_tokens=40) == "quick"
    # 4,000 tokens: 0.1 s × 80 = 8 s against 0.14 s + 0.8 s
    assert router.top("hello there friend", quality=0.0, est_prompt_tokens=4000) == "prefiller"


def test_feedback_and_diversity_terms():
    router = Router()
    n = router.table.size
    fb = np.zeros(n)
    fb[1] = 1.0
    share = np.zeros(n)
    share[0] = 0.9
    state = ModelState(feedback_mean=fb, feedback_n=np.full(n, 20.0), recent_share=share)
    r = {c.model: c for c in router.route(GREETING, state=state, limit=None).candidates}
    assert r["llama3.1:8b"].terms["feedback"] == pytest.approx(0.2 * 20 / 25)
    assert r["llama3.2:1b"].terms["diversity"] == pytest.approx(-0.05 * (0.9 - 1 / n), abs=1e-4)


def test_resident_healthy_idle_replica_beats_a_busy_or_cold_one():
    specs = (
        ModelSpec(
            "m", 8, replicas=(("cold", "m", None), ("warm", "m", None), ("busy", "m", None), ("down", "m", None))
        ),
    )
    router = Router(
        specs,
        resident=frozenset({("warm", "m"), ("busy", "m"), ("down", "m")}),
        unhealthy=frozenset({"down"}),
        inflight={("busy", "m"): 8},
        free_frac={"warm": 0.5, "cold": 0.9},
    )
    r = router.route(GREETING)
    # 8 in flight is twice what a replica serves at once: −0.3 outweighs being loaded (+0.15)
    assert [c.backend for c in r.candidates] == ["warm", "cold", "busy", "down"]
    by = {c.backend: c for c in r.candidates}
    assert by["warm"].terms["resident"] == 0.15
    assert by["down"].terms["unhealthy"] == -1.0
    assert by["busy"].terms["busy"] == -0.3
    assert "8 requests in flight on busy" in by["busy"].reasons


def test_open_circuits_are_filtered_out_unless_nothing_else_is_left():
    specs = (
        ModelSpec("m", 8, replicas=(("a", "m", None), ("b", "m", None), ("c", "m", None))),
        ModelSpec("n", 8, replicas=(("a", "n", None),)),
    )
    some = Router(specs, open_backends=frozenset({"a"}), open_replicas=frozenset({("b", "m")})).route(GREETING)
    assert [(c.model, c.backend) for c in some.candidates] == [("m", "c")]
    assert not any("circuit" in n for n in some.notes)
    every = Router(specs, open_backends=frozenset({"a", "b", "c"})).route(GREETING)
    assert sorted((c.model, c.backend) for c in every.candidates) == [("m", "a"), ("m", "b"), ("m", "c"), ("n", "a")]
    assert "every suitable replica's circuit is open: listed anyway (the gateway retries them)" in every.notes


def test_a_negative_in_flight_count_is_no_bonus_and_no_division_by_zero():
    specs = (ModelSpec("m", 8, replicas=(("minus", "m", None), ("zero", "m", None), ("four", "m", None))),)
    r = Router(specs, inflight={("minus", "m"): -4, ("four", "m"): 4}).route(GREETING)
    busy = {c.backend: c.terms.get("busy", 0.0) for c in r.candidates}
    assert busy == {"minus": 0.0, "zero": 0.0, "four": -0.15}


def test_a_named_model_ranks_only_its_replicas_by_residency_and_load():
    specs = (
        ModelSpec("m", 8, replicas=(("cold", "m", None), ("warm", "m", None), ("busy", "m", None))),
        ModelSpec("other", 70, replicas=(("warm", "other", None),)),
    )
    router = Router(
        specs, resident=frozenset({("warm", "m"), ("busy", "m"), ("warm", "other")}), inflight={("busy", "m"): 2}
    )
    r = router.route(HARD_CODE, cons=Constraints(requested="m"))
    assert [(c.model, c.backend) for c in r.candidates] == [("m", "warm"), ("m", "busy"), ("m", "cold")]
    assert [dict(c.terms) for c in r.candidates] == [{"resident": 0.15}, {"resident": 0.15, "busy": -0.075}, {}]
    assert [c.score for c in r.candidates] == [0.15, 0.075, 0.0]


def test_no_room_penalty():
    specs = (ModelSpec("m", 8, replicas=(("full", "m", None), ("roomy", "m", None))),)
    r = Router(specs, no_room=frozenset({("full", "m")})).route(GREETING)
    assert r.candidates[0].backend == "roomy"
    assert r.candidates[1].terms["no_room"] == -0.2


def test_tiers_policy_with_moe_and_overrides():
    specs = (
        ModelSpec("small", 3),
        ModelSpec("moe", 30, active_params_b=3),  # sqrt(30*3) ≈ 9.5B effective: small
        ModelSpec("mid", 14, tier="large"),
        ModelSpec("big", 70),
    )
    cfg = ScoringConfig(policy="tiers")
    t = ModelTable.build(specs, cfg)
    assert t.tier.tolist() == [0, 0, 2, 2]
    router = Router(specs, cfg)
    r = router.route(HARD_CODE, quality=0.5, limit=None)
    assert {c.model for c in r.candidates[:2]} == {"mid", "big"}
    assert router.route(GREETING, quality=0.5).candidates[0].model in {"small", "moe"}


def test_catalog_models_convert_to_specs():
    m = CatalogModelV1(
        name="x:8b",
        params_b=8,
        capabilities=CapabilitiesV1(tools=True),
        quality={"coding": 0.7},
        benchmark=0.6,
        replicas=[ReplicaV1(backend="b", upstream_model="x:8b")],
    )
    s = ModelSpec.from_catalog(m)
    assert (s.tools, s.profile["coding"], s.benchmark[OVERALL], s.replicas) == (
        True,
        (0.7, 10.0),
        0.6,
        (("b", "x:8b", None),),
    )


def test_profiles_under_the_profiling_suites_category_names_steer_routing():
    """The profiler grades ``code`` and ``extraction``; the prompt analysis says ``coding`` and
    ``summarisation``. A model's graded coding score must decide a coding prompt, and a category
    the suite does not grade (translation) reads the mean of the graded ones, not size alone."""

    def model(name: str, quality: dict[str, float]) -> ModelSpec:
        return ModelSpec.from_catalog(
            CatalogModelV1(
                name=name, params_b=8, quality=quality, replicas=[ReplicaV1(backend="b", upstream_model=name)]
            )
        )

    coder_ish = model("a:8b", {"code": 0.95, "extraction": 0.9, "general": 0.3, "creative": 0.4})
    chatty = model("b:8b", {"code": 0.2, "extraction": 0.3, "general": 0.9, "creative": 0.5})
    assert coder_ish.profile["coding"] == (0.95, 10.0)
    assert coder_ish.profile["summarisation"] == (0.9, 10.0)
    assert coder_ish.profile[OVERALL] == (pytest.approx(0.6375), 10.0)
    router = Router((coder_ish, chatty))
    assert router.top(HARD_CODE, quality=1.0) == "a:8b"
    assert router.top("Tell me about the history of Lisbon", quality=1.0) == "b:8b"
    table = router.table
    assert table.capability_for("translation")[0] > table.capability_for("translation")[1]
    assert table.capability_for("summarisation")[0] > table.capability_for("summarisation")[1]


def test_learned_estimates_are_blended_by_neighbour_mass():
    specs = (ModelSpec("a", 8), ModelSpec("b", 8))
    router = Router(specs)
    strong_b = Learned(p=np.array([0.1, 0.9]), n_eff=np.array([50.0, 50.0]))
    weak_b = Learned(p=np.array([0.1, 0.9]), n_eff=np.array([0.01, 0.01]))
    r = router.route("Tell me about Lisbon", quality=1.0, learned=strong_b, limit=None)
    assert r.candidates[0].model == "b"
    assert "learned from similar graded prompts" in " ".join(r.candidates[0].reasons)
    r = {c.model: c for c in router.route("Tell me about Lisbon", quality=1.0, learned=weak_b, limit=None).candidates}
    assert abs(r["b"].terms.get("learned", 0.0)) < 0.01


# --- properties ----------------------------------------------------------------------------

sizes = st.floats(min_value=0.3, max_value=400, allow_nan=False)
dense_specs = st.lists(
    st.tuples(sizes, st.booleans(), st.booleans(), st.booleans(), st.sampled_from([None, 4096, 32768, 131072])),
    min_size=1,
    max_size=12,
)
analyses = st.builds(
    lambda cat, c: PromptAnalysis(cat, c, "simple" if c < 0.33 else "hard" if c >= 0.66 else "medium", (), 50, 1.0),
    st.sampled_from(["coding", "reasoning", "creative", "summarisation", "translation", "general"]),
    st.floats(min_value=0, max_value=1),
)


def _specs(rows):
    return tuple(
        ModelSpec(f"m{i}", size, coder=coder, tools=tools, vision=vision, context_length=ctx)
        for i, (size, coder, tools, vision, ctx) in enumerate(rows)
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=dense_specs, a=analyses, q=st.floats(min_value=0, max_value=1), fb=st.floats(min_value=-1, max_value=1))
def test_scores_are_finite(rows, a, q, fb):
    t = ModelTable.build(_specs(rows))
    n = t.size
    state = ModelState(np.full(n, fb), np.full(n, 3.0), np.full(n, 1.0 / n))
    learned = Learned(np.linspace(0, 1, n), np.linspace(0, 10, n))
    terms = model_terms(a, q, t, ScoringConfig(), state, learned)
    assert np.isfinite(terms.values).all()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=dense_specs, a=analyses, qs=st.lists(st.floats(min_value=0, max_value=1), min_size=2, max_size=6))
def test_raising_quality_never_picks_a_smaller_model(rows, a, qs):
    t = ModelTable.build(_specs(rows))
    reps = ReplicaTable.from_specs(t)
    req = RouteRequestV1(text="x")
    chosen = []
    for q in sorted(qs):
        r = rank(req.model_copy(update={"quality": q}), a, t, reps, ScoringConfig(), limit=1)
        chosen.append(float(t.params_b[r.chosen]))
    assert chosen == sorted(chosen)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=dense_specs,
    images=st.booleans(),
    tools=st.booleans(),
    tokens=st.integers(min_value=1, max_value=200_000),
    max_tokens=st.one_of(st.none(), st.integers(min_value=1, max_value=8000)),
)
def test_filters_are_never_violated(rows, images, tools, tokens, max_tokens):
    t = ModelTable.build(_specs(rows))
    reps = ReplicaTable.from_specs(t)
    req = RouteRequestV1(text="x", has_images=images, has_tools=tools, est_prompt_tokens=tokens, max_tokens=max_tokens)
    a = PromptAnalysis("general", 0.5, "medium", (), tokens, 1.0)
    r = rank(req, a, t, reps, ScoringConfig(), limit=None)
    need = tokens + (max_tokens or 0)
    if images and not t.vision.any():
        assert r.unservable_code == "unservable"
    for c in r.candidates:
        i = t.index[c.model]
        assert not images or t.vision[i]
        assert not tools or t.tools[i] or not (t.tools & t.vision if images else t.tools).any()
        assert t.context[i] >= need
        assert math.isfinite(c.score)
    if r.unservable is None:
        assert r.candidates


def test_weights_are_configurable():
    cfg = ScoringConfig(weights=Weights(speed=0.0, cost=0.0, capability=1.0))
    assert Router(cfg=cfg).top("Tell me about Lisbon", quality=0.01) == "llama3.3:70b"


def _wait_table(n: int, tps: list[float]) -> ModelTable:
    """``n`` models ``m0…``, each on backends ``a`` and ``b``, 4 GiB each, at the given tokens/s."""
    specs = tuple(
        ModelSpec(
            f"m{i}", 8, tokens_per_s=tps[i], vram_bytes=4 * 2**30, replicas=(("a", f"m{i}", None), ("b", f"m{i}", None))
        )
        for i in range(n)
    )
    return ModelTable.build(specs)


def test_expected_wait_counts_only_the_requests_beyond_the_parallel_slots():
    cfg = ScoringConfig(replica_parallel=4.0, wait_tokens=200.0)
    t = _wait_table(5, [100.0, 100.0, 100.0, 100.0, 20.0])
    counts = [0, 3, 4, 8, 8]
    everywhere = frozenset((b, f"m{i}") for i in range(5) for b in "ab")
    reps = ReplicaTable.from_specs(t, resident=everywhere, inflight={("a", f"m{i}"): c for i, c in enumerate(counts)})
    on_a = [j for j, b in enumerate(reps.backend) if b == "a"]
    assert expected_wait_s(reps, cfg)[on_a].tolist() == [0.0, 0.0, 2.0, 10.0, 50.0]


def test_a_load_waiting_for_room_holds_up_its_backend_until_a_model_drains():
    """Backend ``a`` holds m0 and m1 (its limit: 2 models on 1 GPU), both serving; a request for
    m2 there waits for the less busy one to drain (2 × 256 / 100 s) and, once such a request is
    queued, so does every request on ``a``. Backend ``b`` has room: m2's load there waits for
    nothing (its own load is the gateway's ``load_s``), m0 there only for the load queued ahead."""
    cfg = ScoringConfig(replica_parallel=4.0, wait_tokens=256.0, max_loaded_per_gpu=2)
    t = _wait_table(3, [100.0, 100.0, 100.0])
    reps = ReplicaTable.from_specs(
        t, resident=frozenset({("a", "m0"), ("a", "m1")}), inflight={("a", "m0"): 2, ("a", "m1"): 5}
    )
    queues = Queues.build(reps, t.rep_vram, {"a": 1, "b": 1}, cfg)
    keys = list(zip(reps.backend, reps.upstream, strict=True))
    wait = dict(zip(keys, expected_wait_s(reps, cfg, queues).tolist(), strict=True))
    assert wait[("a", "m2")] == pytest.approx(5.12)
    assert wait[("a", "m0")] == 0.0 and wait[("a", "m1")] == pytest.approx(5.12)  # a slot: 2 ahead beyond 4
    assert wait[("b", "m2")] == 0.0
    queued = replace(
        reps,
        inflight=reps.inflight + np.array([k == ("a", "m2") or k == ("b", "m1") for k in keys]),
    )
    wait = dict(zip(keys, expected_wait_s(queued, cfg, queues).tolist(), strict=True))
    assert wait[("a", "m0")] == pytest.approx(5.12)  # head-of-line: behind m2's load, which waits for m0
    assert wait[("a", "m1")] == pytest.approx(5.12 + 5.12)
    assert wait[("b", "m0")] == pytest.approx(1.0 + 4 / 2.5)  # m1's load on b goes first
    assert wait[("b", "m1")] == 0.0  # joins the load under way (its own: not counted here)
    assert expected_wait_s(queued, cfg).tolist() == expected_wait_s(queued, cfg, None).tolist()
    assert wait[("a", "m2")] == pytest.approx(5.12)


def test_the_speed_term_counts_a_replica_s_wait_as_seconds_of_its_reply():
    """Two equal replicas of the best model: the one with a queue loses exactly what the speed
    term gives the same seconds (``w.speed · (1−q) · wait / span``), and at no load the ranking
    is the one without the wait term; with ``queue_aware`` off the wait does not count."""
    cfg = ScoringConfig()
    t = _wait_table(3, [200.0, 100.0, 50.0])
    reps = ReplicaTable.from_specs(t)
    a = PromptAnalysis("general", 0.3, "simple", (), 30, 1.0)
    req = RouteRequestV1(text="hi", quality=0.5)
    calm = rank(req, a, t, reps, cfg, limit=None)
    wait = np.where(np.array(reps.backend) == "a", 4.0, 0.0)
    busy = rank(req, a, t, reps, cfg, limit=None, wait_s=wait)
    by = {(c.model, c.backend): c for c in busy.candidates}
    span = float(expected_latency_s(a.tokens, t, cfg).max() - expected_latency_s(a.tokens, t, cfg).min())
    for m in ("m0", "m1", "m2"):
        assert by[(m, "a")].terms["wait"] == pytest.approx(-cfg.weights.speed * 0.5 * 4.0 / span, abs=1e-4)
        assert by[(m, "a")].score < by[(m, "b")].score
    assert busy.candidates[0].backend == "b"
    assert rank(req, a, t, reps, cfg, limit=None, wait_s=np.zeros(reps.size)) == calm
    off = rank(req, a, t, reps, replace(cfg, queue_aware=False), limit=None, wait_s=wait)
    assert [c.score for c in off.candidates] == [c.score for c in calm.candidates]
