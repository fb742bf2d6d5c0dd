"""Anthropic Messages API (``/v1/messages``) <-> chat completions (pure functions, no I/O).

Requests: ``system`` (a string or text blocks), ``messages`` with text, image (base64 or URL
source), ``tool_use`` and ``tool_result`` blocks, ``tools`` (``input_schema``), ``tool_choice``
(auto / any / tool / none), ``max_tokens``, ``stop_sequences``, ``temperature``, ``top_p``,
``top_k``. Earlier ``thinking`` blocks are not replayed. Documents and server tools raise
:class:`TranslationError`.

Replies: a ``message`` with thinking (the shaper's ``reasoning_content``, when the request
enabled thinking), text and ``tool_use`` blocks, and ``stop_reason`` end_turn / max_tokens /
tool_use; streams as Anthropic's events (``message_start``, ``content_block_start`` /
``_delta`` / ``_stop``, ``message_delta``, ``message_stop``).
"""

from __future__ import annotations

from typing import Any

import orjson

from turnout.common.backends.responses_api import ChunkTranslator, new_id, sse_event
from turnout.common.errors import TranslationError

Json = dict[str, Any]

_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(b.get("text") or "" for b in content or () if isinstance(b, dict) and b.get("type") == "text")


def _image_part(block: Json) -> Json:
    source = block.get("source") or {}
    kind = source.get("type")
    if kind == "base64":
        url = f"data:{source.get('media_type') or 'image/png'};base64,{source.get('data') or ''}"
    elif kind == "url":
        url = source.get("url") or ""
    else:
        raise TranslationError(f"image source of type '{kind}' is not supported (base64 or url)")
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result_text(block: Json) -> str:
    content = block.get("content")
    text = content if isinstance(content, str) else _text_of(content)
    return f"Error: {text}" if block.get("is_error") else text


def _user_messages(content: Any) -> list[Json]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tool_results: list[Json] = []
    parts: list[Json] = []
    for block in content or ():
        kind = block.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text") or ""})
        elif kind == "image":
            parts.append(_image_part(block))
        elif kind == "tool_result":
            tool_results.append(
                {"role": "tool", "tool_call_id": block.get("tool_use_id") or "", "content": _tool_result_text(block)}
            )
        else:
            raise TranslationError(f"content blocks of type '{kind}' are not supported in user turns")
    out = list(tool_results)
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        out.append({"role": "user", "content": "\n".join(p["text"] for p in parts) if only_text else parts})
    return out


def _assistant_message(content: Any) -> Json:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[Json] = []
    for block in content or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            args = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {
                    "id": block.get("id") or new_id("toolu"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": args},
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise TranslationError(f"content blocks of type '{kind}' are not supported in assistant turns")
    msg: Json = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        msg["tool_calls"] = calls
    return msg


def messages_request_to_chat(req: Json) -> Json:
    """A Messages request (a dict, fields as the API names them) as a chat completions body."""
    messages: list[Json] = []
    system = req.get("system")
    if system:
        messages.append({"role": "system", "content": _text_of(system)})
    for msg in req.get("messages") or ():
        if msg.get("role") == "assistant":
            messages.append(_assistant_message(msg.get("content")))
        else:
            messages.extend(_user_messages(msg.get("content")))
    body: Json = {"messages": messages, "max_tokens": req.get("max_tokens")}
    for key in ("model", "temperature", "top_p", "top_k", "stream"):
        if req.get(key) is not None:
            body[key] = req[key]
    if req.get("stop_sequences"):
        body["stop"] = req["stop_sequences"]
    tools = [_chat_tool(t) for t in req.get("tools") or ()]
    if tools:
        body["tools"] = tools
    choice = req.get("tool_choice") or {}
    kind = choice.get("type")
    if kind == "any":
        body["tool_choice"] = "required"
    elif kind == "tool":
        body["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif kind in ("auto", "none"):
        body["tool_choice"] = kind
    if choice.get("disable_parallel_tool_use"):
        body["parallel_tool_calls"] = False
    return body


def _chat_tool(tool: Json) -> Json:
    if tool.get("type") not in (None, "custom"):
        raise TranslationError(f"tools of type '{tool.get('type')}' are not supported; only custom tools")
    fn: Json = {"name": tool.get("name"), "parameters": tool.get("input_schema") or {"type": "object"}}
    if tool.get("description"):
        fn["description"] = tool["description"]
    return {"type": "function", "function": fn}


def thinking_enabled(req: Json) -> bool:
    thinking = req.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") == "enabled"


# --- whole reply -----------------------------------------------------------------------------------


def _usage(usage: Json | None) -> Json:
    usage = usage or {}
    return {
        "input_tokens": int(usage.get("prompt_tokens") or 0),
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _tool_input(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return orjson.loads(arguments) if arguments.strip() else {}
        except orjson.JSONDecodeError:
            return {"_raw": arguments}
    return arguments or {}


def chat_to_message(data: Json, *, message_id: str, model: str, thinking: bool) -> Json:
    """A ``chat.completion`` as an Anthropic ``message``."""
    choice = (data.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    content: list[Json] = []
    if thinking and msg.get("reasoning_content"):
        content.append({"type": "thinking", "thinking": msg["reasoning_content"], "signature": ""})
    if msg.get("content"):
        content.append({"type": "text", "text": msg["content"]})
    for call in msg.get("tool_calls") or ():
        fn = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or new_id("toolu"),
                "name": fn.get("name") or "",
                "input": _tool_input(fn.get("arguments")),
            }
        )
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _STOP.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": _usage(data.get("usage")),
    }


# --- streams ---------------------------------------------------------------------------------------


class ChatToMessagesStream(ChunkTranslator):
    """Chat completion chunks in, Anthropic Messages SSE events out (one content block at a time:
    thinking, then text, then each tool call)."""

    def __init__(self, *, message_id: str, model: str, thinking: bool, input_tokens: int = 0) -> None:
        super().__init__()
        self.message_id = message_id
        self.model = model
        self.thinking = thinking
        self.input_tokens = input_tokens
        self._index = -1
        self._open: str | None = None
        self._call_slot: int | None = None

    def start(self) -> bytes:
        self._started = True
        message: Json = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 0},
        }
        return sse_event("message_start", {"type": "message_start", "message": message}) + sse_event(
            "ping", {"type": "ping"}
        )

    def _begin(self, kind: str, block: Json) -> bytes:
        out = self._stop()
        self._index += 1
        self._open = kind
        return out + sse_event(
            "content_block_start", {"type": "content_block_start", "index": self._index, "content_block": block}
        )

    def _stop(self) -> bytes:
        if self._open is None:
            return b""
        out = b""
        if self._open == "thinking":
            delta = {"type": "signature_delta", "signature": ""}
            out = sse_event(
                "content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta}
            )
        self._open = None
        self._call_slot = None
        return out + sse_event("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _delta(self, delta: Json) -> bytes:
        return sse_event("content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta})

    def feed(self, chunk: Json) -> bytes:
        out = b"" if self._started else self.start()
        for delta in self.deltas(chunk):
            reasoning = delta.get("reasoning_content")
            if reasoning and self.thinking:
                if self._open != "thinking":
                    out += self._begin("thinking", {"type": "thinking", "thinking": "", "signature": ""})
                out += self._delta({"type": "thinking_delta", "thinking": reasoning})
            if delta.get("content"):
                if self._open != "text":
                    out += self._begin("text", {"type": "text", "text": ""})
                out += self._delta({"type": "text_delta", "text": delta["content"]})
            for frag in delta.get("tool_calls") or ():
                slot = int(frag.get("index", 0))
                fn = frag.get("function") or {}
                if self._open != "tool_use" or self._call_slot != slot:
                    block = {"type": "tool_use", "id": frag.get("id") or new_id("toolu"), "name": fn.get("name") or ""}
                    out += self._begin("tool_use", {**block, "input": {}})
                    self._call_slot = slot
                if fn.get("arguments"):
                    out += self._delta({"type": "input_json_delta", "partial_json": fn["arguments"]})
        return out

    def finish(self) -> bytes:
        out = (b"" if self._started else self.start()) + self._stop()
        usage = _usage(self.usage)
        delta = {"stop_reason": _STOP.get(self.finish_reason or "stop", "end_turn"), "stop_sequence": None}
        out += sse_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": delta,
                "usage": {"input_tokens": usage["input_tokens"], "output_tokens": usage["output_tokens"]},
            },
        )
        return out + sse_event("message_stop", {"type": "message_stop"})


__all__ = ["ChatToMessagesStream", "chat_to_message", "messages_request_to_chat", "thinking_enabled"]
