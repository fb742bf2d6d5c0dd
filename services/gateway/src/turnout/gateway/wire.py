"""Splitting upstream bodies into complete messages as they arrive: SSE events (OpenAI) and
NDJSON lines (Ollama). A message cut across two network reads waits for its end; everything
complete is handed on at once, one list per read, so streams pass through without buffering."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp

from turnout.common.errors import BackendTimeout, BackendUnavailable

Splitter = Callable[[bytes], tuple[list[bytes], bytes]]


async def read_batches(resp: aiohttp.ClientResponse, split: Splitter, backend: str) -> AsyncIterator[list[bytes]]:
    """Complete events/lines as they arrive, one list per network read; errors as BackendError."""
    buf = b""
    stream = resp.content.iter_any().__aiter__()
    while True:
        try:
            data = await anext(stream)
        except StopAsyncIteration:
            break
        except TimeoutError as exc:
            raise BackendTimeout(f"{backend}: stream stalled", backend=backend) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise BackendUnavailable(f"{backend}: stream broken ({type(exc).__name__})", backend=backend) from exc
        items, buf = split(buf + data if buf else data)
        if items:
            yield items
    if buf.strip():
        items, rest = split(buf + b"\n\n")
        if items:
            yield items


def sse_payloads(buf: bytes) -> tuple[list[bytes], bytes]:
    """Split complete SSE events off ``buf``; return their ``data`` payloads and the remainder."""
    if b"\r" in buf:
        buf = buf.replace(b"\r\n", b"\n")
    out: list[bytes] = []
    start = 0
    while True:
        end = buf.find(b"\n\n", start)
        if end < 0:
            return out, buf[start:]
        event = buf[start:end]
        start = end + 2
        if event.startswith(b"data: ") and b"\n" not in event:
            out.append(event[6:])
            continue
        data = [ln[5:].removeprefix(b" ") for ln in event.split(b"\n") if ln.startswith(b"data:")]
        if data:
            out.append(b"\n".join(data))


def ndjson_lines(buf: bytes) -> tuple[list[bytes], bytes]:
    """The complete non-empty lines in ``buf`` and the partial line left over."""
    head, sep, rest = buf.rpartition(b"\n")
    if not sep:
        return [], buf
    return [ln for ln in head.split(b"\n") if ln.strip()], rest
