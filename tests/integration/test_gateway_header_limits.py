"""Header bounds over a real socket: 64 MB of headers are refused early (431) and a half-sent
header is closed (408) after ``header_timeout_s``, while normal and kept-alive requests pass."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from tests.integration import test_gateway_fakes as fakes
from tests.integration.test_gateway_fakes import Fleet, run_gateway

pytestmark = pytest.mark.integration

fleet = fakes.fleet
make_settings = fakes.make_settings


async def _connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def test_64_mb_of_headers_are_refused_before_they_are_read(fleet: Fleet, make_settings):
    async with run_gateway(make_settings(max_header_bytes=64 * 1024)) as gw:
        reader, writer = await _connect(gw.url)
        line = b"x-filler: " + b"a" * 1000 + b"\r\n"
        sent = 0

        async def flood() -> None:
            nonlocal sent
            writer.write(b"GET /health HTTP/1.1\r\nhost: x\r\n")
            with contextlib.suppress(OSError):
                while sent < 64 * 1024 * 1024:
                    writer.write(line * 64)
                    await writer.drain()
                    sent += len(line) * 64

        t0 = time.monotonic()
        flooding = asyncio.ensure_future(flood())
        reply = b""
        with contextlib.suppress(OSError):
            while chunk := await asyncio.wait_for(reader.read(65536), timeout=5):
                reply += chunk
        await asyncio.wait_for(flooding, timeout=5)
        elapsed = time.monotonic() - t0
        writer.close()
    assert reply == b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    assert sent < 8 * 1024 * 1024  # cut long before 64 MB: ~1 MB is read and dropped after the reply
    assert elapsed < 5


async def test_a_half_sent_header_is_closed_after_the_header_timeout(fleet: Fleet, make_settings):
    async with run_gateway(make_settings(header_timeout_s=0.5)) as gw:
        reader, writer = await _connect(gw.url)
        writer.write(b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: ")
        await writer.drain()
        t0 = time.monotonic()
        reply = await asyncio.wait_for(reader.read(), timeout=5)
        held = time.monotonic() - t0
        writer.close()
        silent_reader, silent = await _connect(gw.url)  # connects and sends nothing
        t0 = time.monotonic()
        silent_reply = await asyncio.wait_for(silent_reader.read(), timeout=5)
        silent_held = time.monotonic() - t0
        silent.close()
    assert reply == b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    assert 0.4 < held < 2.0
    assert silent_reply.startswith(b"HTTP/1.1 408") and 0.4 < silent_held < 2.0


async def test_normal_and_kept_alive_requests_pass(fleet: Fleet, make_settings):
    async with run_gateway(make_settings(header_timeout_s=0.5, max_header_bytes=4096)) as gw:
        reader, writer = await _connect(gw.url)
        replies = []
        for _ in range(3):
            writer.write(b"GET /health HTTP/1.1\r\nhost: x\r\n" + b"x-pad: " + b"p" * 3000 + b"\r\n\r\n")
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            length = int(next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1])
            replies.append((head.split(b"\r\n")[0], await reader.readexactly(length)))
            await asyncio.sleep(0.3)  # idle between requests: the header clock starts with the next one
        writer.close()
    assert replies == [(b"HTTP/1.1 200 OK", b'{"status":"ok","service":"gateway"}')] * 3
