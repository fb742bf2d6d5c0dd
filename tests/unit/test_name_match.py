"""Name matching on real-world name pairs: what must match, what must never match."""

from __future__ import annotations

import pytest

from turnout.sync.name_match import LocalModel, NameMatcher, compare, link, normalise
from turnout.sync.sources.base import BenchmarkRow

MATCHES = [
    # (public name, local name, minimum confidence)
    ("meta-llama/Llama-3.1-8B-Instruct", "llama3.1:8b-instruct-q4_K_M", 1.0),
    ("llama-3.1-8b-instruct", "llama3.1:8b", 1.0),
    ("Llama 3.1 Instruct 8B", "llama3.1:8b", 1.0),
    ("meta-llama/Meta-Llama-3-8B-Instruct", "llama3:8b", 1.0),
    ("meta-llama/Llama-3.3-70B-Instruct", "llama3.3:70b-instruct-q4_K_M", 1.0),
    ("Qwen/Qwen2.5-7B-Instruct", "qwen2.5:7b", 1.0),
    ("qwen2.5-72b-instruct", "qwen2.5:72b-instruct-q4_K_M", 1.0),
    ("Qwen/Qwen2.5-Coder-7B-Instruct", "qwen2.5-coder:7b", 1.0),
    ("Qwen/Qwen2.5-7B-Instruct-1M", "qwen2.5:7b", 1.0),
    ("google/gemma-2-9b-it", "gemma2:9b", 1.0),
    ("gemma-2-27b-it", "gemma2:27b-instruct-q8_0", 1.0),
    ("mistralai/Mistral-7B-Instruct-v0.3", "mistral:7b-instruct-v0.3-q4_K_M", 1.0),
    ("microsoft/Phi-3-mini-4k-instruct", "phi3:mini", 1.0),
    ("meta-llama/Llama-3.2-11B-Vision-Instruct", "llama3.2-vision:11b", 1.0),
    ("Qwen/Qwen2.5-VL-7B-Instruct", "qwen2.5vl:7b", 1.0),
    ("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2:135m", 1.0),
    ("hf.co/bartowski/Llama-3.2-3B-Instruct-GGUF:Q4_K_M", "llama3.2:3b", 1.0),
    ("Qwen/Qwen3-30B-A3B", "qwen3:30b-a3b", 0.9),
    ("mistralai/Mixtral-8x7B-Instruct-v0.1", "mixtral:8x7b", 0.85),
    ("mistralai/Mistral-Nemo-Instruct-2407", "mistral-nemo:12b", 0.85),
    ("microsoft/phi-4", "phi4:14b", 0.85),
    ("deepseek-ai/DeepSeek-V3", "deepseek-v3:671b", 0.85),
    ("nomic-ai/nomic-embed-text-v1.5", "nomic-embed-text:latest", 0.85),  # a revision tag on one side only
]

NEVER = [
    ("meta-llama/Llama-3.1-70B-Instruct", "llama3.1:8b"),  # size
    ("meta-llama/Llama-3.1-405B-Instruct", "llama3.1:70b"),  # size
    ("meta-llama/Llama-3.2-3B-Instruct", "llama3.1:8b"),  # version and size
    ("meta-llama/Meta-Llama-3-8B-Instruct", "llama3.1:8b"),  # version
    ("google/gemma-2-2b-it", "gemma:2b"),  # Gemma 2 is not Gemma 1
    ("Qwen/Qwen2.5-7B-Instruct", "qwen2:7b"),  # version
    ("Qwen/Qwen2.5-7B-Instruct", "qwen2.5-coder:7b"),  # variant
    ("Qwen/Qwen2.5-Coder-7B-Instruct", "qwen2.5:7b"),  # variant
    ("Qwen/Qwen3-32B", "qwen3:30b-a3b"),  # dense vs MoE
    ("mistralai/Mixtral-8x22B-Instruct-v0.1", "mixtral:8x7b"),  # size
    ("mistralai/Mistral-7B-v0.1", "mistral:7b-instruct-v0.3"),  # revision
    ("microsoft/Phi-3-medium-4k-instruct", "phi3:mini"),  # size class
    ("nvidia/Llama-3.1-Nemotron-70B-Instruct-HF", "llama3.1:70b"),  # a fine-tune
    ("mlabonne/Meta-Llama-3.1-8B-Instruct-abliterated", "llama3.1:8b"),  # a fine-tune
    ("deepseek-ai/DeepSeek-R1-Distill-Llama-8B", "llama3.1:8b"),  # a distillation
    ("meta-llama/Llama-3.2-11B-Vision-Instruct", "llama3.2:11b"),  # vision variant
    ("meta-llama/Llama-3.1-8B-Instruct", "llama3.1:8b-text-q4_K_M"),  # instruct vs base
    ("gpt-4o-2024-08-06", "llama3.1:8b"),
    ("claude-3-5-sonnet-20241022", "qwen2.5:7b"),
]


@pytest.mark.parametrize(("public", "local", "minimum"), MATCHES)
def test_real_world_names_match(public: str, local: str, minimum: float) -> None:
    conf, why = compare(normalise(public), normalise(local, local=True))
    assert conf >= minimum, why


@pytest.mark.parametrize(("public", "local"), NEVER)
def test_real_world_names_that_must_not_match(public: str, local: str) -> None:
    matcher = NameMatcher([local])
    assert matcher.match(public) is None, compare(normalise(public), normalise(local, local=True))


def test_the_best_candidate_wins_among_many_locals() -> None:
    locals_ = ["llama3.1:8b", "llama3.1:70b", "llama3.2:3b", "llama3:8b", "qwen2.5:7b", "qwen2.5-coder:7b"]
    matcher = NameMatcher(locals_)
    m = matcher.match("meta-llama/Llama-3.1-8B-Instruct")
    assert m is not None and (m.local, m.method, m.confidence) == ("llama3.1:8b", "exact", 1.0)
    coder = matcher.match("Qwen2.5-Coder-7B-Instruct")
    assert coder is not None and coder.local == "qwen2.5-coder:7b"


def test_quantisations_of_one_model_tie_to_the_shortest_name() -> None:
    matcher = NameMatcher(["llama3.1:8b-instruct-q8_0", "llama3.1:8b-instruct-q4_K_M", "llama3.1:8b"])
    m = matcher.match("llama-3.1-8b-instruct")
    assert m is not None and m.local == "llama3.1:8b"
    assert len(matcher.candidates("llama-3.1-8b-instruct")) == 3


def test_local_parameter_count_fills_in_a_missing_size() -> None:
    matcher = NameMatcher(
        [LocalModel("mistral:latest", params_b=7.2), LocalModel("mistral-large:latest", params_b=123)]
    )
    m = matcher.match("mistralai/Mistral-7B-Instruct-v0.3")
    assert m is not None and m.local == "mistral:latest"
    assert m.confidence < 1.0


def test_aliases_are_tried() -> None:
    matcher = NameMatcher(["llama3.1:8b"])
    m = matcher.match("Meta: Llama 3.1 8B (free)", aliases=("meta-llama/Meta-Llama-3.1-8B-Instruct",))
    assert m is not None and m.public == "Meta: Llama 3.1 8B (free)" and m.local == "llama3.1:8b"


def test_overrides_win_and_can_forbid() -> None:
    matcher = NameMatcher(
        ["deepseek-r1:8b", "llama3.1:8b"],
        overrides={"deepseek-ai/DeepSeek-R1-Distill-Llama-8B": "deepseek-r1:8b", "Llama-3.1-8B-Instruct": None},
    )
    m = matcher.match("DEEPSEEK-AI/DeepSeek-R1-Distill-Llama-8B")
    assert m is not None and (m.local, m.method, m.confidence) == ("deepseek-r1:8b", "override", 1.0)
    assert matcher.match("llama-3.1-8b-instruct") is None
    assert NameMatcher(["x:1b"], overrides={"a": "not-a-local-model"}).match("a") is None


def test_threshold_is_configurable() -> None:
    strict = NameMatcher(["phi4:14b"], threshold=0.95)
    assert strict.match("microsoft/phi-4") is None
    assert NameMatcher(["phi4:14b"], threshold=0.8).match("microsoft/phi-4") is not None


def test_normalisation_strips_org_quant_and_context() -> None:
    key = normalise("hf.co/bartowski/Meta-Llama-3.1-8B-Instruct-128k-GGUF:Q4_K_M")
    assert (key.family, key.version, key.size_b, key.instruct) == ("llama", "3.1", 8.0, True)
    assert key.others == ()
    moe = normalise("mixtral:8x7b-instruct-v0.1-q4_0", local=True)
    assert (moe.size_b, moe.active_b, moe.version) == (56.0, 14.0, "0.1")
    assert normalise("qwen3:30b-a3b", local=True).active_b == 3.0
    assert normalise("llama3.1:8b", local=True).instruct is True
    assert normalise("meta-llama/Llama-3.1-8B").instruct is None


def row(model: str, metric: str = "ifeval") -> BenchmarkRow:
    return BenchmarkRow(source="hf", metric=metric, raw_model=model, raw_value=50, score=0.5)


def test_link_gives_each_local_model_one_row_per_metric() -> None:
    matcher = NameMatcher(["llama3.1:8b"])
    rows = [
        row("meta-llama/Llama-3.1-8B"),
        row("meta-llama/Llama-3.1-8B-Instruct"),
        row("meta-llama/Llama-3.1-8B", "bbh"),
    ]
    links = link(rows, matcher)
    assert links[0] is None  # the base model loses to the instruct model for ifeval
    assert links[1] is not None and links[1].local == "llama3.1:8b"
    assert links[2] is not None  # alone for bbh


def test_a_backend_s_own_name_for_a_model_matches_exactly() -> None:
    matcher = NameMatcher([LocalModel("cloud/gpt-4o-mini", upstream=("gpt-4o-mini",)), LocalModel("qwen2.5-coder:7b")])
    cloud = matcher.match("GPT-4o-mini")
    assert cloud is not None and (cloud.local, cloud.confidence, cloud.method) == ("cloud/gpt-4o-mini", 1.0, "exact")
    same = matcher.match("qwen2.5-coder:7b")  # the local spelling itself, not a fuzzy 0.95
    assert same is not None and (same.local, same.confidence) == ("qwen2.5-coder:7b", 1.0)
    assert matcher.match("gpt-4o") is None


def test_the_row_spelling_the_local_name_wins_a_tie() -> None:
    rows = [
        BenchmarkRow(source="s", metric="mmlu", raw_model="meta-llama/Llama-3.1-8B-Instruct", raw_value=1, score=0.5),
        BenchmarkRow(source="s", metric="mmlu", raw_model="llama3.1:8b", raw_value=1, score=0.6),
    ]
    links = link(rows, NameMatcher([LocalModel("llama3.1:8b")]))
    assert links[0] is None and links[1] is not None and links[1].local == "llama3.1:8b"
