"""What ``make run`` shows once the stack is up: three requests that go to three different models.

A greeting (a small, fast model), a hard coding task (a large or coder model) and a question
about an image (a vision model), sent to ``turnout/auto`` like any client would, after the
profiler has graded the models (their scores are what tells the first two apart). The answer
headers say where each went; :func:`table` prints it with the request ids, so each decision can
be opened in the dashboard (``/ui/requests/<id>``) or with ``turnout requests show <id>``.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

GREETING = "Hello! How are you today?"
HARD_CODE = (
    "Implement a thread-safe LRU cache in Rust with generics and unit tests, then explain the "
    "trade-offs of your locking strategy step by step."
)
VISION = "What is in this picture?"
# a 1x1 PNG, enough for the routing (images need a vision model) and for the simulated fleet
PIXEL = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


@dataclass(frozen=True, slots=True)
class Routed:
    label: str
    model: str
    backend: str
    request_id: str
    status: int


def _call(url: str, *, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 30.0) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, dict(resp.headers), json.loads(resp.read() or b"null")


def profiled(gateway: str, admin_key: str | None = None) -> tuple[int, int]:
    """(chat models with profile scores, chat models) in the gateway's catalog."""
    headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
    _, _, doc = _call(f"{gateway}/admin/catalog", headers=headers, timeout=5)
    chat = [m for m in doc["data"] if (m.get("capabilities") or {}).get("chat", True)]
    chat = [m for m in chat if not (m.get("capabilities") or {}).get("embedding")]
    return sum(1 for m in chat if m.get("quality")), len(chat)


def wait_profiled(
    gateway: str,
    *,
    admin_key: str | None = None,
    timeout: float = 180.0,
    progress: Callable[[int, int], None] | None = None,
) -> bool:
    """Wait until every chat model has profile scores in the catalog; False on timeout."""
    deadline = time.monotonic() + timeout
    last = (-1, -1)
    while time.monotonic() < deadline:
        try:
            done, total = profiled(gateway, admin_key)
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            done, total = 0, 0
        if (done, total) != last and progress is not None:
            progress(done, total)
        last = (done, total)
        if total and done >= total:
            return True
        time.sleep(1.0)
    return False


def requests() -> list[tuple[str, list[dict[str, Any]]]]:
    return [
        ("greeting", [{"role": "user", "content": GREETING}]),
        ("hard coding task", [{"role": "user", "content": HARD_CODE}]),
        (
            "image question",
            [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": VISION}, {"type": "image_url", "image_url": {"url": PIXEL}}],
                }
            ],
        ),
    ]


def run(gateway: str, *, api_key: str | None = None, max_tokens: int = 24) -> list[Routed]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    out = []
    for label, messages in requests():
        body = {"model": "turnout/auto", "messages": messages, "max_tokens": max_tokens}
        try:
            status, h, _ = _call(f"{gateway}/v1/chat/completions", body=body, headers=headers)
        except urllib.error.HTTPError as exc:
            status, h = exc.code, dict(exc.headers)
        lower = {k.lower(): v for k, v in h.items()}
        out.append(
            Routed(
                label,
                lower.get("x-turnout-model", "-"),
                lower.get("x-turnout-backend", "-"),
                lower.get("x-request-id", "-"),
                status,
            )
        )
    return out


def table(routed: list[Routed], gateway: str) -> str:
    width = max(len(r.label) for r in routed)
    lines = ["  Routing, shown on three requests to turnout/auto:"]
    for r in routed:
        where = f"{r.model} on {r.backend}" if r.status == 200 else f"HTTP {r.status}"
        lines.append(f"    {r.label:<{width}}  ->  {where}   ({gateway}/ui/requests/{r.request_id})")
    return "\n".join(lines)
