"""Envelopes: the outer JSON of every RPC request and reply (envelope version ``v`` = 1).

Request: ``{v, id, method, mv, budget_ms, request_id, reply_to, [reply_via], body}``
Reply:   ``{v, id, ok, body}`` or ``{v, id, ok: false, error: {type, message}}``

``reply_via`` (optional) says how the reply goes to ``reply_to``: ``"list"`` (the default, an
``RPUSH`` onto that list) or ``"channel"`` (a ``PUBLISH`` on that channel).

``budget_ms`` is the time the caller still gives the call when it sends it, in milliseconds — a
relative budget, so that clocks that disagree between hosts cannot expire calls: the server
starts its own monotonic clock when it pops the request. An envelope from an older client with
an absolute ``deadline`` (unix seconds) instead is still read, against the server's wall clock.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from turnout.common.errors import KNOWN_REMOTE_ERRORS, MalformedRequest, RemoteError

ENVELOPE_VERSION = 1
REPLY_VIA = ("list", "channel")


def encode_request(
    *,
    call_id: str,
    method: str,
    mv: int,
    budget_ms: int,
    request_id: str | None,
    reply_to: str,
    body: bytes,
    reply_via: str = "list",
) -> bytes:
    # body is already-serialised JSON; splice it in to avoid a decode/encode round trip
    """The request envelope as JSON bytes (see docs/rpc.md)."""
    env: dict[str, object] = {
        "v": ENVELOPE_VERSION,
        "id": call_id,
        "method": method,
        "mv": mv,
        "budget_ms": budget_ms,
        "request_id": request_id,
        "reply_to": reply_to,
    }
    if reply_via != "list":
        env["reply_via"] = reply_via
    head = orjson.dumps(env)
    return head[:-1] + b',"body":' + body + b"}"


def decode_request(raw: bytes) -> dict[str, Any]:
    """Parse and check a request envelope; raises :class:`MalformedRequest`."""
    try:
        env = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(f"envelope is not JSON: {exc}") from exc
    if not isinstance(env, dict):
        raise MalformedRequest("envelope is not an object")
    for field, typ in (("id", str), ("method", str), ("reply_to", str)):
        if not isinstance(env.get(field), typ):
            raise MalformedRequest(f"envelope field {field!r} missing or of the wrong type")
    budget = env.get("budget_ms")
    if budget is None and isinstance(env.get("deadline"), int | float) and not isinstance(env["deadline"], bool):
        env["budget_ms"] = budget = (env["deadline"] - time.time()) * 1000  # an older client's absolute deadline
    if not isinstance(budget, int | float) or isinstance(budget, bool):
        raise MalformedRequest("envelope field 'budget_ms' missing or of the wrong type")
    if env.get("v") != ENVELOPE_VERSION:
        raise MalformedRequest(f"unsupported envelope version {env.get('v')!r}")
    if env.setdefault("reply_via", "list") not in REPLY_VIA:
        raise MalformedRequest(f"unsupported reply_via {env['reply_via']!r}")
    return env


_REPLY_HEAD = b'{"v":1,"id":"'


def reply_call_id(raw: bytes) -> str | None:
    """A reply's call id, read off the head that :func:`encode_reply_ok` and
    :func:`encode_reply_error` write (no parse of the whole reply, which the caller decodes once
    more anyway); any other layout is parsed. None when there is none."""
    if raw.startswith(_REPLY_HEAD):
        end = raw.find(b'"', len(_REPLY_HEAD))
        ident = raw[len(_REPLY_HEAD) : end]
        if end > 0 and b"\\" not in ident:
            return ident.decode("utf-8", "replace")
    try:
        env = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    call_id = env.get("id") if isinstance(env, dict) else None
    return call_id if isinstance(call_id, str) else None


_OK_MARK = b'","ok":true,"body":'


def reply_ok_body(raw: bytes) -> bytes | None:
    """The body JSON of a successful reply as :func:`encode_reply_ok` lays it out (for
    ``model_validate_json``: one parse instead of two); None for any other reply."""
    if not raw.startswith(_REPLY_HEAD) or not raw.endswith(b"}"):
        return None
    at = raw.find(_OK_MARK, len(_REPLY_HEAD), len(_REPLY_HEAD) + 256)
    if at < 0 or b'"' in raw[len(_REPLY_HEAD) : at]:
        return None
    return raw[at + len(_OK_MARK) : -1]


def encode_reply_ok(call_id: str, body: bytes) -> bytes:
    """A success reply carrying ``body`` (already JSON)."""
    return b'{"v":1,"id":' + orjson.dumps(call_id) + b',"ok":true,"body":' + body + b"}"


def encode_reply_error(call_id: str, exc: BaseException) -> bytes:
    """An error reply naming the exception's type (a RemoteError's ``type_name``); message cut at 2,000 characters."""
    type_name = exc.type_name if isinstance(exc, RemoteError) else type(exc).__name__
    return orjson.dumps(
        {"v": ENVELOPE_VERSION, "id": call_id, "ok": False, "error": {"type": type_name, "message": str(exc)[:2000]}}
    )


def error_from_reply(error: dict[str, Any]) -> RemoteError:
    """The exception an error reply stands for: a known RemoteError subclass, else RemoteError."""
    type_name = str(error.get("type", "RemoteError"))
    message = str(error.get("message", ""))
    cls = KNOWN_REMOTE_ERRORS.get(type_name)
    return cls(message) if cls is not None else RemoteError(message, type_name=type_name)
