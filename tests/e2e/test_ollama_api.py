"""The official ``ollama`` client against the gateway's Ollama-compatible ``/api/*``."""

from __future__ import annotations

from collections.abc import Iterator

import ollama
import pytest

from tests.e2e.conftest import E2E

pytestmark = pytest.mark.e2e


@pytest.fixture
def oclient(e2e: E2E) -> Iterator[ollama.Client]:
    client = ollama.Client(host=e2e.gateway, timeout=30)
    yield client
    client.close()


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


def test_root_answers_like_ollama(e2e: E2E) -> None:
    import httpx

    with httpx.Client(base_url=e2e.gateway, timeout=10) as http:
        assert http.get("/").text == "Ollama is running"
        assert http.head("/").status_code == 200


def test_generate(oclient: ollama.Client) -> None:
    reply = oclient.generate(model="llama3.2:1b", prompt="Say hi.", system="Be brief.")
    assert reply.done is True and reply.response.startswith(("Here", "llama3.2:1b", "A ", "Sim"))


def test_show_a_model_and_the_virtual_one(oclient: ollama.Client) -> None:
    shown = oclient.show("llama3.1")  # tag-less: the only llama3.1 in the fleet is llama3.1:8b
    assert shown.details is not None and shown.details.parameter_size == "8B"
    assert shown.capabilities is not None and "completion" in shown.capabilities
    assert oclient.show("turnout/auto").details.family == "turnout"  # type: ignore[union-attr]
    with pytest.raises(ollama.ResponseError) as err:
        oclient.show("no-such-model:1b")
    assert err.value.status_code == 404


def test_ps_lists_what_the_gpu_agents_see_loaded(oclient: ollama.Client) -> None:
    from tests.e2e.support import eventually

    oclient.chat(model="llama3.2:1b", messages=[{"role": "user", "content": "hi"}])

    def loaded() -> list[str] | None:
        names = [m.model for m in oclient.ps().models]
        return names if "llama3.2:1b" in names else None

    names = eventually(loaded, timeout=20, what="llama3.2:1b in /api/ps")
    assert all(m.size_vram > 0 for m in oclient.ps().models if m.model in names)


def test_think_field_on_the_reasoning_model(oclient: ollama.Client) -> None:
    messages = [{"role": "user", "content": "Name three colors."}]
    thought = oclient.chat(model="Qwen3-4B-Q4_K_M", messages=messages, think=True)
    quiet = oclient.chat(model="Qwen3-4B-Q4_K_M", messages=messages, think=False)
    assert thought.message.thinking == "Let me think about this request step by step."
    assert "<think>" not in (thought.message.content or "")
    assert quiet.message.thinking is None and quiet.message.content == thought.message.content
