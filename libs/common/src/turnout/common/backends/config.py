"""Which backends exist: parsed from ``TURNOUT_BACKENDS`` or a YAML file.

Compact env form (comma separated)::

    TURNOUT_BACKENDS=ollama=http://localhost:11434,gpu2:ollama=http://10.0.0.2:11434,openai=http://vllm:8000/v1

Each entry is ``[name:]kind=url``. For keys, include/exclude globs and prefixes use JSON in
the same variable or a YAML file (``TURNOUT_BACKENDS_FILE``)::

    backends:
      - name: local
        kind: ollama
        url: http://localhost:11434
        exclude: ["*embed*"]
      - name: cloud
        kind: openai
        url: https://api.example.com/v1
        api_key: sk-...
        include: ["gpt-4o*"]
        prefix: "cloud/"
"""

from __future__ import annotations

import fnmatch
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from turnout.common.errors import ConfigError


class BackendKind(StrEnum):
    OLLAMA = "ollama"
    OPENAI = "openai"


class BackendConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: BackendKind
    url: str
    api_key: SecretStr | None = None
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    prefix: str = ""
    host: str | None = Field(default=None, description="GPU host this backend runs on (joins gpu-agent state)")
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=300.0, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"backend url must start with http:// or https://, got {v!r}")
        return v.rstrip("/")

    def wants(self, upstream_model: str) -> bool:
        """Whether this backend's include/exclude globs admit the model."""
        if not any(fnmatch.fnmatchcase(upstream_model, g) for g in self.include):
            return False
        return not any(fnmatch.fnmatchcase(upstream_model, g) for g in self.exclude)

    def public_name(self, upstream_model: str) -> str:
        """The catalog name of one of this backend's models (with the backend's prefix)."""
        return f"{self.prefix}{upstream_model}"

    def upstream_name(self, public_model: str) -> str | None:
        """The backend's own name for a catalog model, or None when the prefix does not match."""
        if self.prefix and not public_model.startswith(self.prefix):
            return None
        return public_model[len(self.prefix) :]

    @property
    def openai_base(self) -> str:
        """Base URL of the OpenAI-compatible API (``…/v1``)."""
        return self.url if self.url.endswith("/v1") else f"{self.url}/v1"


def parse_backends(value: Any) -> list[BackendConfig]:
    """Parse the ``TURNOUT_BACKENDS`` value: a list already, JSON, or the compact form."""
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return _unique([v if isinstance(v, BackendConfig) else BackendConfig.model_validate(v) for v in value])
    if not isinstance(value, str):
        raise ValueError("backends must be a list or a string")
    text = value.strip()
    if text.startswith("["):
        try:
            items = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"TURNOUT_BACKENDS is not valid JSON: {exc}") from exc
        return parse_backends(items)
    out: list[BackendConfig] = []
    counts: dict[str, int] = {}
    for raw in filter(None, (p.strip() for p in text.split(","))):
        left, sep, url = raw.partition("=")
        if not sep:
            raise ValueError(f"backend entry {raw!r} is not of the form [name:]kind=url")
        name, _, kind = left.rpartition(":")
        kind = kind.strip().lower()
        if kind not in BackendKind.__members__.values():
            raise ValueError(f"backend entry {raw!r}: kind must be one of ollama, openai")
        if not name:
            counts[kind] = counts.get(kind, 0) + 1
            name = kind if counts[kind] == 1 else f"{kind}{counts[kind]}"
        out.append(BackendConfig(name=name, kind=BackendKind(kind), url=url.strip()))
    return _unique(out)


def load_backends_file(path: Path) -> list[BackendConfig]:
    """Backends from a YAML file (a list, or ``{backends: [...]}``); raises ConfigError."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read backends file {path}: {exc}") from exc
    items = data.get("backends", []) if isinstance(data, dict) else data
    try:
        return parse_backends(items or [])
    except ValueError as exc:
        raise ConfigError(f"backends file {path}: {exc}") from exc


def _unique(backends: list[BackendConfig]) -> list[BackendConfig]:
    seen: set[str] = set()
    for b in backends:
        if b.name in seen:
            raise ValueError(f"two backends are named {b.name!r}; names must be unique")
        seen.add(b.name)
    return backends
