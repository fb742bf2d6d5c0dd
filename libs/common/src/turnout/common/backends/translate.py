"""OpenAI <-> Ollama dialect translation (pure functions, no I/O).

Two directions, each for requests, whole responses and streams:

* **OpenAI client -> Ollama backend** (the gateway forwarding to Ollama, the profiler probing it):
  :func:`chat_request_to_ollama`, :func:`completion_request_to_ollama`,
  :func:`embeddings_request_to_ollama`; replies back with :func:`ollama_chat_to_openai`,
  :func:`ollama_generate_to_openai`, :func:`ollama_embed_to_openai` and, for streams,
  :class:`OllamaChatStream` / :class:`OllamaGenerateStream` (NDJSON lines in, OpenAI chunks out).
* **Ollama client -> OpenAI internals** (the gateway's ``/api/*`` endpoints):
  :func:`ollama_chat_request_to_openai`, :func:`ollama_generate_request_to_openai`,
  :func:`ollama_embed_request_to_openai`; replies back with :func:`openai_chat_to_ollama`,
  :func:`openai_completion_to_ollama`, :func:`openai_embeddings_to_ollama` and
  :class:`OpenAIToOllamaStream` (OpenAI chunks in, NDJSON objects out).

Field mapping (requests): ``temperature``, ``top_p``, ``seed``, ``stop``, ``presence_penalty``,
``frequency_penalty`` and ``top_k`` go to/come from Ollama ``options``; ``max_tokens`` /
``max_completion_tokens`` <-> ``options.num_predict``; ``response_format`` json_object <->
``format: "json"`` and json_schema <-> ``format: {schema}``; ``tools`` have the same shape on
both sides; images travel as ``image_url`` data URLs (OpenAI) and bare base64 (Ollama); tool
call arguments are a JSON string (OpenAI) and an object (Ollama). Usage: ``prompt_eval_count``
<-> ``prompt_tokens``, ``eval_count`` <-> ``completion_tokens``.
"""

from __future__ import annotations

import base64
import secrets
import sys
import time
from array import array
from datetime import UTC, datetime
from typing import Any

import orjson

from turnout.common.errors import TranslationError

Json = dict[str, Any]

_OPTION_KEYS = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty", "top_k")
_DATA_URL_PREFIX = "data:"


# --- helpers -----------------------------------------------------------------------------------


def new_tool_call_id() -> str:
    """An OpenAI-style tool call id (``call_`` + 24 hex digits)."""
    return "call_" + secrets.token_hex(12)


def iso_now() -> str:
    """The current UTC time as ISO 8601 with a ``Z``, as Ollama writes ``created_at``."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def usage_from_ollama(data: Json) -> Json:
    """OpenAI ``usage`` from an Ollama reply's eval counts."""
    prompt = int(data.get("prompt_eval_count") or 0)
    completion = int(data.get("eval_count") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _finish_reason(done_reason: Any, tool_calls: bool) -> str:
    if tool_calls:
        return "tool_calls"
    return "length" if done_reason == "length" else "stop"


def _image_b64(url: str) -> str:
    """The base64 payload of a ``data:`` URL (Ollama takes bare base64)."""
    if not url.startswith(_DATA_URL_PREFIX):
        raise TranslationError("Ollama backends take images as data: URLs (base64), not remote URLs")
    head, sep, payload = url.partition(",")
    if not sep or not head.endswith(";base64"):
        raise TranslationError("image data URL must be base64 encoded")
    return payload


def _image_mime(b64: str) -> str:
    head = b64[:16]
    if head.startswith("iVBOR"):
        return "image/png"
    if head.startswith("R0lG"):
        return "image/gif"
    if head.startswith("UklG"):
        return "image/webp"
    return "image/jpeg"


def _content_text_and_images(content: Any) -> tuple[str, list[str]]:
    """Split OpenAI message content (a string or a list of parts) into text and base64 images."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    images: list[str] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("text", "input_text"):
            texts.append(str(part.get("text") or ""))
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if isinstance(url, str):
                images.append(_image_b64(url))
    return "\n".join(texts), images


def _arguments_object(arguments: Any) -> Any:
    if isinstance(arguments, str):
        if not arguments.strip():
            return {}
        try:
            return orjson.loads(arguments)
        except orjson.JSONDecodeError as exc:
            raise TranslationError(f"tool call arguments are not valid JSON: {exc}") from exc
    return arguments if arguments is not None else {}


def _arguments_string(arguments: Any) -> str:
    if isinstance(arguments, str):
        return arguments
    return orjson.dumps(arguments if arguments is not None else {}).decode()


def _ollama_tool_calls_to_openai(calls: list[Json]) -> list[Json]:
    out = []
    for call in calls:
        fn = call.get("function") or {}
        out.append(
            {
                "id": call.get("id") or new_tool_call_id(),
                "type": "function",
                "function": {"name": fn.get("name", ""), "arguments": _arguments_string(fn.get("arguments"))},
            }
        )
    return out


def _options_from_openai(body: Json) -> Json:
    options: Json = {k: body[k] for k in _OPTION_KEYS if body.get(k) is not None}
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    stop = body.get("stop")
    if stop is not None:
        options["stop"] = [stop] if isinstance(stop, str) else list(stop)
    return options


def _format_from_openai(response_format: Any) -> Any:
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        return spec.get("schema") or "json"
    return None


# --- OpenAI request -> Ollama request ----------------------------------------------------------


def chat_messages_to_ollama(messages: list[Json]) -> list[Json]:
    """OpenAI chat messages as Ollama messages (images, tool calls and tool results included)."""
    out: list[Json] = []
    names_by_call_id: dict[str, str] = {}
    for msg in messages:
        role = msg.get("role", "user")
        if role == "developer":
            role = "system"
        text, images = _content_text_and_images(msg.get("content"))
        item: Json = {"role": role, "content": text}
        if images:
            item["images"] = images
        if role == "assistant" and msg.get("tool_calls"):
            calls = []
            for call in msg["tool_calls"]:
                fn = call.get("function") or {}
                if call.get("id"):
                    names_by_call_id[call["id"]] = fn.get("name", "")
                calls.append(
                    {"function": {"name": fn.get("name", ""), "arguments": _arguments_object(fn.get("arguments"))}}
                )
            item["tool_calls"] = calls
        if role == "tool":
            name = msg.get("name") or names_by_call_id.get(str(msg.get("tool_call_id")), "")
            if name:
                item["tool_name"] = name
        out.append(item)
    return out


def chat_request_to_ollama(body: Json, upstream_model: str, *, stream: bool) -> Json:
    """An OpenAI ``/v1/chat/completions`` body as an Ollama ``/api/chat`` body."""
    req: Json = {
        "model": upstream_model,
        "messages": chat_messages_to_ollama(body.get("messages") or []),
        "stream": stream,
    }
    options = _options_from_openai(body)
    if options:
        req["options"] = options
    tools = body.get("tools")
    if tools and body.get("tool_choice") != "none":
        req["tools"] = tools
    fmt = _format_from_openai(body.get("response_format"))
    if fmt is not None:
        req["format"] = fmt
    if "keep_alive" in body:
        req["keep_alive"] = body["keep_alive"]
    return req


def completion_request_to_ollama(body: Json, upstream_model: str, *, stream: bool) -> Json:
    """An OpenAI ``/v1/completions`` body as an Ollama ``/api/generate`` body."""
    prompt = body.get("prompt", "")
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise TranslationError("Ollama backends take one text prompt per completion request")
        prompt = prompt[0]
    req: Json = {"model": upstream_model, "prompt": prompt, "stream": stream}
    if body.get("suffix"):
        req["suffix"] = body["suffix"]
    options = _options_from_openai(body)
    if options:
        req["options"] = options
    fmt = _format_from_openai(body.get("response_format"))
    if fmt is not None:
        req["format"] = fmt
    return req


def embeddings_request_to_ollama(body: Json, upstream_model: str) -> Json:
    """An OpenAI ``/v1/embeddings`` body as an Ollama ``/api/embed`` body."""
    inputs = body.get("input", "")
    if isinstance(inputs, list) and inputs and not isinstance(inputs[0], str):
        raise TranslationError("Ollama backends take text inputs, not token arrays")
    req: Json = {"model": upstream_model, "input": inputs}
    if body.get("dimensions") is not None:
        req["dimensions"] = body["dimensions"]
    return req


# --- Ollama reply -> OpenAI reply --------------------------------------------------------------


def ollama_chat_to_openai(data: Json, *, response_id: str, model: str, created: int | None = None) -> Json:
    """A non-streamed Ollama ``/api/chat`` reply as an OpenAI ``chat.completion``."""
    msg = data.get("message") or {}
    tool_calls = _ollama_tool_calls_to_openai(msg.get("tool_calls") or [])
    message: Json = {"role": "assistant", "content": msg.get("content") or ("" if not tool_calls else None)}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if msg.get("thinking"):
        message["reasoning_content"] = msg["thinking"]
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _finish_reason(data.get("done_reason"), bool(tool_calls)),
            }
        ],
        "usage": usage_from_ollama(data),
    }


def ollama_generate_to_openai(data: Json, *, response_id: str, model: str, created: int | None = None) -> Json:
    """A non-streamed Ollama ``/api/generate`` reply as an OpenAI ``text_completion``."""
    return {
        "id": response_id,
        "object": "text_completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "text": data.get("response") or "",
                "logprobs": None,
                "finish_reason": _finish_reason(data.get("done_reason"), False),
            }
        ],
        "usage": usage_from_ollama(data),
    }


def encode_embedding_base64(vector: list[float]) -> str:
    """OpenAI's ``encoding_format: base64``: little-endian float32, base64 encoded."""
    arr = array("f", vector)
    if sys.byteorder == "big":  # pragma: no cover - no big-endian CI
        arr.byteswap()
    return base64.b64encode(arr.tobytes()).decode()


def decode_embedding_base64(text: str) -> list[float]:
    """An OpenAI ``encoding_format=base64`` embedding (little-endian float32) as floats."""
    arr = array("f")
    arr.frombytes(base64.b64decode(text))
    if sys.byteorder == "big":  # pragma: no cover
        arr.byteswap()
    return arr.tolist()


def ollama_embed_to_openai(data: Json, *, model: str, encoding_format: str | None = None) -> Json:
    """An Ollama ``/api/embed`` reply as an OpenAI embeddings list."""
    items = []
    for i, vector in enumerate(data.get("embeddings") or []):
        embedding: Any = encode_embedding_base64(vector) if encoding_format == "base64" else vector
        items.append({"object": "embedding", "index": i, "embedding": embedding})
    prompt = int(data.get("prompt_eval_count") or 0)
    return {"object": "list", "data": items, "model": model, "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}


class OllamaChatStream:
    """Ollama ``/api/chat`` NDJSON objects in, OpenAI ``chat.completion.chunk`` dicts out.

    The first chunk carries ``role``; the ``done`` line yields a chunk with ``finish_reason``
    and then a usage chunk (``choices: []``), as OpenAI sends with ``include_usage``.
    """

    object_name = "chat.completion.chunk"

    def __init__(self, *, response_id: str, model: str, created: int | None = None) -> None:
        self.response_id = response_id
        self.model = model
        self.created = created or int(time.time())
        self.usage: Json | None = None
        self.done = False
        self._role_sent = False
        self._tool_index = 0

    def _chunk(self, choices: list[Json], **extra: Any) -> Json:
        return {
            "id": self.response_id,
            "object": self.object_name,
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }

    def feed(self, line: Json) -> list[Json]:
        """OpenAI chunks for one Ollama NDJSON line; raises TranslationError on an error line."""
        if "error" in line:
            raise TranslationError(str(line["error"]))
        out: list[Json] = []
        msg = line.get("message") or {}
        delta: Json = {}
        if not self._role_sent:
            delta["role"] = "assistant"
            self._role_sent = True
        content = msg.get("content")
        if content:
            delta["content"] = content
        if msg.get("thinking"):
            delta["reasoning_content"] = msg["thinking"]
        calls = msg.get("tool_calls") or []
        if calls:
            delta["tool_calls"] = [
                {"index": self._tool_index + i, **c} for i, c in enumerate(_ollama_tool_calls_to_openai(calls))
            ]
            self._tool_index += len(calls)
        if delta:
            if not ("content" in delta or "tool_calls" in delta or "reasoning_content" in delta):
                delta["content"] = ""
            out.append(self._chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]))
        if line.get("done"):
            self.done = True
            self.usage = usage_from_ollama(line)
            reason = _finish_reason(line.get("done_reason"), self._tool_index > 0)
            out.append(self._chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}]))
            out.append(self._chunk([], usage=self.usage))
        return out


class OllamaGenerateStream:
    """Ollama ``/api/generate`` NDJSON objects in, OpenAI ``text_completion`` chunks out."""

    def __init__(self, *, response_id: str, model: str, created: int | None = None) -> None:
        self.response_id = response_id
        self.model = model
        self.created = created or int(time.time())
        self.usage: Json | None = None
        self.done = False

    def _chunk(self, choices: list[Json], **extra: Any) -> Json:
        return {
            "id": self.response_id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }

    def feed(self, line: Json) -> list[Json]:
        """OpenAI completion chunks for one Ollama ``/api/generate`` line."""
        if "error" in line:
            raise TranslationError(str(line["error"]))
        out: list[Json] = []
        text = line.get("response") or ""
        if text:
            out.append(self._chunk([{"index": 0, "text": text, "logprobs": None, "finish_reason": None}]))
        if line.get("done"):
            self.done = True
            self.usage = usage_from_ollama(line)
            reason = _finish_reason(line.get("done_reason"), False)
            out.append(self._chunk([{"index": 0, "text": "", "logprobs": None, "finish_reason": reason}]))
            out.append(self._chunk([], usage=self.usage))
        return out


# --- Ollama request -> OpenAI request (the gateway's /api/* endpoints) -------------------------


def _openai_params_from_ollama(body: Json) -> Json:
    out: Json = {}
    options = body.get("options") or {}
    for key in _OPTION_KEYS:
        if options.get(key) is not None:
            out[key] = options[key]
    if options.get("num_predict") is not None and options["num_predict"] >= 0:
        out["max_tokens"] = options["num_predict"]
    if options.get("stop"):
        out["stop"] = options["stop"]
    fmt = body.get("format")
    if fmt == "json":
        out["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt}}
    if "keep_alive" in body:
        out["keep_alive"] = body["keep_alive"]
    return out


def _openai_content(text: str, images: list[str]) -> Any:
    if not images:
        return text
    parts: list[Json] = [{"type": "text", "text": text}] if text else []
    for b64 in images:
        parts.append({"type": "image_url", "image_url": {"url": f"data:{_image_mime(b64)};base64,{b64}"}})
    return parts


def ollama_chat_request_to_openai(body: Json) -> Json:
    """An Ollama ``/api/chat`` body as an OpenAI chat body (``stream`` defaults to true, as in Ollama)."""
    messages: list[Json] = []
    last_call_ids: dict[str, str] = {}
    for msg in body.get("messages") or []:
        role = msg.get("role", "user")
        item: Json = {"role": role, "content": _openai_content(msg.get("content") or "", msg.get("images") or [])}
        if role == "assistant" and msg.get("tool_calls"):
            calls = _ollama_tool_calls_to_openai(msg["tool_calls"])
            for c in calls:
                last_call_ids[c["function"]["name"]] = c["id"]
            item["tool_calls"] = calls
            if not item["content"]:
                item["content"] = None
        if role == "tool":
            name = msg.get("tool_name") or msg.get("name") or ""
            item["tool_call_id"] = last_call_ids.get(name) or new_tool_call_id()
            if name:
                item["name"] = name
        messages.append(item)
    out: Json = {"model": body.get("model"), "messages": messages, "stream": body.get("stream", True) is not False}
    if body.get("tools"):
        out["tools"] = body["tools"]
    out.update(_openai_params_from_ollama(body))
    return out


def ollama_generate_request_to_openai(body: Json) -> Json:
    """An Ollama ``/api/generate`` body as an OpenAI chat body: Ollama applies the chat template
    to ``prompt`` (unless ``raw``), so a generate call is a one-turn chat with optional system."""
    messages: list[Json] = []
    if body.get("system"):
        messages.append({"role": "system", "content": body["system"]})
    messages.append({"role": "user", "content": _openai_content(body.get("prompt") or "", body.get("images") or [])})
    out: Json = {"model": body.get("model"), "messages": messages, "stream": body.get("stream", True) is not False}
    out.update(_openai_params_from_ollama(body))
    return out


def ollama_embed_request_to_openai(body: Json) -> Json:
    """An Ollama ``/api/embed`` body as an OpenAI ``/v1/embeddings`` body."""
    inputs = body.get("input")
    if inputs is None:
        inputs = body.get("prompt", "")
    out: Json = {"model": body.get("model"), "input": inputs, "encoding_format": "float"}
    if body.get("dimensions") is not None:
        out["dimensions"] = body["dimensions"]
    return out


# --- OpenAI reply -> Ollama reply --------------------------------------------------------------


def _ollama_tool_calls(calls: list[Json]) -> list[Json]:
    out = []
    for call in calls:
        fn = call.get("function") or {}
        out.append({"function": {"name": fn.get("name", ""), "arguments": _arguments_object(fn.get("arguments"))}})
    return out


def _ollama_done_fields(usage: Json | None, finish_reason: Any, total_ns: int) -> Json:
    usage = usage or {}
    return {
        "done": True,
        "done_reason": "length" if finish_reason == "length" else "stop",
        "total_duration": total_ns,
        "load_duration": 0,
        "prompt_eval_count": int(usage.get("prompt_tokens") or 0),
        "prompt_eval_duration": 0,
        "eval_count": int(usage.get("completion_tokens") or 0),
        "eval_duration": 0,
    }


def openai_chat_to_ollama(data: Json, *, model: str, total_ns: int = 0) -> Json:
    """An OpenAI ``chat.completion`` as an Ollama ``/api/chat`` reply (``stream: false``)."""
    choice = (data.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    message: Json = {"role": "assistant", "content": msg.get("content") or ""}
    if msg.get("tool_calls"):
        message["tool_calls"] = _ollama_tool_calls(msg["tool_calls"])
    if msg.get("reasoning_content"):
        message["thinking"] = msg["reasoning_content"]
    return {
        "model": model,
        "created_at": iso_now(),
        "message": message,
        **_ollama_done_fields(data.get("usage"), choice.get("finish_reason"), total_ns),
    }


def openai_completion_to_ollama(data: Json, *, model: str, total_ns: int = 0) -> Json:
    """An OpenAI ``chat.completion`` as an Ollama ``/api/generate`` reply (``stream: false``)."""
    choice = (data.get("choices") or [{}])[0]
    text = (choice.get("message") or {}).get("content") if "message" in choice else choice.get("text")
    out: Json = {"model": model, "created_at": iso_now(), "response": text or ""}
    reasoning = (choice.get("message") or {}).get("reasoning_content")
    if reasoning:
        out["thinking"] = reasoning
    return {**out, **_ollama_done_fields(data.get("usage"), choice.get("finish_reason"), total_ns)}


def openai_embeddings_to_ollama(data: Json, *, model: str, total_ns: int = 0) -> Json:
    """An OpenAI embeddings reply as an Ollama ``/api/embed`` reply."""
    items = sorted(data.get("data") or [], key=lambda d: d.get("index", 0))
    vectors = [
        decode_embedding_base64(d["embedding"]) if isinstance(d.get("embedding"), str) else d.get("embedding")
        for d in items
    ]
    usage = data.get("usage") or {}
    return {
        "model": model,
        "embeddings": vectors,
        "total_duration": total_ns,
        "load_duration": 0,
        "prompt_eval_count": int(usage.get("prompt_tokens") or 0),
    }


class OpenAIToOllamaStream:
    """OpenAI chat chunks in, Ollama NDJSON objects out (``/api/chat`` or ``/api/generate`` shape).

    Content deltas go out as they arrive; tool-call fragments are assembled and sent with the
    final line, since Ollama clients expect whole calls; :meth:`finish` builds the ``done`` line
    from the finish reason and the usage chunk.
    """

    def __init__(self, *, model: str, generate: bool = False) -> None:
        self.model = model
        self.generate = generate
        self.finish_reason: Any = None
        self.usage: Json | None = None
        self._calls: dict[int, Json] = {}

    def _line(self, content: str, **extra: Any) -> Json:
        if self.generate:
            return {"model": self.model, "created_at": iso_now(), "response": content, "done": False, **extra}
        return {
            "model": self.model,
            "created_at": iso_now(),
            "message": {"role": "assistant", "content": content, **extra},
            "done": False,
        }

    def feed(self, chunk: Json) -> list[Json]:
        """Ollama NDJSON lines for one OpenAI chunk (tool call deltas are held until the end)."""
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        out: list[Json] = []
        for choice in chunk.get("choices") or []:
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            delta = choice.get("delta") or {}
            text = delta.get("content") if "delta" in choice else choice.get("text")
            if delta.get("reasoning_content"):  # chat: message.thinking; generate: thinking
                out.append(self._line("", thinking=delta["reasoning_content"]))
            if text:
                out.append(self._line(text))
            for frag in delta.get("tool_calls") or []:
                slot = self._calls.setdefault(int(frag.get("index", 0)), {"name": "", "arguments": ""})
                fn = frag.get("function") or {}
                slot["name"] += fn.get("name") or ""
                slot["arguments"] += fn.get("arguments") or ""
        return out

    def finish(self, total_ns: int = 0) -> Json:
        """The final ``done`` line: tool calls, finish reason, usage and timings."""
        done = self._line("")
        if self._calls and not self.generate:
            done["message"]["tool_calls"] = [
                {"function": {"name": c["name"], "arguments": _arguments_object(c["arguments"])}}
                for _, c in sorted(self._calls.items())
            ]
        done.update(_ollama_done_fields(self.usage, self.finish_reason, total_ns))
        return done


__all__ = [
    "OllamaChatStream",
    "OllamaGenerateStream",
    "OpenAIToOllamaStream",
    "chat_messages_to_ollama",
    "chat_request_to_ollama",
    "completion_request_to_ollama",
    "decode_embedding_base64",
    "embeddings_request_to_ollama",
    "encode_embedding_base64",
    "new_tool_call_id",
    "ollama_chat_request_to_openai",
    "ollama_chat_to_openai",
    "ollama_embed_request_to_openai",
    "ollama_embed_to_openai",
    "ollama_generate_request_to_openai",
    "ollama_generate_to_openai",
    "openai_chat_to_ollama",
    "openai_completion_to_ollama",
    "openai_embeddings_to_ollama",
    "usage_from_ollama",
]
