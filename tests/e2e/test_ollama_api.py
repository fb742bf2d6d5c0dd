"""The official ``ollama`` client against the gateway's Ollama-compatible ``/api/*``."""

from __future__ import annotations

import ollama
import pytest

from tests.e2e.conftest import E2E

pytestmark = pytest.mark.e2e


@pytest.fixture
def oclient(e2e: E2E) -> ollama.Client:
    return ollama.Client(host=e2e.gateway, timeout=30)


def test_tags_list_the_models(oclient: ollama.Client) -> None:
    names = {m.model for m in oclient.list().models}
    assert {"llama3.1:8b", "nomic-embed-text:latest"} <= names


def test_chat(oclient: ollama.Client) -> None:
    reply = oclient.chat(model="turnout/auto", messages=[{"role": "user", "content": "Say hi."}])
    assert reply.message.role == "assistant"
    assert reply.message.content
    assert reply.done is True


def test_streaming_chat(oclient: ollama.Client) -> None:
    parts = list(
        oclient.chat(model="llama3.2:1b", messages=[{"role": "user", "content": "Count to five."}], stream=True)
    )
    assert len(parts) > 1
    assert parts[-1].done is True
    assert "".join(p.message.content or "" for p in parts)


def test_embed(oclient: ollama.Client) -> None:
    result = oclient.embed(model="nomic-embed-text:latest", input=["one", "two"])
    assert len(result.embeddings) == 2
    assert len(result.embeddings[0]) > 0
