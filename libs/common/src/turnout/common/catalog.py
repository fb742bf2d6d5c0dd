"""The model catalog: what a discovered model is (facts from the backend and the name), how it
is keyed for matching, and the snapshot the scorer serves from (gateways fall back on it).

* :func:`model_facts` — family, sizes, quantisation, context window and capabilities of one
  upstream model. Capabilities come from the backend when it says (Ollama ``/api/show``
  ``capabilities``), else from the name (:func:`parse_model_name`); sizes from Ollama's
  ``details.parameter_size`` when present (MoE active size from the name).
* :func:`match_key` — (normalised family, size) of a model name, used to match benchmark rows
  to local models and to share scores between quantisations of one model.
* :func:`load_snapshot` — the routable catalog from Postgres: active models with their active
  deployments on active backends, the latest profile per model, and benchmark averages.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from turnout.common.backends.clients import UpstreamModel
from turnout.common.backends.names import parse_model_name
from turnout.common.db.models import Backend, Benchmark, Deployment, Model, Profile
from turnout.common.schemas.catalog import CapabilitiesV1, CatalogModelV1, CatalogSnapshotV1, ReplicaV1

_PARAM_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMBT])\s*$", re.I)
_UNIT = {"K": 1e-6, "M": 1e-3, "B": 1.0, "T": 1e3}
_VENDOR_PREFIXES = ("meta-", "mistralai-", "google-", "microsoft-", "nvidia-", "ibm-", "deepseek-ai-", "alibaba-")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def parse_parameter_size(text: Any) -> float | None:
    """Ollama's ``parameter_size`` ("8.0B", "567.72M") in billions."""
    if not isinstance(text, str):
        return None
    m = _PARAM_SIZE.match(text)
    if not m:
        return None
    return round(float(m.group(1)) * _UNIT[m.group(2).upper()], 3)


def derive_capabilities(upstream_name: str, backend_capabilities: Sequence[str] = ()) -> CapabilitiesV1:
    """What a model can do: the backend's own list when it gave one, else what the name says."""
    info = parse_model_name(upstream_name)
    caps = {c.lower() for c in backend_capabilities}
    if caps:
        generates = "completion" in caps
        return CapabilitiesV1(
            chat=generates,
            completion=generates,
            vision="vision" in caps,
            tools="tools" in caps,
            embedding="embedding" in caps,
            json_mode=generates,
        )
    return CapabilitiesV1(
        chat=not info.embedding,
        completion=not info.embedding,
        vision=info.vision,
        tools=info.tools_likely and not info.embedding,
        embedding=info.embedding,
        json_mode=not info.embedding,
    )


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """One model's row in ``models`` as discovery writes it."""

    name: str
    family: str
    params_b: float | None
    active_params_b: float | None
    quant: str | None
    context_length: int | None
    size_bytes: int | None
    capabilities: CapabilitiesV1
    details: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """The facts as a ``models`` row (column → value)."""
        return {
            "name": self.name,
            "family": self.family,
            "params_b": self.params_b,
            "active_params_b": self.active_params_b,
            "quant": self.quant,
            "context_length": self.context_length,
            "size_bytes": self.size_bytes,
            "capabilities": self.capabilities.model_dump(),
            "details": self.details,
        }


def model_facts(public_name: str, upstream: UpstreamModel) -> ModelFacts:
    """What the name and the backend's details tell about a model: family, sizes, quantisation."""
    info = parse_model_name(upstream.name)
    d = upstream.details or {}
    params = parse_parameter_size(d.get("parameter_size")) or info.params_b
    if info.is_moe:
        active = info.active_params_b
    elif params is not None:
        active = params
    else:
        active = info.active_params_b
    quant = d.get("quantization_level") if isinstance(d.get("quantization_level"), str) else None
    details: dict[str, Any] = {"coder": info.coder, "caps_source": "backend" if upstream.capabilities else "name"}
    if upstream.capabilities:
        details["backend_capabilities"] = list(upstream.capabilities)
    for key in ("family", "families", "format", "parameter_size", "quantization_level", "owned_by"):
        if key in d and d[key] is not None:
            details[key] = d[key]
    return ModelFacts(
        name=public_name,
        family=info.family,
        params_b=params,
        active_params_b=active,
        quant=quant or info.quant,
        context_length=upstream.context_length,
        size_bytes=upstream.size_bytes,
        capabilities=derive_capabilities(upstream.name, upstream.capabilities),
        details=details,
    )


FACT_FIELDS = ("family", "params_b", "active_params_b", "quant", "context_length", "size_bytes", "capabilities")
"""The ``models`` columns discovery writes (besides ``details``); a change in one changes the catalog."""


def merge_model_row(new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    """Merge what one backend says about a model into what the catalog already holds, so that a
    backend that knows less (an OpenAI-compatible server: no size, no capabilities) never erases
    what another reported: a missing fact keeps its old value, and capabilities a backend stated
    beat capabilities guessed from the name."""
    if old is None:
        return dict(new)
    merged = dict(new)
    for key in ("params_b", "active_params_b", "quant", "context_length", "size_bytes"):
        if merged.get(key) is None:
            merged[key] = old.get(key)
    old_details = old.get("details") or {}
    details = {**old_details, **(new.get("details") or {})}
    if details.get("caps_source") == "name" and old_details.get("caps_source") == "backend":
        merged["capabilities"] = old.get("capabilities")
        details["caps_source"] = "backend"
        if "backend_capabilities" in old_details:
            details["backend_capabilities"] = old_details["backend_capabilities"]
    merged["details"] = details
    return merged


def normalize_family(family: str) -> str:
    """A family name without vendor prefix or punctuation, lower case (``Meta-Llama`` → ``llama``)."""
    low = family.lower()
    for prefix in _VENDOR_PREFIXES:
        if low.startswith(prefix):
            low = low[len(prefix) :]
            break
    return _NON_ALNUM.sub("", low)


def match_key(name: str) -> tuple[str, float | None]:
    """(normalised family, total size in B): ``llama3.1:8b-instruct-q4_K_M`` and
    ``meta-llama/Llama-3.1-8B-Instruct`` both give ``("llama31", 8.0)``."""
    info = parse_model_name(name)
    return normalize_family(info.family), info.params_b


def normalize_name(name: str) -> str:
    """A name reduced for fuzzy comparison: no org, tag separators or punctuation, lower case."""
    base = name.rsplit("/", 1)[-1].lower().removesuffix(".gguf").removesuffix(":latest")
    return _NON_ALNUM.sub(" ", base).strip()


# --- snapshot --------------------------------------------------------------------------------


async def load_snapshot(session: AsyncSession) -> CatalogSnapshotV1:
    """The routable catalog as one immutable message, versioned by a hash of its content."""
    rows = (
        await session.execute(
            select(
                Model.id,
                Model.name,
                Model.family,
                Model.params_b,
                Model.active_params_b,
                Model.quant,
                Model.context_length,
                Model.size_bytes,
                Model.vram_bytes,
                Model.capabilities,
                Model.details,
                Deployment.upstream_name,
                Backend.name,
                Backend.host,
                Backend.kind,
            )
            .join(Deployment, Deployment.model_id == Model.id)
            .join(Backend, Backend.id == Deployment.backend_id)
            .where(Model.active, Deployment.active, Backend.active)
            .order_by(Model.name, Backend.name)
        )
    ).all()
    models: dict[int, CatalogModelV1] = {}
    for r in rows:
        m = models.get(r[0])
        if m is None:
            details = r[10] or {}
            m = models[r[0]] = CatalogModelV1(
                name=r[1],
                family=r[2],
                params_b=r[3],
                active_params_b=r[4],
                quant=r[5],
                context_length=r[6],
                vram_bytes=r[8] if r[8] is not None else r[7],
                capabilities=CapabilitiesV1.model_validate(r[9] or {}),
                coder=bool(details.get("coder", parse_model_name(r[1]).coder)),
            )
        m.replicas.append(ReplicaV1(backend=r[12], upstream_model=r[11], host=r[13], kind=r[14]))
    if models:
        await _add_profiles(session, models)
        await _add_benchmarks(session, models)
    ordered = sorted(models.values(), key=lambda m: m.name)
    digest = hashlib.sha256(orjson.dumps([m.model_dump(mode="json") for m in ordered])).hexdigest()[:16]
    return CatalogSnapshotV1(version=digest, models=ordered, ts=time.time())


def apply_probes(caps: CapabilitiesV1, probes: Any) -> CapabilitiesV1:
    """What the profiler's capability probes (``profiles.details.capabilities``) change: a backend
    that *refused* an image or tools request (HTTP 4xx) turns that capability off whatever the
    name or ``/api/show`` said; a real tool call turns tools on. A vision "answer" turns nothing
    on: a text model answering "I cannot see images" looks the same to the probe."""
    if not isinstance(probes, dict):
        return caps
    update: dict[str, bool] = {}
    for cap in ("vision", "tools"):
        probe = probes.get(cap)
        if not isinstance(probe, dict):
            continue
        refused = probe.get("confirmed") is False and str(probe.get("detail", "")).startswith("refused")
        if refused:
            update[cap] = False
        elif cap == "tools" and probe.get("confirmed") is True:
            update[cap] = True
    return caps.model_copy(update=update) if update else caps


async def _add_profiles(session: AsyncSession, models: dict[int, CatalogModelV1]) -> None:
    """Latest suite per model (by last update): quality per category, mean tokens/s, TTFT and
    prefill rate, and the capabilities its probes settled (:func:`apply_probes`)."""
    rows = (
        await session.execute(
            select(
                Profile.model_id,
                Profile.suite_version,
                Profile.category,
                Profile.score,
                Profile.tokens_per_s,
                Profile.ttft_ms,
                Profile.updated_at,
                Profile.details["capabilities"],
                Profile.prefill_tokens_per_s,
            ).where(Profile.model_id.in_(list(models)))
        )
    ).all()
    latest: dict[int, tuple[datetime, str]] = {}
    for r in rows:
        if r[0] not in latest or r[6] > latest[r[0]][0]:
            latest[r[0]] = (r[6], r[1])
    speeds: dict[str, dict[int, list[float]]] = {k: defaultdict(list) for k in _SPEEDS}
    probed: set[int] = set()
    for r in rows:
        if latest[r[0]][1] != r[1]:
            continue
        m = models[r[0]]
        if r[0] not in probed and r[7]:  # one run's probes, copied into each category's row
            probed.add(r[0])
            m.capabilities = apply_probes(m.capabilities, r[7])
        if r[3] is not None:
            m.quality[r[2]] = round(float(r[3]), 4)
        for speed, value in zip(_SPEEDS, (r[4], r[5], r[8]), strict=True):
            if value is not None:
                speeds[speed][r[0]].append(float(value))
    for speed, per_model in speeds.items():
        for mid, values in per_model.items():
            setattr(models[mid], speed, round(sum(values) / len(values), 3))


_SPEEDS = ("tokens_per_s", "ttft_ms", "prefill_tokens_per_s")
"""The profile's run-wide speeds (the same in each category's row): the catalog takes their mean."""


async def _add_benchmarks(session: AsyncSession, models: dict[int, CatalogModelV1]) -> None:
    """Mean normalised benchmark score per model; a model with none borrows the mean of the
    models sharing its (family, size) key — quantisations of one model share public scores."""
    rows = (
        await session.execute(
            select(Benchmark.model_id, func.avg(Benchmark.score))
            .where(Benchmark.model_id.is_not(None))
            # quality scores only: public sources also store prices, context windows and speeds
            # (details.kind); rows without a kind (file imports) are quality scores
            .where(func.coalesce(Benchmark.details["kind"].as_string(), "quality") == "quality")
            .group_by(Benchmark.model_id)
        )
    ).all()
    direct = {int(r[0]): float(r[1]) for r in rows}
    by_key: dict[tuple[str, float | None], list[float]] = defaultdict(list)
    names = {mid: m.name for mid, m in models.items()}
    if direct:
        for mid, name in (await session.execute(select(Model.id, Model.name).where(Model.id.in_(list(direct))))).all():
            names.setdefault(mid, name)
    for mid, score in direct.items():
        key = match_key(names[mid])
        if key[1] is not None:
            by_key[key].append(score)
    for mid, m in models.items():
        if mid in direct:
            m.benchmark = round(direct[mid], 4)
        else:
            shared = by_key.get(match_key(m.name))
            if shared:
                m.benchmark = round(sum(shared) / len(shared), 4)


__all__ = [
    "FACT_FIELDS",
    "ModelFacts",
    "derive_capabilities",
    "load_snapshot",
    "match_key",
    "merge_model_row",
    "model_facts",
    "normalize_family",
    "normalize_name",
    "parse_parameter_size",
]
