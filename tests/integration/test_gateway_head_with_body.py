"""A response's head and body in one write, over a real socket (``head_with_body.py``): the
client receives a whole reply as one TCP data segment; a head whose body comes later is still
sent at once; kept-alive and streamed replies are whole."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import httpx
import orjson
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from tests.integration import test_gateway_fakes as fakes
from tests.integration.test_gateway_fakes import REPLY_TEXT, FakeScorer, Fleet, fixed, free_port, run_gateway
from tests.integration.test_gateway_resilience import wait_events
from tests.integration.test_gateway_shaping import ASK, ON_OLLAMA, ON_OPENAI, fakefleet, settings
from turnout.gateway.header_guard import PROTOCOL, GuardedHttpToolsProtocol

pytestmark = pytest.mark.integration

fleet = fakes.fleet
make_settings = fakes.make_settings
__all__ = ["fakefleet", "settings"]  # fixtures

TCPI_DATA_SEGS_IN = 152
"""Offset of ``tcpi_data_segs_in`` in Linux's ``struct tcp_info`` (4.6+): segments that carried data."""


def data_segments_in(writer: asyncio.StreamWriter) -> int:
    sock = writer.get_extra_info("socket")
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    if len(info) < TCPI_DATA_SEGS_IN + 4:
        pytest.skip("this kernel's tcp_info has no data_segs_in")
    return int(struct.unpack_from("I", info, TCPI_DATA_SEGS_IN)[0])


async def _connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def _reply(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:"))
    return head, await asyncio.wait_for(reader.readexactly(length), timeout=5)


def test_the_gateway_uses_the_protocol_that_holds_the_head() -> None:
    module, _, name = PROTOCOL.partition(":")
    assert f"{GuardedHttpToolsProtocol.__module__}:{GuardedHttpToolsProtocol.__name__}" == PROTOCOL
    assert module == "turnout.gateway.header_guard" and name == "GuardedHttpToolsProtocol"


async def test_a_whole_reply_is_one_data_segment_on_kept_alive_requests(fleet: Fleet, make_settings):
    async with run_gateway(make_settings()) as gw:
        reader, writer = await _connect(gw.url)
        segments = []
        for _ in range(3):
            before = data_segments_in(writer)
            writer.write(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            await writer.drain()
            head, body = await _reply(reader)
            segments.append(data_segments_in(writer) - before)
            assert head.startswith(b"HTTP/1.1 200") and b"x-request-id:" in head.lower()
            assert orjson.loads(body)["status"] == "ok"
        writer.close()
    assert segments == [1, 1, 1]


async def test_a_streamed_reply_is_whole_over_a_real_socket(redis_url, keys, settings):
    async with FakeScorer(redis_url, keys, fixed(ON_OPENAI)).running(), run_gateway(settings()) as gw:
        reader, writer = await _connect(gw.url)
        payload = orjson.dumps({"model": "turnout/auto", "messages": ASK, "stream": True})
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + b"content-length: %d\r\n\r\n" % len(payload)
            + payload
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        body = b""
        while not body.endswith(b"0\r\n\r\n"):
            body += await asyncio.wait_for(reader.read(65536), timeout=5)
        writer.close()
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
    assert b"data: [DONE]" in body and b'"content"' in body


async def test_a_stream_whose_upstream_body_has_all_arrived_is_one_data_segment(
    redis_url, redis, keys, fleet, make_settings
):
    """Head, events, ``[DONE]`` and the chunked terminator in one write when nothing more is to
    come from upstream (before: the last events, ``[DONE]`` and the terminator each a write);
    the request is recorded as before, after the last byte."""
    fleet.alpha.mode = "whole"
    scorer = FakeScorer(redis_url, keys, fixed(("m-a", "alpha", "up-a")))
    async with scorer.running(), run_gateway(make_settings()) as gw:
        reader, writer = await _connect(gw.url)
        payload = orjson.dumps({"model": "turnout/auto", "messages": ASK, "stream": True})
        before = data_segments_in(writer)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + b"content-length: %d\r\n\r\n" % len(payload)
            + payload
        )
        await writer.drain()
        got = b""
        while not got.endswith(b"\r\n0\r\n\r\n"):
            got += await asyncio.wait_for(reader.read(65536), timeout=5)
        segments = data_segments_in(writer) - before
        writer.close()
        [event] = await wait_events(redis, keys, 1)
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
    events = [line[6:] for line in body.split(b"\n") if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "".join(REPLY_TEXT)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and "usage" not in chunks[-1]
    assert segments == 1
    assert (event.outcome, event.status, event.completion_tokens) == ("ok", 200, len(REPLY_TEXT))
    assert event.ttft_ms is not None


@pytest.mark.parametrize("backend", ["alpha", "olla"])
async def test_a_stream_ends_at_its_last_message_not_at_the_upstream_bodys_end(
    redis_url, redis, keys, fleet, make_settings, backend
):
    """The upstream sends ``[DONE]`` (Ollama: ``done``) and ends its body 0.5 s later: the client
    has the whole stream at once, not at the upstream body's end (before: 0.5 s later for SSE;
    Ollama's waited up to ``EOF_WAIT_S``, 50 ms, for it), and the request is recorded."""
    upstream = getattr(fleet, backend)
    upstream.mode, upstream.slow_s = "late_end", 0.5
    target = ("m-a", "alpha", "up-a") if backend == "alpha" else ("m-o", "olla", "up-o")
    scorer = FakeScorer(redis_url, keys, fixed(target))
    async with scorer.running(), run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        t0 = time.monotonic()
        payload = {"model": "turnout/auto", "messages": ASK, "stream": True}
        async with http.stream("POST", "/v1/chat/completions", json=payload) as r:
            body = b"".join([part async for part in r.aiter_bytes()])  # to the body's end
        took = time.monotonic() - t0
        [event] = await wait_events(redis, keys, 1)
    events = [line[6:] for line in body.split(b"\n") if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "".join(REPLY_TEXT)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert took < 0.3
    assert (event.outcome, event.completion_tokens) == ("ok", len(REPLY_TEXT))


def _closed_by_us(port: int) -> int:
    """Connections to ``port`` on 127.0.0.1 this host closed first (TIME_WAIT, /proc/net/tcp)."""
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return sum(1 for r in rows if r[2] == f"0100007F:{port:04X}" and r[3] == "06")


async def test_ollama_streams_read_to_the_end_reuse_the_connection(redis_url, keys, settings, fakefleet):
    port = int(fakefleet.url("ollama").rsplit(":", 1)[1].split("/")[0])
    before = _closed_by_us(port)
    async with FakeScorer(redis_url, keys, fixed(ON_OLLAMA)).running(), run_gateway(settings()) as gw:
        client = gw.openai()
        for _ in range(4):
            chunks = [
                c async for c in await client.chat.completions.create(model="turnout/auto", messages=ASK, stream=True)
            ]
            assert chunks[-1].choices == [] or chunks[-1].choices[0].finish_reason is not None
            assert any(c.choices and c.choices[0].delta.content for c in chunks)
        closed = _closed_by_us(port) - before
    assert closed <= 1  # the pool's connection, when the gateway stops; not one per stream


async def test_a_head_whose_body_comes_later_is_sent_at_once() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
        await asyncio.sleep(0.5)
        await send({"type": "http.response.body", "body": b"late"})

    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="off", log_config=None, http=GuardedHttpToolsProtocol
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        reader, writer = await _connect(f"http://127.0.0.1:{port}")
        t0 = time.monotonic()
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        head_s = time.monotonic() - t0
        body = await asyncio.wait_for(reader.readexactly(4), timeout=5)
        body_s = time.monotonic() - t0
        writer.close()
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)
    assert head.startswith(b"HTTP/1.1 200") and body == b"late"
    assert head_s < 0.3 < 0.45 < body_s
