"""The OpenAI-compatible API (``/v1/*``) as llama.cpp's server, vLLM and Ollama's ``/v1`` speak it.

Streams are server-sent events: ``data: {chunk}\\n\\n`` lines ending with ``data: [DONE]\\n\\n``;
a chat stream opens with a ``role`` delta, carries one content (or tool-call argument) delta
per token, then a chunk with ``finish_reason``, then — when ``stream_options.include_usage`` —
a chunk with empty ``choices`` and the ``usage``. Errors are ``{"error": {message, type, param,
code}}``; an unknown model is 404 ``model_not_found``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from turnout.fakefleet import engine, text
from turnout.fakefleet.config import Dialect, ModelSpec
from turnout.fakefleet.errors import FleetError, model_not_found_openai
from turnout.fakefleet.state import FleetState, ListenerState
from turnout.fakefleet.wire import (
    STARTED_AT,
    Json,
    answered_by_tool,
    has_image_parts,
    json_response,
    last_user_text,
    new_id,
    prompt_tokens,
    read_json,
    tool_result_prompt,
)

FINGERPRINT = "fp_fakefleet"
SSE = "text/event-stream"
DONE = b"data: [DONE]\n\n"


class OpenAIApi:
    def __init__(self, fleet: FleetState, listener: ListenerState) -> None:
        self.fleet = fleet
        self.listener = listener
        self.owned_by = "library" if listener.spec.dialect is Dialect.OLLAMA else "llamacpp"

    def routes(self) -> list[web.RouteDef]:
        out = [
            web.get("/v1/models", self.models),
            web.get("/v1/models/{model:.+}", self.retrieve),
            web.post("/v1/chat/completions", self.chat),
            web.post("/v1/completions", self.completions),
            web.post("/v1/embeddings", self.embeddings),
        ]
        if self.listener.spec.dialect is Dialect.OPENAI:
            out.append(web.get("/health", self.health))
        return out

    async def health(self, _: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    def _entry(self, m: ModelSpec) -> Json:
        entry: Json = {"id": m.name, "object": "model", "created": int(STARTED_AT), "owned_by": self.owned_by}
        if self.listener.spec.dialect is Dialect.OPENAI:  # llama.cpp's extra metadata
            entry["meta"] = {"n_ctx_train": m.context_length, "n_params": m.params, "size": m.disk_bytes}
        return entry

    async def models(self, _: web.Request) -> web.Response:
        return json_response({"object": "list", "data": [self._entry(m) for m in self.listener.spec.models]})

    async def retrieve(self, request: web.Request) -> web.Response:
        return json_response(self._entry(self._model(request.match_info["model"])))

    # --- chat ------------------------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        spec = self._model(body.get("model"))
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise FleetError(400, "'messages' must be a non-empty array", param="messages")
        if not spec.can("completion"):
            raise FleetError(400, f"model '{spec.name}' does not support chat completions", param="model")
        tools = body.get("tools") or []
        if tools and not spec.can("tools"):
            raise FleetError(400, f"model '{spec.name}' does not support tools", param="tools")
        if any(isinstance(m, dict) and has_image_parts(m.get("content")) for m in messages) and not spec.can("vision"):
            raise FleetError(400, f"image input is not supported by model '{spec.name}'", param="messages")
        job = await engine.begin(self.fleet, self.listener, spec, request)
        try:
            return await self._chat(request, job, body, messages, tools)
        finally:
            engine.end(job)

    async def _chat(
        self, request: web.Request, job: engine.Job, body: Json, messages: list[Any], tools: list[Any]
    ) -> web.StreamResponse:
        name = job.model.name
        prompt = last_user_text(messages)
        fn = None
        if tools and not answered_by_tool(messages):
            fn = text.pick_tool(tools, body.get("tool_choice"), prompt)
        if answered_by_tool(messages):
            prompt = tool_result_prompt(messages)
        fmt = (body.get("response_format") or {}).get("type")
        out = text.reply(
            job.model,
            prompt,
            max_tokens=_max_tokens(body),
            json_mode=fmt in ("json_object", "json_schema"),
            book=self.fleet.book,
        )
        n_prompt = job.prompt_tokens = prompt_tokens(messages, tools)
        call_id = text.tool_call_id(name, prompt)
        args = orjson.dumps(text.tool_arguments(fn, prompt)).decode() if fn else ""
        n_eval = len(out.tokens) if fn is None else text.estimate_tokens(args) + 4
        finish = "tool_calls" if fn else out.finish_reason
        usage = {"prompt_tokens": n_prompt, "completion_tokens": n_eval, "total_tokens": n_prompt + n_eval}
        cid, created = new_id("chatcmpl"), int(time.time())
        if not body.get("stream"):
            await job.wait_whole(n_eval)
            message: Json = {"role": "assistant", "content": None if fn else out.text, "refusal": None}
            if fn:
                message["tool_calls"] = [
                    {"id": call_id, "type": "function", "function": {"name": fn["name"], "arguments": args}}
                ]
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            return json_response(
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": name,
                    "choices": [choice],
                    "usage": usage,
                    "system_fingerprint": FINGERPRINT,
                }
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: Json | None, finish_reason: str | None = None, *, usage_: Json | None = None) -> bytes:
            obj: Json = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": name,
                "system_fingerprint": FINGERPRINT,
                "choices": []
                if delta is None
                else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                obj["usage"] = usage_
            return _sse(obj)

        if fn:
            call = {"index": 0, "id": call_id, "type": "function", "function": {"name": fn["name"], "arguments": ""}}
            head = chunk({"role": "assistant", "content": None, "tool_calls": [call], "refusal": None})
            tokens = [chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}) for p in _split(args, 3)]
        else:
            head = chunk({"role": "assistant", "content": "", "refusal": None})
            tokens = [chunk({"content": t}) for t in out.tokens]

        def tail() -> bytes:
            end = chunk({}, finish)
            return end + (chunk(None, usage_=usage) if include_usage else b"") + DONE

        return await self._stream(request, job, tokens, head, tail)

    # --- completions -----------------------------------------------------------------------

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        spec = self._model(body.get("model"))
        prompt = body.get("prompt")
        if isinstance(prompt, list):
            prompt = " ".join(str(p) for p in prompt)
        if not isinstance(prompt, str):
            raise FleetError(400, "'prompt' is a required property", param="prompt")
        if not spec.can("completion"):
            raise FleetError(400, f"model '{spec.name}' does not support completions", param="model")
        job = await engine.begin(self.fleet, self.listener, spec, request)
        try:
            out = text.reply(spec, prompt, max_tokens=_max_tokens(body), book=self.fleet.book)
            n_prompt, n_eval = text.estimate_tokens(prompt), len(out.tokens)
            job.prompt_tokens = n_prompt
            usage = {"prompt_tokens": n_prompt, "completion_tokens": n_eval, "total_tokens": n_prompt + n_eval}
            cid, created = new_id("cmpl"), int(time.time())

            def obj(choices: list[Json], **extra: Any) -> Json:
                return {
                    "id": cid,
                    "object": "text_completion",
                    "created": created,
                    "model": spec.name,
                    "system_fingerprint": FINGERPRINT,
                    "choices": choices,
                    **extra,
                }

            def choice(txt: str, finish: str | None) -> Json:
                return {"text": txt, "index": 0, "logprobs": None, "finish_reason": finish}

            if not body.get("stream"):
                await job.wait_whole(n_eval)
                return json_response(obj([choice(out.text, out.finish_reason)], usage=usage))
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            tokens = [_sse(obj([choice(t, None)])) for t in out.tokens]

            def tail() -> bytes:
                end = _sse(obj([choice("", out.finish_reason)]))
                return end + (_sse(obj([], usage=usage)) if include_usage else b"") + DONE

            return await self._stream(request, job, tokens, b"", tail)
        finally:
            engine.end(job)

    # --- embeddings ------------------------------------------------------------------------

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        spec = self._model(body.get("model"))
        inputs = _embedding_inputs(body.get("input"))
        if self.listener.spec.dialect is Dialect.OPENAI and not spec.can("embedding"):
            raise FleetError(400, f"model '{spec.name}' does not support embeddings", param="model")
        job = await engine.begin(self.fleet, self.listener, spec, request)
        try:
            await job.wait_whole(1)
            dims = body.get("dimensions")
            data = []
            for i, item in enumerate(inputs):
                vec = text.embedding(item, spec.embedding_dims)
                if isinstance(dims, int) and 0 < dims < len(vec):
                    vec = vec[:dims]
                    norm = sum(v * v for v in vec) ** 0.5 or 1.0
                    vec = [v / norm for v in vec]
                emb: Any = text.embedding_base64(vec) if body.get("encoding_format") == "base64" else vec
                data.append({"object": "embedding", "index": i, "embedding": emb})
            n = sum(text.estimate_tokens(i) for i in inputs)
            return json_response(
                {"object": "list", "data": data, "model": spec.name, "usage": {"prompt_tokens": n, "total_tokens": n}}
            )
        finally:
            engine.end(job)

    # --- helpers ---------------------------------------------------------------------------

    def _model(self, name: Any) -> ModelSpec:
        if not name or not isinstance(name, str):
            raise FleetError(400, "you must provide a model parameter", param="model")
        spec = self.listener.spec.model(name)
        if spec is None:
            raise model_not_found_openai(name)
        return spec

    async def _stream(
        self, request: web.Request, job: engine.Job, tokens: list[bytes], head: bytes, tail: Any
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": SSE, "Cache-Control": "no-cache"})
        await resp.prepare(request)
        await job.write_stream(resp, tokens, head=head, tail=tail)
        await resp.write_eof()
        return resp


def _sse(obj: Json) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _max_tokens(body: Json) -> int | None:
    value = body.get("max_completion_tokens") or body.get("max_tokens")
    return value if isinstance(value, int) and value > 0 else None


def _split(s: str, n: int) -> list[str]:
    step = max(1, -(-len(s) // n))
    return [s[i : i + step] for i in range(0, len(s), step)] or [""]


def _embedding_inputs(raw: Any) -> list[str]:
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw:
        if all(isinstance(i, str) for i in raw):
            return list(raw)
        if all(isinstance(i, int) for i in raw):  # one input given as token ids
            return [" ".join(map(str, raw))]
        if all(isinstance(i, list) for i in raw):  # several inputs as token ids
            return [" ".join(map(str, i)) for i in raw]
    raise FleetError(400, "'input' must be a string, an array of strings or an array of token arrays", param="input")
