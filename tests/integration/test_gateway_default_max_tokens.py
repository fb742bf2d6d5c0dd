"""``TURNOUT_GATEWAY__DEFAULT_MAX_TOKENS``: chats and completions that set no limit get one upstream
(backends whose random-weight models generate to the end of their context need it); a client's
own limit is kept, and embeddings are left alone."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.stack_support import running_stack

pytestmark = pytest.mark.integration


async def test_a_default_max_tokens_is_sent_only_when_the_client_set_none(redis_url, db, key_prefix):
    async with (
        running_stack(redis_url, db, key_prefix, default_max_tokens=64) as stack,
        httpx.AsyncClient(base_url=stack.url, timeout=10) as http,
    ):
        chat = {"model": "turnout/auto", "messages": [{"role": "user", "content": "Hello"}]}
        assert (await http.post("/v1/chat/completions", json=chat)).status_code == 200
        assert (await http.post("/v1/chat/completions", json={**chat, "max_tokens": 5})).status_code == 200
        capped = {**chat, "max_completion_tokens": 7}
        assert (await http.post("/v1/chat/completions", json=capped)).status_code == 200
        ollama = {"model": "turnout/auto", "messages": chat["messages"], "stream": False}
        assert (await http.post("/api/chat", json=ollama)).status_code == 200
    sent = [(b.get("max_tokens"), b.get("max_completion_tokens")) for b in stack.beta.received]
    assert sent == [(64, None), (5, None), (None, 7), (64, None)]


async def test_without_the_setting_the_body_is_forwarded_as_sent(redis_url, db, key_prefix):
    async with (
        running_stack(redis_url, db, key_prefix) as stack,
        httpx.AsyncClient(base_url=stack.url, timeout=10) as http,
    ):
        chat = {"model": "turnout/auto", "messages": [{"role": "user", "content": "Hello"}]}
        assert (await http.post("/v1/chat/completions", json=chat)).status_code == 200
    assert "max_tokens" not in stack.beta.received[0]
