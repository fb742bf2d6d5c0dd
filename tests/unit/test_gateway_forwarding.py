"""Wire-format splitting, upstream payloads and failure classification in the forwarder."""

from __future__ import annotations

import aiohttp
import orjson
import pytest

from turnout.common.backends.config import BackendConfig, BackendKind
from turnout.common.errors import BackendStatusError, BackendTimeout, BackendUnavailable, TranslationError
from turnout.common.schemas.route import CandidateV1, RequestKind
from turnout.gateway.errors import NoBackendAvailable, RateLimited, UpstreamFailed, UpstreamTimedOut
from turnout.gateway.forwarding import (
    Exchange,
    Forwarder,
    attempt_outcome,
    final_error,
    make_backend,
    retryable,
)
from turnout.gateway.wire import ndjson_lines, sse_payloads


def test_sse_payloads_handles_partial_events_crlf_and_multiline_data():
    items, rest = sse_payloads(b'data: {"a":1}\n\ndata: {"b"')
    assert (items, rest) == ([b'{"a":1}'], b'data: {"b"')
    items, rest = sse_payloads(rest + b":2}\r\n\r\n: comment\n\nevent: x\ndata: line1\ndata:line2\n\ndata: [DONE]\n\n")
    assert (items, rest) == ([b'{"b":2}', b"line1\nline2", b"[DONE]"], b"")


def test_ndjson_lines_keeps_the_partial_tail():
    assert ndjson_lines(b'{"a":1}\n{"b":2}\n{"c"') == ([b'{"a":1}', b'{"b":2}'], b'{"c"')
    assert ndjson_lines(b'{"a"') == ([], b'{"a"')
    assert ndjson_lines(b"\n\n{}\n") == ([b"{}"], b"")


@pytest.mark.parametrize(
    ("exc", "outcome", "retry"),
    [
        (BackendStatusError("x", status=500), "status_5xx", True),
        (BackendStatusError("x", status=503), "status_5xx", True),
        (BackendStatusError("x", status=429), "status_429", True),
        (BackendStatusError("x", status=404), "status_4xx", True),
        (BackendStatusError("x", status=401), "status_4xx", True),
        (BackendStatusError("x", status=400), "status_4xx", False),
        (BackendStatusError("x", status=422), "status_4xx", False),
        (BackendTimeout("x"), "timeout", True),
        (BackendUnavailable("x"), "unavailable", True),
        # refused by the gateway before sending (token ids to Ollama): the backend is not at fault
        (TranslationError("x"), "unsupported", False),
    ],
)
def test_failures_are_classified(exc, outcome, retry):
    assert attempt_outcome(exc) == outcome
    assert retryable(exc) is retry


def test_final_error_follows_the_last_failure():
    assert isinstance(final_error(None, 0), NoBackendAvailable)
    err = final_error(BackendStatusError("x", status=502, body=b'{"error":{"message":"boom"}}'), 2)
    assert isinstance(err, UpstreamFailed) and err.message == "all 2 candidates failed; last: boom"
    assert isinstance(final_error(BackendTimeout("slow"), 1), UpstreamTimedOut)
    assert isinstance(final_error(BackendStatusError("x", status=429), 1), RateLimited)


def test_backend_urls_headers_and_timeouts():
    openai = BackendConfig(name="o", kind=BackendKind.OPENAI, url="http://h:8000", api_key="sk-123", read_timeout_s=30)
    b = make_backend(openai, connect_timeout_s=2, read_timeout_s=60)
    assert b.urls[RequestKind.CHAT] == "http://h:8000/v1/chat/completions"
    assert b.urls[RequestKind.EMBEDDING] == "http://h:8000/v1/embeddings"
    assert b.headers["Authorization"] == "Bearer sk-123"
    assert (b.timeout.total, b.timeout.sock_connect, b.timeout.sock_read) == (None, 2, 30)
    ollama = make_backend(
        BackendConfig(name="l", kind=BackendKind.OLLAMA, url="http://h:11434"), connect_timeout_s=2, read_timeout_s=60
    )
    assert ollama.urls[RequestKind.COMPLETION] == "http://h:11434/api/generate"
    assert "Authorization" not in ollama.headers


async def test_openai_payload_swaps_the_model_and_forces_include_usage():
    backends = [
        BackendConfig(name="o", kind=BackendKind.OPENAI, url="http://h/v1"),
        BackendConfig(name="l", kind=BackendKind.OLLAMA, url="http://h"),
    ]
    async with aiohttp.ClientSession() as session:
        fwd = Forwarder(backends, session, None, None, connect_timeout_s=1, read_timeout_s=1, max_attempts=3)  # type: ignore[arg-type]
        body = {"model": "turnout/auto", "messages": [{"role": "user", "content": "x"}], "stream_options": {"a": 1}}
        ex = Exchange(kind=RequestKind.CHAT, body=body, stream=True, request_id="r", response_id="chatcmpl-x")
        cand = CandidateV1(model="pub", backend="o", upstream_model="up")
        sent = orjson.loads(fwd._payload(ex, fwd._backends["o"], cand))
        assert sent["model"] == "up"
        assert sent["stream_options"] == {"a": 1, "include_usage": True}
        assert body["model"] == "turnout/auto"  # the client's body is not modified
        to_ollama = orjson.loads(fwd._payload(ex, fwd._backends["l"], cand))
        assert to_ollama == {"model": "up", "messages": [{"role": "user", "content": "x"}], "stream": True}
