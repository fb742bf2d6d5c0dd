"""OpenAI Responses API (``/v1/responses``) <-> chat completions (pure functions, no I/O).

The subset chat models can serve: text and image input (``input_text``, ``input_image``,
assistant ``output_text`` history), ``instructions``, function tools with ``function_call`` /
``function_call_output`` items, ``text.format`` (JSON object / schema), sampling parameters and
``max_output_tokens``. Built-in tools (web search, file search, computer use …), file inputs and
``previous_response_id`` (nothing is stored) raise :class:`TranslationError`.

:func:`responses_request_to_chat` turns a request into a chat body; :func:`chat_to_response`
turns a chat completion into a ``response`` object; :class:`ChatToResponsesStream` turns chat
chunks into the Responses SSE events (``response.created`` … ``response.completed``).
"""

from __future__ import annotations

import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import orjson

from turnout.common.errors import TranslationError

Json = dict[str, Any]

_PASSED = ("temperature", "top_p", "user", "parallel_tool_calls", "stream", "model")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


# --- request -------------------------------------------------------------------------------------


def _content_parts(content: Any, role: str) -> Any:
    if isinstance(content, str):
        return content
    parts: list[Json] = []
    for part in content or ():
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": part.get("text") or ""})
        elif kind == "refusal":
            parts.append({"type": "text", "text": part.get("refusal") or ""})
        elif kind == "input_image":
            url = part.get("image_url")
            if not url:
                raise TranslationError("input_image needs an image_url (file ids are not supported)")
            image: Json = {"url": url}
            if part.get("detail"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise TranslationError(f"input content of type '{kind}' is not supported")
    if role == "assistant" or all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts if p["type"] == "text")
    return parts


def _input_messages(req: Json) -> list[Json]:
    messages: list[Json] = []
    if req.get("instructions"):
        messages.append({"role": "system", "content": req["instructions"]})
    items = req.get("input")
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
        items = []
    for item in items or ():
        kind = item.get("type") or "message"
        if kind == "message":
            role = item.get("role") or "user"
            messages.append({"role": role, "content": _content_parts(item.get("content"), role)})
        elif kind == "function_call":
            call = {
                "id": item.get("call_id") or item.get("id") or new_id("call"),
                "type": "function",
                "function": {"name": item.get("name") or "", "arguments": item.get("arguments") or "{}"},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else orjson.dumps(output).decode()
            messages.append({"role": "tool", "tool_call_id": item.get("call_id") or "", "content": text})
        elif kind != "reasoning":  # earlier reasoning is not replayed to chat models
            raise TranslationError(f"input items of type '{kind}' are not supported")
    if not messages:
        raise TranslationError("'input' must hold at least one message")
    return messages


def _response_format(req: Json) -> Json | None:
    fmt = (req.get("text") or {}).get("format") or {}
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema":
        spec = {"name": fmt.get("name") or "response", "schema": fmt.get("schema") or {}}
        if fmt.get("strict") is not None:
            spec["strict"] = fmt["strict"]
        return {"type": "json_schema", "json_schema": spec}
    return None


def responses_request_to_chat(req: Json) -> Json:
    """A Responses request (a dict, fields as the API names them) as a chat completions body."""
    if req.get("previous_response_id"):
        raise TranslationError(
            "previous_response_id is not supported: this gateway stores no responses; "
            "send the whole conversation in 'input'"
        )
    body: Json = {k: req[k] for k in _PASSED if req.get(k) is not None}
    body["messages"] = _input_messages(req)
    if req.get("max_output_tokens") is not None:
        body["max_tokens"] = req["max_output_tokens"]
    tools = [_chat_tool(t) for t in req.get("tools") or ()]
    if tools:
        body["tools"] = tools
    choice = req.get("tool_choice")
    if isinstance(choice, str):
        body["tool_choice"] = choice
    elif isinstance(choice, dict) and choice.get("type") == "function":
        body["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    rf = _response_format(req)
    if rf is not None:
        body["response_format"] = rf
    return body


def _chat_tool(tool: Json) -> Json:
    if tool.get("type") != "function":
        raise TranslationError(f"tools of type '{tool.get('type')}' are not supported; only function tools")
    fn: Json = {"name": tool.get("name") or ""}
    if tool.get("description"):
        fn["description"] = tool["description"]
    fn["parameters"] = tool.get("parameters") or {"type": "object", "properties": {}}
    if tool.get("strict") is not None:
        fn["strict"] = tool["strict"]
    return {"type": "function", "function": fn}


# --- whole reply -----------------------------------------------------------------------------------


def response_usage(usage: Json | None) -> Json:
    usage = usage or {}
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def response_object(
    req: Json, *, response_id: str, model: str, created: int, output: list[Json], status: str, usage: Json | None
) -> Json:
    fmt = (req.get("text") or {}).get("format") or {"type": "text"}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": req.get("instructions"),
        "max_output_tokens": req.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": req.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": False,
        "temperature": req.get("temperature"),
        "text": {"format": fmt},
        "tool_choice": req.get("tool_choice") or "auto",
        "tools": req.get("tools") or [],
        "top_p": req.get("top_p"),
        "truncation": "disabled",
        "usage": response_usage(usage) if usage is not None else None,
        "user": req.get("user"),
        "metadata": req.get("metadata") or {},
    }


def _reasoning_item(text: str, item_id: str | None = None) -> Json:
    return {
        "type": "reasoning",
        "id": item_id or new_id("rs"),
        "summary": [{"type": "summary_text", "text": text}],
        "status": "completed",
    }


def _message_item(text: str, item_id: str | None = None, status: str = "completed") -> Json:
    return {
        "type": "message",
        "id": item_id or new_id("msg"),
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def _call_item(call_id: str, name: str, arguments: str, item_id: str | None = None, status: str = "completed") -> Json:
    return {
        "type": "function_call",
        "id": item_id or new_id("fc"),
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def chat_to_response(data: Json, req: Json, *, response_id: str, model: str, created: int | None = None) -> Json:
    """A ``chat.completion`` as a Responses ``response`` object."""
    choice = (data.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    output: list[Json] = []
    if msg.get("reasoning_content"):
        output.append(_reasoning_item(msg["reasoning_content"]))
    if msg.get("content"):
        output.append(_message_item(msg["content"]))
    for call in msg.get("tool_calls") or ():
        fn = call.get("function") or {}
        output.append(_call_item(call.get("id") or new_id("call"), fn.get("name") or "", fn.get("arguments") or ""))
    if not output:
        output.append(_message_item(""))
    status = "incomplete" if choice.get("finish_reason") == "length" else "completed"
    return response_object(
        req,
        response_id=response_id,
        model=model,
        created=created or int(time.time()),
        output=output,
        status=status,
        usage=data.get("usage") or {},
    )


# --- streams ---------------------------------------------------------------------------------------


def sse_event(name: str, data: Json) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class ChunkTranslator(ABC):
    """What every translator of chat completion chunks into another dialect's stream shares: it
    translates choice 0 (clients of the other dialects ask for one answer), keeps the latest
    ``usage`` and ``finish_reason`` for its closing events, and opens the stream (:meth:`start`)
    before the first chunk's events."""

    def __init__(self) -> None:
        self.usage: Json | None = None
        self.finish_reason: str | None = None
        self._started = False

    @abstractmethod
    def start(self) -> bytes:
        """The events that open the stream."""

    def deltas(self, chunk: Json) -> Iterator[Json]:
        """The delta of choice 0 in ``chunk`` (none when it has no choice 0), noting the chunk's
        usage and finish reason on the way."""
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            yield choice.get("delta") or {}


class ChatToResponsesStream(ChunkTranslator):
    """Chat completion chunks in, Responses SSE events out.

    Text goes out as ``response.output_text.delta`` inside a message item; tool-call fragments
    as ``response.function_call_arguments.delta`` inside function_call items; reasoning (the
    shaper's ``reasoning_content``) as a reasoning item with its summary, closed when the answer
    starts. :meth:`start` opens with ``response.created`` / ``response.in_progress``;
    :meth:`finish` closes open items and ends with ``response.completed`` (or ``incomplete``).
    """

    def __init__(self, req: Json, *, response_id: str, model: str, created: int | None = None) -> None:
        super().__init__()
        self.req = req
        self.response_id = response_id
        self.model = model
        self.created = created or int(time.time())
        self.seq = 0
        self.output: list[Json] = []
        self._reasoning: Json | None = None
        self._text: Json | None = None
        self._calls: dict[int, Json] = {}

    def _event(self, kind: str, /, **data: Any) -> bytes:
        out = sse_event(kind, {"type": kind, "sequence_number": self.seq, **data})
        self.seq += 1
        return out

    def _response(self, status: str) -> Json:
        return response_object(
            self.req,
            response_id=self.response_id,
            model=self.model,
            created=self.created,
            output=list(self.output) if status != "in_progress" else [],
            status=status,
            usage=self.usage if status != "in_progress" else None,
        )

    def start(self) -> bytes:
        self._started = True
        created = self._response("in_progress")
        return self._event("response.created", response=created) + self._event("response.in_progress", response=created)

    def feed(self, chunk: Json) -> bytes:
        out = b"" if self._started else self.start()
        for delta in self.deltas(chunk):
            if delta.get("reasoning_content"):
                out += self._reason(delta["reasoning_content"])
            if delta.get("content"):
                out += self._close_reasoning() + self._say(delta["content"])
            for frag in delta.get("tool_calls") or ():
                out += self._close_reasoning() + self._close_text() + self._call(frag)
        return out

    def _add(self, item: Json) -> tuple[int, bytes]:
        index = len(self.output)
        self.output.append(item)
        return index, self._event("response.output_item.added", output_index=index, item=item)

    def _reason(self, text: str) -> bytes:
        out = b""
        if self._reasoning is None:
            item = {**_reasoning_item(""), "summary": [], "status": "in_progress"}
            index, out = self._add(item)
            self._reasoning = {"index": index, "item": item, "text": ""}
            out += self._event(
                "response.reasoning_summary_part.added",
                item_id=item["id"],
                output_index=index,
                summary_index=0,
                part={"type": "summary_text", "text": ""},
            )
        r = self._reasoning
        r["text"] += text
        return out + self._event(
            "response.reasoning_summary_text.delta",
            item_id=r["item"]["id"],
            output_index=r["index"],
            summary_index=0,
            delta=text,
        )

    def _close_reasoning(self) -> bytes:
        r, self._reasoning = self._reasoning, None
        if r is None:
            return b""
        item_id, index, text = r["item"]["id"], r["index"], r["text"]
        done = _reasoning_item(text, item_id)
        self.output[index] = done
        part = {"type": "summary_text", "text": text}
        return (
            self._event(
                "response.reasoning_summary_text.done", item_id=item_id, output_index=index, summary_index=0, text=text
            )
            + self._event(
                "response.reasoning_summary_part.done", item_id=item_id, output_index=index, summary_index=0, part=part
            )
            + self._event("response.output_item.done", output_index=index, item=done)
        )

    def _say(self, text: str) -> bytes:
        out = b""
        if self._text is None:
            item = {**_message_item(""), "status": "in_progress", "content": []}
            index, out = self._add(item)
            self._text = {"index": index, "item": item, "text": ""}
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out += self._event(
                "response.content_part.added", item_id=item["id"], output_index=index, content_index=0, part=part
            )
        t = self._text
        t["text"] += text
        return out + self._event(
            "response.output_text.delta",
            item_id=t["item"]["id"],
            output_index=t["index"],
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def _close_text(self) -> bytes:
        t, self._text = self._text, None
        if t is None:
            return b""
        item_id, index, text = t["item"]["id"], t["index"], t["text"]
        done = _message_item(text, item_id)
        self.output[index] = done
        part = done["content"][0]
        return (
            self._event(
                "response.output_text.done",
                item_id=item_id,
                output_index=index,
                content_index=0,
                text=text,
                logprobs=[],
            )
            + self._event("response.content_part.done", item_id=item_id, output_index=index, content_index=0, part=part)
            + self._event("response.output_item.done", output_index=index, item=done)
        )

    def _call(self, frag: Json) -> bytes:
        slot = int(frag.get("index", 0))
        fn = frag.get("function") or {}
        out = b""
        call = self._calls.get(slot)
        if call is None:
            item = _call_item(frag.get("id") or new_id("call"), fn.get("name") or "", "", status="in_progress")
            index, out = self._add(item)
            call = self._calls[slot] = {"index": index, "item": item, "arguments": ""}
        elif fn.get("name"):
            call["item"]["name"] += fn["name"]
        args = fn.get("arguments") or ""
        if args:
            call["arguments"] += args
            out += self._event(
                "response.function_call_arguments.delta",
                item_id=call["item"]["id"],
                output_index=call["index"],
                delta=args,
            )
        return out

    def _close_calls(self) -> bytes:
        out = b""
        for _, call in sorted(self._calls.items()):
            item = call["item"]
            done = _call_item(item["call_id"], item["name"], call["arguments"], item["id"])
            self.output[call["index"]] = done
            out += self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=call["index"],
                name=item["name"],
                arguments=call["arguments"],
            )
            out += self._event("response.output_item.done", output_index=call["index"], item=done)
        self._calls = {}
        return out

    def finish(self) -> bytes:
        out = b"" if self._started else self.start()
        out += self._close_reasoning() + self._close_text() + self._close_calls()
        if self.finish_reason == "length":
            return out + self._event("response.incomplete", response=self._response("incomplete"))
        return out + self._event("response.completed", response=self._response("completed"))

    def error(self, message: str, code: str | None) -> bytes:
        """The ``error`` event a broken stream ends with."""
        return self._event("error", code=code, message=message, param=None)


__all__ = [
    "ChatToResponsesStream",
    "ChunkTranslator",
    "chat_to_response",
    "new_id",
    "response_object",
    "responses_request_to_chat",
    "sse_event",
]
