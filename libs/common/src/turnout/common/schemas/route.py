"""``scorer.route`` v1: what the gateway tells the scorer about a request, and the answer."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from turnout.common.schemas import WireModel


class RequestKind(StrEnum):
    CHAT = "chat"
    COMPLETION = "completion"
    EMBEDDING = "embedding"


class RouteRequestV1(WireModel):
    kind: RequestKind = RequestKind.CHAT
    requested_model: str | None = Field(default=None, description="None or the virtual model: route for me")
    text: str = Field(default="", description="The prompt text the analysis reads (last user turn, bounded)")
    system_chars: int = 0
    n_messages: int = 1
    has_images: bool = False
    has_tools: bool = False
    token_input: bool = Field(
        default=False,
        description="Embedding input given as token ids (an array of integers, or of integer arrays): only a "
        "backend that accepts token ids can serve it (OpenAI-compatible servers: vLLM, llama.cpp; not Ollama)",
    )
    json_mode: bool = False
    est_prompt_tokens: int = 0
    max_tokens: int | None = None
    stream: bool = False
    client: str | None = Field(default=None, description="API key id or client address, for per-client rules")
    client_ip: str | None = Field(default=None, description="The client's address (also when it has a key id)")
    quality: float | None = Field(default=None, ge=0.0, le=1.0, description="0 = fastest, 1 = best")
    gateway_id: str | None = Field(
        default=None,
        max_length=200,
        description="The gateway process that asks (its in-flight counts' id): the scorer counts the decision on "
        "its replica until that gateway's published counts, taken after it, hold the request",
    )


class PromptAnalysisV1(WireModel):
    category: str = "general"
    complexity: float = 0.0
    level: str = "simple"
    signals: list[str] = Field(default_factory=list)
    embedding: str | None = Field(
        default=None,
        description="The prompt's embedding (base64 float16), stored with the routing decision so that "
        "feedback on the reply can teach the scorer's learned index",
    )


class CandidateV1(WireModel):
    model: str = Field(description="Public model name")
    backend: str = Field(description="Backend (replica) name")
    upstream_model: str = Field(description="The model's name on that backend")
    score: float = 0.0
    reasons: list[str] = Field(default_factory=list)
    terms: dict[str, float] = Field(default_factory=dict)
    load_s: float | None = Field(
        default=None,
        ge=0,
        description="Seconds the backend is expected to spend loading the model before its first byte (the "
        "model is not resident there: a load is needed or under way), from the scorer's VRAM planner; "
        "None: resident, or not known. The gateway adds it, capped, to the attempt's first-byte bound",
    )
    wait_s: float | None = Field(
        default=None,
        ge=0,
        description="Seconds a request is expected to wait for a free slot on this replica (requests in flight "
        "beyond its parallel slots, at its decode speed), from the scorer; None: no wait expected, or not known. "
        "The gateway adds it, with load_s and capped as load_s is, to the attempt's first-byte bound: a queue the "
        "scorer knows of is not a hung backend",
    )


class RouteReplyV1(WireModel):
    """Candidates best first, each a (model, backend replica) with its score, reasons and terms.

    When nothing can serve the request, ``candidates`` is empty, ``unservable`` says why in words
    a client can read, and ``unservable_code`` says what kind of failure it is:

    * ``"model_not_found"`` — the requested model is neither a model nor an alias in the catalog
      (``unservable`` = ``"model 'x' not found"``); the gateway answers 404.
    * ``"unservable"`` — no model can do what the request needs (images but no vision model,
      a prompt over every context window, an embedding model asked to chat …); the gateway
      answers 400.

    Empty candidates with no ``unservable`` means the catalog has nothing routable yet (no
    model discovered); the gateway falls back to its own rules.
    """

    candidates: list[CandidateV1] = Field(default_factory=list)
    analysis: PromptAnalysisV1 = Field(default_factory=PromptAnalysisV1)
    filtered: dict[str, str] = Field(default_factory=dict, description="model -> why it was removed")
    unservable: str | None = Field(default=None, description="Set when no model can possibly serve the request")
    unservable_code: str | None = Field(
        default=None, description="model_not_found (404) | unservable (400); set with unservable"
    )
    catalog_version: str = ""
