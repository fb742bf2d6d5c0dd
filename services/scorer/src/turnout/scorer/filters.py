"""The hard filters of a routing decision and their documented fallback (``scoring.py``'s
docstring lists them): which models may serve a request at all, with the reason each removed
model was dropped. Pure, over :class:`~turnout.scorer.catalog.ModelTable` masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from turnout.common.schemas.route import RequestKind, RouteRequestV1
from turnout.scorer.catalog import B, ModelTable
from turnout.scorer.scoring_config import ScoringConfig


@dataclass(frozen=True, slots=True)
class Constraints:
    """What operator rules impose on one request (built by ``rules.py``)."""

    requested: str | None = None
    """A concrete model (after alias resolution); ``None`` routes for me."""
    requested_how: str = ""
    pinned: str | None = None
    """A model pinned for the prompt's category: ranked first when it passes the filters."""
    allowed: B | None = None
    blocked: B | None = None
    backends: frozenset[str] | None = None
    """Only replicas on these backends (a per-client rule)."""
    quality: float | None = None
    """Quality preference from a client rule (the request's own value wins)."""
    notes: tuple[str, ...] = ()


@dataclass(slots=True)
class Selection:
    mask: B
    filtered: dict[str, str]
    notes: list[str]
    unservable: str | None = None


def _drop(sel: Selection, table: ModelTable, removed: B, why: str) -> None:
    for i in np.flatnonzero(removed & sel.mask):
        sel.filtered.setdefault(table.specs[i].name, why)
    sel.mask = sel.mask & ~removed


def select(
    kind: RequestKind,
    has_images: bool,
    has_tools: bool,
    need_tokens: int,
    table: ModelTable,
    cons: Constraints,
    cfg: ScoringConfig,
) -> Selection:
    """The hard filters and their documented fallback (module docstring), kept per request shape
    in :attr:`ModelTable.derived`: they depend on the kind, images, tools, the allow/block masks
    (cached per table by the rules) and the needed context only when some window is shorter.
    Measured at 1,000 models: 58 → ~3 µs for a tools request. The returned ``filtered`` is
    shared: read it, do not change it (``notes`` is the caller's own)."""
    shortest = table.derived.get("shortest_context")
    if shortest is None:
        shortest = table.remember("shortest_context", float(table.context.min()) if table.size else np.inf)
    key = (
        "select",
        kind,
        has_images,
        has_tools,
        need_tokens if need_tokens > shortest else 0,
        id(cons.allowed),
        id(cons.blocked),
        id(cfg),
    )
    hit = table.derived.get(key)
    if hit is None:
        sel = _select(kind, has_images, has_tools, need_tokens, table, cons, cfg)
        sel.mask.flags.writeable = False
        # the masks and config are held so that their ids stay theirs while the entry lives
        hit = table.remember(key, (sel, cons.allowed, cons.blocked, cfg))
    sel = hit[0]
    return Selection(sel.mask, sel.filtered, list(sel.notes), sel.unservable)


def _select(
    kind: RequestKind,
    has_images: bool,
    has_tools: bool,
    need_tokens: int,
    table: ModelTable,
    cons: Constraints,
    cfg: ScoringConfig,
) -> Selection:
    sel = Selection(mask=np.ones(table.size, dtype=bool), filtered={}, notes=[])
    if cons.blocked is not None:
        _drop(sel, table, cons.blocked, "blocked by an operator rule")
    if kind is RequestKind.EMBEDDING:
        _drop(sel, table, ~table.embedding, "not an embedding model")
        if not sel.mask.any():
            sel.unservable = "no embedding model is available"
        return sel
    generates = table.chat if kind is RequestKind.CHAT else table.completion
    _drop(sel, table, ~generates, "embedding-only model" if kind is RequestKind.CHAT else "no completion support")
    if not sel.mask.any():
        sel.unservable = f"no model supporting {kind.value} is available"
        return sel
    _modality(sel, table, has_images, has_tools, cfg)
    if sel.unservable is not None:
        return sel
    fits = table.context >= need_tokens
    if not (sel.mask & fits).any():
        if not cfg.relax_context:
            largest = float(table.context[sel.mask].max())
            sel.unservable = f"the request needs ~{need_tokens} tokens of context; the largest window is {largest:.0f}"
            return sel
        best = np.flatnonzero(sel.mask)[int(np.argmax(table.context[sel.mask]))]
        fits = np.zeros(table.size, dtype=bool)
        fits[best] = True
        sel.notes.append(f"no window fits ~{need_tokens} tokens: using the largest")
    for i in np.flatnonzero(sel.mask & ~fits):
        sel.filtered.setdefault(table.specs[i].name, f"context window {table.context[i]:.0f} < ~{need_tokens} tokens")
    sel.mask = sel.mask & fits
    if cons.allowed is not None:
        if (sel.mask & cons.allowed).any():
            _drop(sel, table, ~cons.allowed, "not in the allow list")
        else:
            sel.notes.append("the allow list leaves no suitable model: ignored for this request")
    return sel


def _modality(sel: Selection, table: ModelTable, has_images: bool, has_tools: bool, cfg: ScoringConfig) -> None:
    if has_images:
        if (sel.mask & table.vision).any():
            _drop(sel, table, ~table.vision, "no vision support")
        elif cfg.unservable_without_vision:
            sel.unservable = "no vision-capable model is available for a request with images"
            return
        else:
            sel.notes.append("no vision-capable model: the images will be ignored")
    if has_tools:
        if (sel.mask & table.tools).any():
            _drop(sel, table, ~table.tools, "no tools support")
        else:
            sel.notes.append("no tools-capable model: routed to a chat model that may ignore the tools")


def select_requested(req: RouteRequestV1, idx: int, need: int, table: ModelTable) -> Selection:
    name = table.specs[idx].name
    sel = Selection(mask=np.zeros(table.size, dtype=bool), filtered={}, notes=[])
    if req.kind is RequestKind.EMBEDDING:
        if not table.embedding[idx]:
            sel.unservable = f"model '{name}' is not an embedding model"
    else:
        generates = table.chat[idx] if req.kind is RequestKind.CHAT else table.completion[idx]
        if not generates:
            sel.unservable = f"model '{name}' cannot serve {req.kind.value} requests"
        if req.has_images and not table.vision[idx]:
            sel.notes.append("the requested model has no vision support")
        if req.has_tools and not table.tools[idx]:
            sel.notes.append("the requested model has no tools support")
        if table.context[idx] < need:
            sel.notes.append(f"the prompt may exceed the model's context window ({table.context[idx]:.0f})")
    if sel.unservable is None:
        sel.mask[idx] = True
    return sel


TEXT_ONLY = "token-id input: served only by Ollama backends, which take text, not token ids"


def token_input_replicas(rmask: B, table: ModelTable, sel: Selection) -> B:
    """Filter 5 of ``scoring.py``: embedding input given as token ids goes only to replicas whose
    backend accepts token ids (OpenAI-compatible servers: vLLM, llama.cpp), never Ollama's, which
    takes text only. A model left with no replica is listed in ``filtered``; one that keeps some
    gets a note naming the backends left out. Nothing left: ``sel.unservable`` says why."""
    kept = rmask & table.rep_token_ids
    if not (rmask & ~kept).any():
        return kept
    gone = np.unique(table.rep_model[rmask & ~kept])
    alive = set(np.unique(table.rep_model[kept]).tolist())
    filtered = dict(sel.filtered)  # the selection's map is shared with the filter cache: a copy
    for i in gone.tolist():
        name = table.specs[i].name
        if i not in alive:
            filtered.setdefault(name, TEXT_ONLY)
        else:
            backends = sorted({table.rep_backend[j] for j in np.flatnonzero(rmask & ~kept) if table.rep_model[j] == i})
            sel.notes.append(f"token-id input: {name}'s replicas on {', '.join(backends)} (Ollama: text only) left out")
    sel.filtered = filtered
    if not kept.any():
        sel.unservable = (
            "token-id input needs a backend that accepts token ids (an OpenAI-compatible server such as vLLM or "
            "llama.cpp); the models that could serve this request are served only by Ollama, which takes text: "
            "send the input as text"
        )
    return kept


def without_open_circuits(rmask: B, circuit_open: B, sel: Selection) -> B:
    """Replicas whose circuit the gateways opened are left out (filter 6 in ``scoring.py``);
    when that leaves none, all are kept with a note (the gateway answers 503 + Retry-After or
    probes one whose cooldown is over)."""
    if not circuit_open.any():
        return rmask
    closed = rmask & ~circuit_open
    if closed.any():
        return closed
    if rmask.any():
        sel.notes.append("every suitable replica's circuit is open: listed anyway (the gateway retries them)")
    return rmask
