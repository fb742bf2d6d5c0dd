"""The gateway's uvicorn protocol: writes made in one loop iteration reach the socket as one."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import uvicorn

from turnout.devstack.infra import free_port
from turnout.gateway.server_protocol import PROTOCOL, CoalescingHttpToolsProtocol, CoalescingTransport


class Recording:
    """The transport under the wrapper: what reached the socket, write by write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.events.append("write")

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.events.append("close")
        self.closing = True

    def abort(self) -> None:
        self.events.append("abort")
        self.closing = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8080) if name == "sockname" else default


async def test_writes_of_one_iteration_go_out_as_one_write_at_its_end() -> None:
    inner = Recording()
    t = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"HTTP/1.1 200 OK\r\n\r\n")
    t.write(b"")
    t.writelines([b"body-", b"part"])
    assert inner.writes == [] and t.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\n\r\nbody-part")
    await asyncio.sleep(0)
    assert inner.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody-part"]
    t.write(b"next")  # a later iteration: its own write
    await asyncio.sleep(0)
    assert inner.writes[1:] == [b"next"]
    assert t.get_extra_info("sockname") == ("127.0.0.1", 8080)  # the rest is the real transport's


async def test_close_sends_what_was_written_first_and_abort_drops_it() -> None:
    inner = Recording()
    t = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"last words")
    t.close()
    assert inner.events == ["write", "close"] and inner.writes == [b"last words"]
    await asyncio.sleep(0)  # the scheduled flush finds nothing left
    assert inner.writes == [b"last words"]

    inner = Recording()
    t = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"never sent")
    t.abort()
    await asyncio.sleep(0)
    assert inner.events == ["abort"]


async def test_nothing_is_written_to_a_transport_already_closing() -> None:
    inner = Recording()
    t = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"too late")
    inner.closing = True  # the peer went away meanwhile
    await asyncio.sleep(0)
    assert inner.writes == [] and t.is_closing()


async def test_uvicorn_serves_whole_and_streamed_responses_through_it() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            for i in range(3):
                await send({"type": "http.response.body", "body": f"chunk{i};".encode(), "more_body": True})
                await asyncio.sleep(0.01)
            await send({"type": "http.response.body", "body": b""})
            return
        body = b'{"ok":true}'
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=PROTOCOL, log_config=None, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        assert config.http_protocol_class is CoalescingHttpToolsProtocol
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(3):  # keep-alive: the same connection serves one response after another
                r = await client.get("/")
                assert (r.status_code, r.json()) == (200, {"ok": True})
            async with client.stream("GET", "/stream") as s:
                assert s.status_code == 200
                assert "".join([c async for c in s.aiter_text()]) == "chunk0;chunk1;chunk2;"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
