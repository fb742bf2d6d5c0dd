"""``StreamResponse`` (``streaming.py``): a body's :class:`Last` chunk goes out with the end of the
response in one message, and what the body does after it runs once the client has the last byte."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from starlette.types import Message

from turnout.gateway.streaming import Last, StreamResponse


async def _never() -> Message:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def _run(body: AsyncIterator[bytes], log: list[object], *, log_receive: bool = False) -> None:
    async def send(message: Message) -> None:
        log.append((message["type"], message.get("body"), message.get("more_body")))

    async def on_close() -> None:
        log.append("on_close")

    async def receive() -> Message:
        log.append("receive")
        return await _never()

    response = StreamResponse(body, media_type="text/event-stream", headers=[], on_close=on_close)
    await response({}, receive if log_receive else _never, send)


async def test_the_last_chunk_ends_the_response_and_the_body_goes_on_after_it() -> None:
    log: list[object] = []

    async def body() -> AsyncIterator[bytes]:
        yield b"a"
        yield Last(b"b")
        log.append("bookkeeping")

    await _run(body(), log)
    assert log == [
        ("http.response.start", None, None),
        ("http.response.body", b"a", True),
        ("http.response.body", b"b", False),
        "bookkeeping",
        "on_close",
    ]


async def test_a_body_without_a_last_chunk_is_ended_by_an_empty_one() -> None:
    log: list[object] = []

    async def body() -> AsyncIterator[bytes]:
        yield b"a"
        log.append("bookkeeping")

    await _run(body(), log)
    assert log == [
        ("http.response.start", None, None),
        ("http.response.body", b"a", True),
        "bookkeeping",
        ("http.response.body", b"", False),
        "on_close",
    ]


async def test_a_chunk_after_the_last_is_an_error() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield Last(b"a")
        yield b"b"

    with pytest.raises(RuntimeError, match="after its Last chunk"):
        await _run(body(), [])


async def test_the_disconnect_listener_starts_after_the_first_write_and_not_for_a_stream_in_one() -> None:
    log: list[object] = []

    async def body() -> AsyncIterator[bytes]:
        await asyncio.sleep(0)  # the task lets others run before its first chunk
        yield b"a"
        await asyncio.sleep(0.01)
        yield Last(b"b")

    await _run(body(), log, log_receive=True)
    assert log[:3] == [("http.response.start", None, None), ("http.response.body", b"a", True), "receive"]

    log.clear()

    async def whole() -> AsyncIterator[bytes]:
        yield Last(b"a")
        await asyncio.sleep(0.01)  # bookkeeping that waits: still no listener

    await _run(whole(), log, log_receive=True)
    assert "receive" not in log
