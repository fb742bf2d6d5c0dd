"""A whole reply's bookkeeping (metrics, the request event) runs once its bytes are sent."""

from __future__ import annotations

import pytest
from starlette.types import Message

from turnout.gateway.pipeline import WholeResponse

SCOPE = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}


async def receive() -> Message:
    return {"type": "http.disconnect"}


async def test_after_runs_once_the_body_is_sent() -> None:
    seen: list[str] = []

    async def send(message: Message) -> None:
        seen.append(message["type"])

    response = WholeResponse(b"{}", headers={"x-turnout-model": "m"}, after=lambda: seen.append("after"))
    await response(SCOPE, receive, send)
    assert seen == ["http.response.start", "http.response.body", "after"]
    await response(SCOPE, receive, send)  # at most once
    assert seen.count("after") == 1


async def test_after_runs_when_sending_fails() -> None:
    seen: list[str] = []

    async def send(message: Message) -> None:
        raise OSError("client gone")

    response = WholeResponse(b"{}", headers={}, after=lambda: seen.append("after"))
    with pytest.raises(OSError):
        await response(SCOPE, receive, send)
    assert seen == ["after"]
