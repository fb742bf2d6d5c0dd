"""Small wire helpers shared by both dialects: request bodies, timestamps, ids, prompt text."""

from __future__ import annotations

import hashlib
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from turnout.fakefleet.config import ModelSpec, format_params, parse_duration
from turnout.fakefleet.errors import FleetError
from turnout.fakefleet.text import estimate_tokens

Json = dict[str, Any]

STARTED_AT = time.time()


async def read_json(request: web.Request) -> Json:
    raw = await request.read()
    if not raw.strip():
        raise FleetError(400, "missing request body")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FleetError(400, f"invalid JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise FleetError(400, "the request body must be a JSON object")
    return body


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


def rfc3339(ts: float | None = None) -> str:
    """Go's time.Time JSON form in UTC: ``2024-06-04T14:38:31.837530Z``."""
    moment = datetime.fromtimestamp(time.time() if ts is None else ts, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def new_id(prefix: str) -> str:
    """``chatcmpl-…``, ``cmpl-…``."""
    return f"{prefix}-{secrets.token_hex(12)}"


def digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def keep_alive_of(body: Json, default: float | None) -> float | None:
    """The request's ``keep_alive`` in seconds (``None`` = forever), or the listener's default."""
    if "keep_alive" not in body or body["keep_alive"] is None:
        return default
    try:
        return parse_duration(body["keep_alive"])
    except ValueError as exc:
        raise FleetError(400, str(exc)) from None


# --- model descriptions ------------------------------------------------------------------------


def model_details(spec: ModelSpec) -> Json:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": spec.family,
        "families": [spec.family],
        "parameter_size": format_params(spec.params),
        "quantization_level": spec.quantization,
    }


# --- prompt text -------------------------------------------------------------------------------


def content_text(content: Any) -> str:
    """Text of a message's content: a string, or OpenAI content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") in ("text", "input_text")
        )
    return ""


def has_image_parts(content: Any) -> bool:
    return isinstance(content, list) and any(
        isinstance(p, dict) and p.get("type") in ("image_url", "input_image") for p in content
    )


def last_user_text(messages: list[Any]) -> str:
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            return content_text(m.get("content"))
    return ""


def prompt_tokens(messages: list[Any], tools: list[Any] | None = None) -> int:
    chars = sum(len(content_text(m.get("content"))) + 16 for m in messages if isinstance(m, dict))
    if tools:
        chars += len(orjson.dumps(tools))
    return estimate_tokens("x" * chars)


def answered_by_tool(messages: list[Any]) -> bool:
    """The last message is a tool result: the model answers in words instead of calling again."""
    return bool(messages) and isinstance(messages[-1], dict) and messages[-1].get("role") == "tool"


def tool_result_prompt(messages: list[Any]) -> str:
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    return f"tool result {content_text(last.get('content'))} {last_user_text(messages)}"
