"""The gateway's local routing rules when the scorer cannot answer."""

from __future__ import annotations

import pytest

from turnout.common.schemas.catalog import CapabilitiesV1, CatalogModelV1, ReplicaV1
from turnout.common.schemas.route import RequestKind, RouteRequestV1
from turnout.gateway.errors import InvalidRequest, ModelNotFound
from turnout.gateway.fallback import fallback_candidates, target_size_b


def model(name: str, params: float | None, *replicas: str, **caps: bool) -> CatalogModelV1:
    return CatalogModelV1(
        name=name,
        params_b=params,
        capabilities=CapabilitiesV1(**caps),
        replicas=[ReplicaV1(backend=b, upstream_model=name) for b in replicas or ("b1",)],
    )


CATALOG = [
    model("tiny-1b", 1),
    model("small-3b", 3, "b1", "b2"),
    model("mid-8b", 8, tools=True),
    model("big-32b", 32, tools=True),
    model("huge-70b", 70),
    model("eye-7b", 7, vision=True),
    model("embed", 0.1, chat=False, completion=False, embedding=True),
    model("unknown-size", None),
    model("no-replicas", 3, "b1"),
]
CATALOG[-1].replicas.clear()


def names(req: RouteRequestV1) -> list[str]:
    return [c.model for c in fallback_candidates(CATALOG, req)]


@pytest.mark.parametrize(
    ("tokens", "target"), [(0, 3.0), (199, 3.0), (200, 8.0), (999, 8.0), (1000, 14.0), (3999, 14.0), (4000, 1e6)]
)
def test_target_size_grows_with_prompt_length(tokens, target):
    assert target_size_b(tokens) == target


def test_short_prompts_go_to_small_models_long_ones_to_large():
    assert names(RouteRequestV1(est_prompt_tokens=10)) == ["small-3b", "small-3b", "tiny-1b", "eye-7b", "unknown-size"]
    assert names(RouteRequestV1(est_prompt_tokens=500))[:2] == ["mid-8b", "eye-7b"]
    assert names(RouteRequestV1(est_prompt_tokens=9000))[0] == "huge-70b"


def test_capabilities_filter_first():
    assert names(RouteRequestV1(has_images=True)) == ["eye-7b"]
    assert names(RouteRequestV1(has_tools=True, est_prompt_tokens=2000)) == ["mid-8b", "big-32b"]
    assert names(RouteRequestV1(kind=RequestKind.EMBEDDING)) == ["embed"]


def test_a_named_model_gets_all_its_replicas():
    cands = fallback_candidates(CATALOG, RouteRequestV1(requested_model="small-3b"))
    assert [(c.model, c.backend, c.upstream_model) for c in cands] == [
        ("small-3b", "b1", "small-3b"),
        ("small-3b", "b2", "small-3b"),
    ]
    assert cands[0].reasons == ["fallback: requested model"]


def test_a_tagless_name_finds_latest_or_the_only_tag():
    catalog = [model("llama3.1:latest", 8), model("qwen3:4b", 4), model("gemma:2b", 2), model("gemma:7b", 7)]
    assert [c.model for c in fallback_candidates(catalog, RouteRequestV1(requested_model="llama3.1"))] == [
        "llama3.1:latest"
    ]
    assert [c.model for c in fallback_candidates(catalog, RouteRequestV1(requested_model="qwen3"))] == ["qwen3:4b"]
    with pytest.raises(ModelNotFound, match="'gemma' does not exist"):
        fallback_candidates(catalog, RouteRequestV1(requested_model="gemma"))  # two tags: ambiguous


def test_unknown_or_unreachable_named_model_is_not_found():
    with pytest.raises(ModelNotFound, match="'nope' does not exist"):
        fallback_candidates(CATALOG, RouteRequestV1(requested_model="nope"))
    with pytest.raises(ModelNotFound):
        fallback_candidates(CATALOG, RouteRequestV1(requested_model="no-replicas"))


def test_nothing_capable_is_unservable():
    with pytest.raises(InvalidRequest, match=r"needs chat \+ vision \+ tools"):
        fallback_candidates(CATALOG, RouteRequestV1(has_images=True, has_tools=True))
    with pytest.raises(InvalidRequest, match="needs an embedding model"):
        fallback_candidates([model("x", 3)], RouteRequestV1(kind=RequestKind.EMBEDDING))


def test_token_id_embeddings_leave_out_ollama_replicas_and_are_refused_when_none_remains() -> None:
    both = CatalogModelV1(
        name="bge-m3",
        capabilities=CapabilitiesV1(chat=False, completion=False, embedding=True),
        replicas=[
            ReplicaV1(backend="ollama-box", upstream_model="bge-m3", kind="ollama"),
            ReplicaV1(backend="vllm-box", upstream_model="bge-m3", kind="openai"),
        ],
    )
    only_ollama = CatalogModelV1(
        name="nomic",
        capabilities=CapabilitiesV1(chat=False, completion=False, embedding=True),
        replicas=[ReplicaV1(backend="ollama-box", upstream_model="nomic", kind="ollama")],
    )
    tokens = RouteRequestV1(kind=RequestKind.EMBEDDING, token_input=True)
    assert [(c.model, c.backend) for c in fallback_candidates([both, only_ollama], tokens)] == [("bge-m3", "vllm-box")]
    text = RouteRequestV1(kind=RequestKind.EMBEDDING)
    assert len(fallback_candidates([both, only_ollama], text)) == 3
    with pytest.raises(InvalidRequest, match="needs an embedding model on a backend that accepts token ids"):
        fallback_candidates([only_ollama], tokens)
    named = tokens.model_copy(update={"requested_model": "nomic"})
    with pytest.raises(InvalidRequest, match="served only by Ollama backends, which take text input, not token ids"):
        fallback_candidates([both, only_ollama], named)
