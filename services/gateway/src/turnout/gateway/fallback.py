"""Local routing when the scorer cannot answer: simple, predictable rules over the last catalog.

1. A concrete model name: that model's replicas, or :class:`ModelNotFound`.
2. Otherwise keep the models that can serve the request (embedding for embeddings; chat models
   for chat and completions; vision when there are images; tools when there are tools), then
   order them by how close their size is to a target that grows with the prompt length
   (~3B for a short question, ~8B under 1k tokens, ~14B under 4k, the largest beyond), smaller
   first on ties. Each model contributes its replicas, in catalog order.

Embedding input given as token ids leaves out replicas on Ollama backends (text only), as the
scorer does.
"""

from __future__ import annotations

from turnout.common.backends.config import BackendKind
from turnout.common.backends.names import untagged_match
from turnout.common.schemas.catalog import CatalogModelV1, ReplicaV1
from turnout.common.schemas.route import CandidateV1, RequestKind, RouteRequestV1
from turnout.gateway.errors import InvalidRequest, ModelNotFound

UNKNOWN_SIZE_B = 7.0
MAX_MODELS = 4


def target_size_b(est_prompt_tokens: int) -> float:
    """The model size (billions of parameters) the fallback aims for at this prompt length."""
    if est_prompt_tokens < 200:
        return 3.0
    if est_prompt_tokens < 1000:
        return 8.0
    if est_prompt_tokens < 4000:
        return 14.0
    return 1e6  # as large as there is


def can_serve(model: CatalogModelV1, req: RouteRequestV1) -> bool:
    """Whether ``model``'s capabilities fit the request (its kind, images, tools)."""
    caps = model.capabilities
    if req.kind is RequestKind.EMBEDDING:
        return caps.embedding
    if caps.embedding and not caps.chat:
        return False
    if req.kind is RequestKind.COMPLETION and not caps.completion:
        return False
    if req.kind is RequestKind.CHAT and not caps.chat:
        return False
    if req.has_images and not caps.vision:
        return False
    return not (req.has_tools and not caps.tools)


def _replicas(model: CatalogModelV1, req: RouteRequestV1) -> list[ReplicaV1]:
    """The model's replicas that can take the request: for token-id input, not Ollama's."""
    if not req.token_input:
        return model.replicas
    return [r for r in model.replicas if r.kind != BackendKind.OLLAMA.value]


def _candidates(model: CatalogModelV1, req: RouteRequestV1, reason: str) -> list[CandidateV1]:
    return [
        CandidateV1(model=model.name, backend=r.backend, upstream_model=r.upstream_model, reasons=[reason])
        for r in _replicas(model, req)
    ]


def fallback_candidates(
    models: list[CatalogModelV1], req: RouteRequestV1, hidden: frozenset[str] = frozenset()
) -> list[CandidateV1]:
    """Candidates chosen locally when the scorer does not answer: the named model, or the best fit by size."""
    if req.requested_model is not None:
        name = req.requested_model
        if not any(m.name == name for m in models):
            name = untagged_match(name, (m.name for m in models)) or name
        model = next((m for m in models if m.name == name), None)
        if model is None or not model.replicas:
            raise ModelNotFound(f"The model '{req.requested_model}' does not exist", param="model")
        if req.token_input and not _replicas(model, req):
            raise InvalidRequest(
                f"model '{model.name}' is served only by Ollama backends, which take text input, not token ids",
                code="unservable",
            )
        return _candidates(model, req, "fallback: requested model")
    usable = [m for m in models if _replicas(m, req) and m.name not in hidden and can_serve(m, req)]
    if not usable:
        need = _needs(req)
        raise InvalidRequest(f"no available model can serve this request ({need})", code="unservable")
    target = target_size_b(req.est_prompt_tokens)

    def key(m: CatalogModelV1) -> tuple[float, float]:
        size = m.params_b if m.params_b is not None else UNKNOWN_SIZE_B
        return (abs(size - target), size)

    ranked = sorted(usable, key=key)[:MAX_MODELS]
    size = "the largest model" if target >= 1e6 else f"size closest to {target:g}B"
    reason = f"fallback: {size} for ~{req.est_prompt_tokens} prompt tokens"
    out: list[CandidateV1] = []
    for m in ranked:
        out.extend(_candidates(m, req, reason))
    return out


def _needs(req: RouteRequestV1) -> str:
    if req.kind is RequestKind.EMBEDDING:
        return "needs an embedding model" + (" on a backend that accepts token ids" if req.token_input else "")
    needs = [req.kind.value]
    if req.has_images:
        needs.append("vision")
    if req.has_tools:
        needs.append("tools")
    return "needs " + " + ".join(needs)
