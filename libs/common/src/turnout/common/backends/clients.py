"""Management clients for backends (discovery, model details, residency, load/unload, embeddings).

The request hot path (chat/completions forwarding and streaming) lives in the gateway; these
clients serve the profiler, the gpu-agent and the scorer. Both share one aiohttp session per
process, passed in. Every call has a timeout and raises a :class:`BackendError` subclass.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import orjson

from turnout.common.backends.config import BackendConfig, BackendKind
from turnout.common.errors import BackendStatusError, BackendTimeout, BackendUnavailable
from turnout.common.schemas.fleet import LoadedModelV1


@dataclass(frozen=True, slots=True)
class UpstreamModel:
    """A model as a backend lists it."""

    name: str
    size_bytes: int | None = None
    digest: str | None = None
    context_length: int | None = None
    capabilities: tuple[str, ...] = ()
    """What the backend says the model can do (Ollama ``/api/show`` capabilities), empty if unknown."""
    details: dict[str, Any] = field(default_factory=dict)


class BackendClient(Protocol):
    config: BackendConfig

    async def list_models(self) -> list[UpstreamModel]:
        """The models the backend serves (filtered by the config's include/exclude)."""
        ...

    async def describe(self, model: UpstreamModel) -> UpstreamModel:
        """``model`` with what the backend says about it (context length, capabilities)."""
        ...

    async def loaded(self) -> list[LoadedModelV1]:
        """The models loaded in memory now (empty where the API cannot tell)."""
        ...

    async def unload(self, model: str) -> None:
        """Unload ``model`` (a no-op where the API has no such verb)."""
        ...

    async def preload(self, model: str, *, timeout_s: float = 120.0, embedding: bool = False) -> None:
        """Load ``model`` into memory (a no-op where the API has no such verb); an embedding
        model is loaded through the embeddings endpoint (Ollama refuses /api/generate for it)."""
        ...

    async def embed(self, model: str, inputs: list[str]) -> list[list[float]]:
        """One embedding per input, from ``model``."""
        ...


class _HttpBackend:
    def __init__(self, config: BackendConfig, session: aiohttp.ClientSession, *, timeout_s: float = 10.0) -> None:
        self.config = config
        self._session = session
        self._timeout_s = timeout_s

    def _headers(self) -> dict[str, str]:
        h = {"content-type": "application/json"}
        if self.config.api_key is not None:
            h["authorization"] = f"Bearer {self.config.api_key.get_secret_value()}"
        return h

    async def _request(self, method: str, url: str, *, json: Any = None, timeout_s: float | None = None) -> Any:
        timeout = aiohttp.ClientTimeout(total=timeout_s or self._timeout_s, sock_connect=self.config.connect_timeout_s)
        data = orjson.dumps(json) if json is not None else None
        try:
            async with self._session.request(method, url, data=data, headers=self._headers(), timeout=timeout) as r:
                body = await r.read()
                if r.status >= 400:
                    raise BackendStatusError(
                        f"{self.config.name}: {method} {url} -> HTTP {r.status}",
                        status=r.status,
                        body=body[:2000],
                        backend=self.config.name,
                    )
                return orjson.loads(body) if body else None
        except TimeoutError as exc:
            raise BackendTimeout(f"{self.config.name}: {method} {url} timed out", backend=self.config.name) from exc
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise BackendUnavailable(f"{self.config.name}: {method} {url}: {exc}", backend=self.config.name) from exc
        except orjson.JSONDecodeError as exc:
            raise BackendUnavailable(
                f"{self.config.name}: {url} returned invalid JSON", backend=self.config.name
            ) from exc


class OllamaClient(_HttpBackend):
    """``/api/tags``, ``/api/show``, ``/api/ps``, ``/api/embed``; unload/preload through ``keep_alive``."""

    async def list_models(self) -> list[UpstreamModel]:
        data = await self._request("GET", f"{self.config.url}/api/tags")
        out = []
        for m in (data or {}).get("models", []):
            name = m.get("name") or m.get("model")
            if isinstance(name, str) and self.config.wants(name):
                out.append(
                    UpstreamModel(
                        name=name, size_bytes=m.get("size"), digest=m.get("digest"), details=m.get("details") or {}
                    )
                )
        return out

    async def describe(self, model: UpstreamModel) -> UpstreamModel:
        data = await self._request("POST", f"{self.config.url}/api/show", json={"model": model.name})
        data = data or {}
        info = data.get("model_info") or {}
        ctx = next((int(v) for k, v in info.items() if k.endswith(".context_length") and isinstance(v, int)), None)
        caps = tuple(str(c) for c in data.get("capabilities") or ())
        details = {**model.details, **(data.get("details") or {})}
        return UpstreamModel(
            name=model.name,
            size_bytes=model.size_bytes,
            digest=model.digest,
            context_length=ctx,
            capabilities=caps,
            details=details,
        )

    async def loaded(self) -> list[LoadedModelV1]:
        data = await self._request("GET", f"{self.config.url}/api/ps")
        return [
            LoadedModelV1(
                name=m.get("name") or m.get("model", ""),
                size_bytes=int(m.get("size") or 0),
                vram_bytes=int(m.get("size_vram") or 0),
                expires_at=m.get("expires_at"),
            )
            for m in (data or {}).get("models", [])
        ]

    async def unload(self, model: str) -> None:
        await self._request("POST", f"{self.config.url}/api/generate", json={"model": model, "keep_alive": 0})

    async def preload(self, model: str, *, timeout_s: float = 120.0, embedding: bool = False) -> None:
        """Load ``model``: an empty ``/api/generate``, or for an embedding model (which Ollama
        refuses to generate with) an ``/api/embed`` without input."""
        path = "/api/embed" if embedding else "/api/generate"
        await self._request("POST", f"{self.config.url}{path}", json={"model": model}, timeout_s=timeout_s)

    async def embed(self, model: str, inputs: list[str]) -> list[list[float]]:
        data = await self._request("POST", f"{self.config.url}/api/embed", json={"model": model, "input": inputs})
        return [list(map(float, e)) for e in (data or {}).get("embeddings", [])]


class OpenAICompatClient(_HttpBackend):
    """``/v1/models``, ``/v1/embeddings`` on llama.cpp servers, vLLM, TGI and cloud APIs."""

    async def list_models(self) -> list[UpstreamModel]:
        data = await self._request("GET", f"{self.config.openai_base}/models")
        out = []
        for m in (data or {}).get("data", []):
            name = m.get("id")
            if isinstance(name, str) and self.config.wants(name):
                ctx = m.get("context_length") or m.get("max_model_len") or (m.get("meta") or {}).get("n_ctx_train")
                out.append(UpstreamModel(name=name, context_length=int(ctx) if ctx else None, details=m))
        return out

    async def describe(self, model: UpstreamModel) -> UpstreamModel:
        return model

    async def loaded(self) -> list[LoadedModelV1]:
        return []

    async def unload(self, model: str) -> None:  # noqa: ARG002
        return None  # OpenAI-compatible servers have no unload verb

    async def preload(self, model: str, *, timeout_s: float = 120.0, embedding: bool = False) -> None:  # noqa: ARG002
        return None

    async def embed(self, model: str, inputs: list[str]) -> list[list[float]]:
        data = await self._request(
            "POST", f"{self.config.openai_base}/embeddings", json={"model": model, "input": inputs}
        )
        items = sorted((data or {}).get("data", []), key=lambda d: d.get("index", 0))
        return [list(map(float, d["embedding"])) for d in items]


def client_for(config: BackendConfig, session: aiohttp.ClientSession, *, timeout_s: float = 10.0) -> BackendClient:
    """The client speaking ``config``'s API (Ollama or OpenAI-compatible)."""
    if config.kind is BackendKind.OLLAMA:
        return OllamaClient(config, session, timeout_s=timeout_s)
    return OpenAICompatClient(config, session, timeout_s=timeout_s)


async def gather_models(clients: list[BackendClient]) -> dict[str, list[UpstreamModel] | Exception]:
    """List every backend's models concurrently; a failing backend yields its exception."""
    results = await asyncio.gather(*(c.list_models() for c in clients), return_exceptions=True)
    return {c.config.name: r for c, r in zip(clients, results, strict=True)}  # type: ignore[misc]
