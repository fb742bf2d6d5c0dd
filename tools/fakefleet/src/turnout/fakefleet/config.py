"""What the simulated fleet serves: listeners (one port and one dialect each) and their models.

A YAML file (``--config``) or the packaged ``default_fleet.yaml``::

    seed: 0                      # error_rate draws use a seeded RNG per listener
    time_scale: 1.0              # multiplies every delay; 0 = no delays at all (benchmarks)
    listeners:
      - name: ollama             # the key in the start-up JSON line and in /_fleet/* bodies
        dialect: ollama          # ollama: /api/* and Ollama's /v1/*; openai: /v1/* only
        port: 11500              # 0 = a free port
        host_label: fleet-gpu-0  # the host a gpu-agent would report for this backend
        vram_total_bytes: 16GiB  # residency budget (Ollama dialect); null = unlimited
        keep_alive: 5m           # default keep_alive (Go duration or seconds)
        on_overflow: fail        # fail (HTTP 500 like Ollama out of memory) | evict (LRU idle first)
        models:
          - name: llama3.2:1b
            params: 1.2B         # or a number of billions
            family: llama
            quantization: Q8_0
            tokens_per_s: 200    # 0 = no per-token delay
            ttft_ms: 40
            prefill_tokens_per_s: 4000  # prompt tokens a second, added to ttft_ms; 0 = the prompt adds nothing
            load_ms: 300         # added when the model was not resident
            error_rate: 0.0      # share of requests answered with HTTP 500
            capabilities: [completion, tools]   # completion, tools, vision, embedding, thinking, insert
            vram_bytes: 1.8GiB
            context_length: 131072
            accuracy: 0.6        # share of arithmetic questions answered right (for profiling)
            fences_json: false   # wrap JSON answers in a ```json fence (chatty models do)
          # a model with the `thinking` capability writes <think>…</think> before its answer
            skills: {code: 0.9}  # optional: chance of a right answer per category (skill.py)

``answer_book`` (top level, default ``auto``): the prompts a model can answer right, with how
often depending on its size and the category (see :mod:`turnout.fakefleet.skill`).
"""

from __future__ import annotations

import re
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")
_PARAMS_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kKmMbBtT]?)\s*$")
_DURATION_RE = re.compile(r"(-?[0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

CAPABILITIES = frozenset({"completion", "tools", "vision", "embedding", "thinking", "insert"})


class Dialect(StrEnum):
    OLLAMA = "ollama"
    OPENAI = "openai"


class Overflow(StrEnum):
    FAIL = "fail"
    EVICT = "evict"


def parse_bytes(value: Any) -> int:
    """``8589934592``, ``"8GiB"``, ``"1.5 GB"`` -> bytes."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int | float):
        return int(value)
    m = _SIZE_RE.match(str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {value!r} (use bytes or e.g. 8GiB, 1.5GB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_params(value: Any) -> int:
    """``8`` (billions), ``"8B"``, ``"1.2B"``, ``"137M"`` -> a parameter count."""
    if isinstance(value, bool):
        raise ValueError(f"not a parameter count: {value!r}")
    if isinstance(value, int | float):
        return int(float(value) * 1e9)
    m = _PARAMS_RE.match(str(value))
    if not m:
        raise ValueError(f"not a parameter count: {value!r} (use e.g. 8B, 1.2B, 137M)")
    scale = {"": 1e9, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def parse_duration(value: Any) -> float | None:
    """Ollama ``keep_alive``: seconds (number) or a Go duration (``"5m"``, ``"1h30m"``, ``"200ms"``).

    Returns seconds; ``None`` means forever (a negative duration).
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_RE.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(f"not a duration: {value!r} (use seconds or e.g. 5m, 30s, 200ms)") from None
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    return None if seconds < 0 else seconds


def format_params(count: int) -> str:
    """Ollama's ``details.parameter_size``: ``8.0B``, ``1.2B``, ``137M``."""
    if count >= 1_000_000_000:
        return f"{count / 1e9:.1f}B"
    if count >= 1_000_000:
        return f"{count / 1e6:.0f}M"
    return f"{count / 1e3:.0f}K"


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    params: int = Field(default=8_000_000_000, description="Parameter count (YAML: 8B, 1.2B, 137M or billions)")
    family: str = ""
    quantization: str = "Q4_K_M"
    tokens_per_s: float = Field(default=0.0, ge=0, description="0 = no per-token delay")
    ttft_ms: float = Field(default=0.0, ge=0)
    prefill_tokens_per_s: float = Field(
        default=0.0, ge=0, description="Prompt tokens processed a second (delay before the first token); 0 = none"
    )
    load_ms: float = Field(default=0.0, ge=0, description="Extra delay when the model was not resident")
    error_rate: float = Field(default=0.0, ge=0, le=1)
    capabilities: tuple[str, ...] = ("completion",)
    vram_bytes: int = Field(default=0, ge=0)
    size_bytes: int | None = Field(default=None, description="On-disk size (/api/tags); default 90% of vram_bytes")
    context_length: int = Field(default=8192, ge=1)
    accuracy: float | None = Field(default=None, ge=0, le=1, description="Arithmetic answers right this often")
    reply_tokens: int = Field(default=24, ge=1, description="Tokens in a reply unless max_tokens is lower")
    embedding_dims: int = Field(default=384, ge=1)
    fences_json: bool = Field(default=False, description="JSON answers come wrapped in a ```json fence")

    skills: dict[str, float] | None = Field(
        default=None, description="Category -> chance of a right answer to an answer-book prompt (skill.py)"
    )

    @field_validator("skills")
    @classmethod
    def _skills(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is not None and any(not 0.0 <= p <= 1.0 for p in v.values()):
            raise ValueError("skills are chances between 0 and 1")
        return v

    @field_validator("params", mode="before")
    @classmethod
    def _params(cls, v: Any) -> int:
        return parse_params(v)

    @field_validator("vram_bytes", "size_bytes", mode="before")
    @classmethod
    def _bytes(cls, v: Any) -> int | None:
        return None if v is None else parse_bytes(v)

    @field_validator("capabilities", mode="before")
    @classmethod
    def _caps(cls, v: Any) -> tuple[str, ...]:
        caps = tuple(str(c).lower() for c in ([v] if isinstance(v, str) else v))
        unknown = set(caps) - CAPABILITIES
        if unknown:
            raise ValueError(f"unknown capabilities {sorted(unknown)}; known: {sorted(CAPABILITIES)}")
        return caps

    @model_validator(mode="after")
    def _defaults(self) -> Self:
        if not self.family:
            object.__setattr__(self, "family", _family_from_name(self.name))
        return self

    def can(self, capability: str) -> bool:
        return capability in self.capabilities

    @property
    def disk_bytes(self) -> int:
        return self.size_bytes if self.size_bytes is not None else int(self.vram_bytes * 0.9)


class ListenerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    dialect: Dialect
    port: int = Field(default=0, ge=0, le=65535)
    host_label: str | None = None
    vram_total_bytes: int | None = Field(default=None, ge=0)
    keep_alive: float | None = Field(default=300.0, description="Seconds a model stays loaded; None = forever")
    on_overflow: Overflow = Overflow.FAIL
    models: list[ModelSpec] = Field(default_factory=list)

    @field_validator("vram_total_bytes", mode="before")
    @classmethod
    def _bytes(cls, v: Any) -> int | None:
        return None if v is None else parse_bytes(v)

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _keep_alive(cls, v: Any) -> float | None:
        return parse_duration(v)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"listener {self.name!r} lists models twice: {dupes}")
        return self

    def model(self, name: str) -> ModelSpec | None:
        """Look a model up the way Ollama does: ``llama3.1`` means ``llama3.1:latest``."""
        for m in self.models:
            if m.name == name or (":" not in name and m.name == f"{name}:latest"):
                return m
        return None


class FleetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    time_scale: float = Field(default=1.0, ge=0, description="Multiplies every delay; 0 = none")
    answer_book: str | None = Field(
        default="auto",
        description="Prompts with right answers (profiling-suite format): a path, 'auto' (the profiler's suite "
        "when installed) or null (skill.py)",
    )
    listeners: list[ListenerSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        names = [listener.name for listener in self.listeners]
        if len(set(names)) != len(names):
            raise ValueError(f"listener names must be unique: {names}")
        ports = [listener.port for listener in self.listeners if listener.port]
        if len(set(ports)) != len(ports):
            raise ValueError(f"two listeners want the same port: {ports}")
        return self

    def listener(self, name: str) -> ListenerSpec | None:
        return next((li for li in self.listeners if li.name == name), None)

    @classmethod
    def from_yaml(cls, text: str) -> FleetConfig:
        return cls.model_validate(yaml.safe_load(text) or {})

    @classmethod
    def load(cls, path: Path | None = None) -> FleetConfig:
        """The file at ``path``, or the packaged default fleet."""
        if path is None:
            return cls.from_yaml(resources.files(__package__).joinpath("default_fleet.yaml").read_text())
        return cls.from_yaml(path.read_text())


def _family_from_name(name: str) -> str:
    base = name.split("/")[-1].split(":")[0].lower()
    m = re.match(r"[a-z]+", base)
    return m.group(0) if m else "unknown"
