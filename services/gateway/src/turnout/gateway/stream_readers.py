"""Reading an upstream stream: one list of OpenAI chunks per network read, in the gateway's shape.

OpenAI-dialect SSE events get the gateway's response id and the public model name; Ollama NDJSON
lines are translated by :mod:`turnout.common.backends.translate`. A line or event that is not
JSON, or JSON that is not an object, is a :class:`BrokenReply` (before the first byte: the next
candidate is tried); an ``error`` object in the stream is a 502 from that backend.

A reader stops at its stream's last message (SSE ``[DONE]``, Ollama's ``done`` line) and marks its
:class:`Reading` complete before it hands on the batch that holds it: the rest of the reply can go
out at once, without waiting for the body's end, which :func:`until_eof` reads after the last byte.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from turnout.common.backends.translate import OllamaChatStream, OllamaGenerateStream
from turnout.common.errors import BackendStatusError, BackendUnavailable
from turnout.common.schemas.route import CandidateV1, RequestKind
from turnout.gateway.errors import BrokenReply
from turnout.gateway.wire import ndjson_lines, read_batches, sse_payloads

if TYPE_CHECKING:
    from turnout.gateway.forwarding import Exchange

Json = dict[str, Any]


@dataclass(slots=True)
class Reading:
    """What a reader knows of its stream beyond the batches."""

    complete: bool = False
    """The stream's last message is read: the reader yields nothing more that needs the network."""


async def sse_chunks(
    ex: Exchange, cand: CandidateV1, resp: aiohttp.ClientResponse, reading: Reading
) -> AsyncGenerator[list[Json], None]:
    """An OpenAI-compatible backend's SSE stream as batches of chat chunks, up to ``[DONE]``."""
    rid, model = ex.response_id, cand.model
    emitted = 0
    async for payloads in read_batches(resp, sse_payloads, cand.backend):
        batch: list[Json] = []
        for payload in payloads:
            if payload == b"[DONE]":
                reading.complete = True
                continue
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError as exc:
                raise BrokenReply(f"{cand.backend}: stream event is not JSON", backend=cand.backend) from exc
            if not isinstance(chunk, dict):
                raise BrokenReply(f"{cand.backend}: stream event is not a JSON object", backend=cand.backend)
            if "error" in chunk and not chunk.get("choices"):
                raise BackendStatusError(
                    f"{cand.backend}: error in stream", status=502, body=payload, backend=cand.backend
                )
            chunk["id"] = rid
            chunk["model"] = model
            usage = chunk.get("usage")
            if usage:
                ex.usage = usage
            if _carries_tokens(chunk):
                emitted += 1
            batch.append(chunk)
        if batch:
            yield batch
        if reading.complete:
            break
    if ex.usage is None:
        yield [_estimated_usage(ex, cand, emitted)]


def _estimated_usage(ex: Exchange, cand: CandidateV1, emitted: int) -> Json:
    """The upstream ignored ``include_usage``: close with an estimate (content chunks ≈ tokens;
    role-only and finish-only chunks carry none)."""
    prompt = ex.decision.request.est_prompt_tokens if ex.decision and ex.decision.request else 0
    ex.usage = {"prompt_tokens": prompt, "completion_tokens": emitted, "total_tokens": prompt + emitted}
    obj = "chat.completion.chunk" if ex.kind is RequestKind.CHAT else "text_completion"
    return {
        "id": ex.response_id,
        "object": obj,
        "created": ex.created,
        "model": cand.model,
        "choices": [],
        "usage": ex.usage,
    }


async def ollama_chunks(
    ex: Exchange, name: str, cand: CandidateV1, resp: aiohttp.ClientResponse, reading: Reading
) -> AsyncGenerator[list[Json], None]:
    """An Ollama backend's NDJSON stream translated to batches of OpenAI chunks."""
    translator: OllamaChatStream | OllamaGenerateStream
    if ex.kind is RequestKind.CHAT:
        translator = OllamaChatStream(response_id=ex.response_id, model=cand.model, created=ex.created)
    else:
        translator = OllamaGenerateStream(response_id=ex.response_id, model=cand.model, created=ex.created)
    async for lines in read_batches(resp, ndjson_lines, name):
        batch: list[Json] = []
        for line in lines:
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise BrokenReply(f"{name}: stream line is not JSON", backend=name) from exc
            if not isinstance(obj, dict):
                raise BrokenReply(f"{name}: stream line is not a JSON object", backend=name)
            if "error" in obj:
                raise BackendStatusError(f"{name}: error in stream", status=502, body=line, backend=name)
            batch.extend(translator.feed(obj))
        if translator.usage is not None:
            ex.usage = translator.usage
        reading.complete = translator.done
        if batch:
            yield batch
        if translator.done:
            return
    if not translator.done:
        raise BackendUnavailable(f"{name}: stream ended before done", backend=name)


EOF_WAIT_S = 0.05
"""After a stream's last message, how long to wait for the body's end."""


async def until_eof(resp: aiohttp.ClientResponse) -> None:
    """Read a stream's body to its end after its last message (the chunked terminator usually
    follows at once): at its end aiohttp puts the connection back in the pool, where stopping
    short closed it and the next stream connected anew (~4 % of a stream's gateway CPU on the
    2-core box). A server slower than ``EOF_WAIT_S`` gets its connection closed as before."""
    if resp.content.is_eof():
        return
    try:
        async with asyncio.timeout(EOF_WAIT_S):
            await resp.content.read()
    except (TimeoutError, aiohttp.ClientError, OSError):
        return


def _carries_tokens(chunk: Json) -> bool:
    """Whether a stream chunk carries generated tokens (content, completion text or tool calls)."""
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("tool_calls") or choice.get("text"):
            return True
    return False
