"""Chat calls for profiling, in each backend's own dialect, streamed so that time to first token
can be seen, and read for the backend's own speed counters.

* Ollama: ``POST /api/chat`` (NDJSON stream, body built by :mod:`turnout.common.backends.translate`).
  The last line carries ``eval_count``/``eval_duration`` (generation speed),
  ``prompt_eval_count``/``prompt_eval_duration`` (prompt processing, i.e. time to first token
  inside the server, and the tokens it processed) and ``load_duration``.
* OpenAI-compatible: ``POST …/v1/chat/completions`` (SSE) with ``stream_options.include_usage``;
  ``usage.completion_tokens`` over the time from first to last token gives tokens/s, and a
  llama.cpp ``timings`` object (``predicted_per_second``, ``prompt_n``, ``prompt_ms``) is used
  when present. vLLM and other servers send ``usage.prompt_tokens`` and no timings: the prompt's
  processing is then timed by the client (:attr:`ChatResult.prefill_sample`).
* Neither (llama-cpp-python's server streams carry no ``usage`` and no ``timings``): tokens/s is
  the number of content-bearing chunks minus one over the time from the first to the last of them
  (``speed_source`` ``chunks``). llama.cpp servers send one token per chunk, so this counts tokens;
  a server that batches several tokens into one chunk is under-counted, which is why counters win.

A call that does not finish within its timeout raises :class:`BackendTimeout`; an HTTP error
:class:`BackendStatusError`; a connection failure :class:`BackendUnavailable`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import orjson

from turnout.common.backends.config import BackendConfig, BackendKind
from turnout.common.backends.translate import chat_request_to_ollama
from turnout.common.errors import BackendStatusError, BackendTimeout, BackendUnavailable

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One chat request of the profiler: messages, token cap, temperature, seed, tools."""

    messages: list[Json]
    max_tokens: int = 256
    temperature: float = 0.0
    seed: int | None = 7
    tools: list[Json] | None = None

    def openai_body(self, model: str, *, stream: bool) -> Json:
        """The request as an OpenAI chat body for ``model``."""
        body: Json = {
            "model": model,
            "messages": self.messages,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "stream": stream,
        }
        if self.seed is not None:
            body["seed"] = self.seed
        if self.tools:
            body["tools"] = self.tools
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body


@dataclass(frozen=True, slots=True)
class PrefillSample:
    """One call's prompt processing: ``tokens`` in ``seconds``, measured as ``source`` says."""

    tokens: int
    seconds: float
    source: str
    """``backend`` (the server's counters) or ``timing`` (client-side time to first token)."""


@dataclass(slots=True)
class ChatResult:
    """A chat reply with its timings: text, tool calls, tokens, time to first token and speed."""

    text: str = ""
    tool_calls: list[Json] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_s: float | None = None
    """Client-side: request sent → first token (content, reasoning or tool call) received."""
    total_s: float = 0.0
    backend_ttft_s: float | None = None
    """From the backend's counters (Ollama ``prompt_eval_duration``, llama.cpp ``prompt_ms``)."""
    backend_prompt_tokens: int | None = None
    """Prompt tokens the backend processed in ``backend_ttft_s`` (Ollama ``prompt_eval_count``,
    llama.cpp ``prompt_n``): without those a prompt cache served."""
    backend_tokens_per_s: float | None = None
    """From the backend's counters (Ollama ``eval_count/eval_duration``, llama.cpp timings)."""
    load_s: float | None = None
    """Model load time the backend reports (Ollama ``load_duration``)."""
    content_chunks: int = 0
    """Stream chunks that carried generated text (content or reasoning)."""
    first_content_s: float | None = None
    last_content_s: float | None = None
    """Client-side: request sent → first / last content-bearing chunk received."""

    def note_content(self, started: float) -> None:
        """Note a chunk of content at this time since the request started."""
        now = time.perf_counter() - started
        self.content_chunks += 1
        if self.first_content_s is None:
            self.first_content_s = now
        self.last_content_s = now

    @property
    def chunk_tokens_per_s(self) -> float | None:
        """Content-bearing chunks (one token each on llama.cpp) over the first → last chunk time."""
        if self.content_chunks > 1 and self.first_content_s is not None and self.last_content_s is not None:
            span = self.last_content_s - self.first_content_s
            if span > 0:
                return (self.content_chunks - 1) / span
        return None

    @property
    def tokens_per_s(self) -> float | None:
        """The backend's figure when it gave one, else completion tokens over generation time,
        else content-bearing chunks over the first → last chunk time (no usage, no timings)."""
        if self.backend_tokens_per_s:
            return self.backend_tokens_per_s
        if self.completion_tokens and self.completion_tokens > 1 and self.ttft_s is not None:
            gen = self.total_s - self.ttft_s
            if gen > 0:
                return (self.completion_tokens - 1) / gen
        return self.chunk_tokens_per_s

    @property
    def time_to_first_token_s(self) -> float | None:
        """The backend's own time to first token when it reports one, else the measured one."""
        return self.backend_ttft_s if self.backend_ttft_s is not None else self.ttft_s

    @property
    def prefill_sample(self) -> PrefillSample | None:
        """Prompt tokens and the seconds they took to process: the backend's counters when it
        gave both (``backend``), else the prompt's ``usage`` tokens over the client's time to
        first token (``timing``: it holds the request's round trip too), else ``None``."""
        if self.backend_prompt_tokens and self.backend_ttft_s:
            return PrefillSample(self.backend_prompt_tokens, self.backend_ttft_s, "backend")
        if self.prompt_tokens and self.ttft_s:
            return PrefillSample(self.prompt_tokens, self.ttft_s, "timing")
        return None

    @property
    def speed_source(self) -> str:
        """Where the tokens per second came from: ``backend``, ``client`` or ``chunks``."""
        if self.backend_tokens_per_s:
            return "backend"
        if self.completion_tokens and self.completion_tokens > 1:
            return "client"
        return "chunks" if self.chunk_tokens_per_s else "client"


class ChatFn(Protocol):
    """Sends one chat request to the model under test."""

    async def __call__(self, request: ChatRequest, *, timeout_s: float) -> ChatResult: ...


class BackendChat:
    """A :class:`ChatFn` for one upstream model on one backend."""

    def __init__(self, config: BackendConfig, session: aiohttp.ClientSession, upstream_model: str) -> None:
        self.config = config
        self.model = upstream_model
        self._session = session

    def _headers(self) -> dict[str, str]:
        h = {"content-type": "application/json"}
        if self.config.api_key is not None:
            h["authorization"] = f"Bearer {self.config.api_key.get_secret_value()}"
        return h

    async def __call__(self, request: ChatRequest, *, timeout_s: float) -> ChatResult:
        name = self.config.name
        result = ChatResult()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                if self.config.kind is BackendKind.OLLAMA:
                    await self._ollama(request, result, started)
                else:
                    await self._openai(request, result, started)
        except TimeoutError as exc:
            raise BackendTimeout(f"{name}: {self.model} did not finish within {timeout_s:.0f}s", backend=name) from exc
        except aiohttp.ClientError as exc:
            raise BackendUnavailable(f"{name}: {type(exc).__name__}: {exc}", backend=name) from exc
        result.total_s = time.perf_counter() - started
        return result

    async def _post(self, url: str, body: Json) -> aiohttp.ClientResponse:
        r = await self._session.post(url, data=orjson.dumps(body), headers=self._headers())
        if r.status >= 400:
            raw = await r.read()
            r.release()
            raise BackendStatusError(
                f"{self.config.name}: POST {url} -> HTTP {r.status}",
                status=r.status,
                body=raw[:2000],
                backend=self.config.name,
            )
        return r

    async def _ollama(self, request: ChatRequest, result: ChatResult, started: float) -> None:
        body = chat_request_to_ollama(request.openai_body(self.model, stream=True), self.model, stream=True)
        parts: list[str] = []
        r = await self._post(f"{self.config.url}/api/chat", body)
        async with r:
            async for raw in r.content:
                line = raw.strip()
                if not line:
                    continue
                data = orjson.loads(line)
                if "error" in data:
                    raise BackendStatusError(
                        f"{self.config.name}: {data['error']}", status=500, body=line[:2000], backend=self.config.name
                    )
                msg = data.get("message") or {}
                content = msg.get("content") or ""
                if (content or msg.get("thinking") or msg.get("tool_calls")) and result.ttft_s is None:
                    result.ttft_s = time.perf_counter() - started
                if content or msg.get("thinking"):
                    result.note_content(started)
                parts.append(content)
                result.tool_calls.extend(msg.get("tool_calls") or [])
                if data.get("done"):
                    _ollama_counters(data, result)
        result.text = "".join(parts)

    async def _openai(self, request: ChatRequest, result: ChatResult, started: float) -> None:
        body = request.openai_body(self.model, stream=True)
        parts: list[str] = []
        r = await self._post(f"{self.config.openai_base}/chat/completions", body)
        async with r:
            async for raw in r.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    break
                data = orjson.loads(payload)
                if "error" in data:
                    raise BackendStatusError(
                        f"{self.config.name}: {data['error']}",
                        status=500,
                        body=payload[:2000],
                        backend=self.config.name,
                    )
                for choice in data.get("choices") or []:
                    delta = choice.get("delta") or {}
                    content = delta.get("content") or ""
                    thinking = delta.get("reasoning_content") or delta.get("reasoning")
                    if (content or thinking or delta.get("tool_calls")) and result.ttft_s is None:
                        result.ttft_s = time.perf_counter() - started
                    if content or thinking:
                        result.note_content(started)
                    parts.append(content)
                    result.tool_calls.extend(delta.get("tool_calls") or [])
                    if choice.get("finish_reason"):
                        result.finish_reason = choice["finish_reason"]
                usage = data.get("usage")
                if usage:
                    result.prompt_tokens = usage.get("prompt_tokens")
                    result.completion_tokens = usage.get("completion_tokens")
                timings = data.get("timings")
                if isinstance(timings, dict):
                    if timings.get("predicted_per_second"):
                        result.backend_tokens_per_s = float(timings["predicted_per_second"])
                    if timings.get("prompt_ms") is not None:
                        result.backend_ttft_s = float(timings["prompt_ms"]) / 1000
                    if timings.get("prompt_n") is not None:
                        result.backend_prompt_tokens = int(timings["prompt_n"])
        result.text = "".join(parts)


def _ollama_counters(data: Json, result: ChatResult) -> None:
    result.finish_reason = data.get("done_reason") or "stop"
    result.prompt_tokens = data.get("prompt_eval_count")
    result.backend_prompt_tokens = data.get("prompt_eval_count")
    result.completion_tokens = data.get("eval_count")
    eval_ns = data.get("eval_duration") or 0
    if result.completion_tokens and eval_ns > 0:
        result.backend_tokens_per_s = result.completion_tokens / (eval_ns / 1e9)
    if data.get("prompt_eval_duration") is not None:
        result.backend_ttft_s = data["prompt_eval_duration"] / 1e9
    if data.get("load_duration") is not None:
        result.load_s = data["load_duration"] / 1e9
