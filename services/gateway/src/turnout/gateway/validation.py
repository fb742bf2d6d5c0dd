"""Cheap checks of request bodies on the hot path (no pydantic model of the whole body).

The body is parsed once with orjson and forwarded as is; these checks only look at the fields
present, so an unknown parameter passes through to the backend. Missing required fields and
invalid values are 400, fields of the wrong type 422 (with ``param`` naming the field).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from turnout.gateway.errors import InvalidRequest, InvalidType

Json = dict[str, Any]

_NUM = (int, float)
_STR_OR_LIST = (str, list)
_DICT_OR_STR = (dict, str)

_COMMON: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "stream": (bool,),
    "temperature": _NUM,
    "top_p": _NUM,
    "top_k": (int,),
    "max_tokens": (int,),
    "max_completion_tokens": (int,),
    "n": (int,),
    "seed": (int,),
    "stop": _STR_OR_LIST,
    "presence_penalty": _NUM,
    "frequency_penalty": _NUM,
    "logprobs": (bool, int),
    "top_logprobs": (int,),
    "user": (str,),
    "stream_options": (dict,),
    "turnout": (dict,),
}
CHAT: dict[str, tuple[type, ...]] = {
    **_COMMON,
    "messages": (list,),
    "tools": (list,),
    "tool_choice": _DICT_OR_STR,
    "parallel_tool_calls": (bool,),
    "response_format": (dict,),
    "logit_bias": (dict,),
}
COMPLETION: dict[str, tuple[type, ...]] = {**_COMMON, "prompt": (str, list), "suffix": (str,), "echo": (bool,)}
EMBEDDING: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "input": _STR_OR_LIST,
    "encoding_format": (str,),
    "dimensions": (int,),
    "user": (str,),
}
OLLAMA_CHAT: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "messages": (list,),
    "stream": (bool,),
    "options": (dict,),
    "tools": (list,),
    "format": _DICT_OR_STR,
    "think": (bool,),
    "turnout": (dict,),
}
OLLAMA_GENERATE: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "prompt": (str,),
    "system": (str,),
    "images": (list,),
    "stream": (bool,),
    "options": (dict,),
    "format": _DICT_OR_STR,
    "think": (bool,),
    "turnout": (dict,),
}
OLLAMA_EMBED: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "input": _STR_OR_LIST,
    "prompt": (str,),
    "options": (dict,),
}

_TYPE_NAMES = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    list: "an array",
    dict: "an object",
}
MAX_N = 16
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


async def read_json(request: Request) -> Json:
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("request body is not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object", code="invalid_json")
    return body


def _describe(types: tuple[type, ...]) -> str:
    if types == _NUM:
        return "a number"
    return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)


def check_types(body: Json, spec: dict[str, tuple[type, ...]], *, prefix: str = "") -> None:
    for name, value in body.items():
        types = spec.get(name)
        if types is None or value is None:
            continue
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise InvalidType(f"'{prefix}{name}' must be {_describe(types)}", param=prefix + name)


def require(body: Json, name: str) -> None:
    if body.get(name) is None:
        raise InvalidRequest(f"'{name}' is a required property", param=name, code="missing_required_parameter")


def _check_messages(messages: list[Any], *, ollama: bool = False) -> None:
    if not messages:
        raise InvalidRequest("'messages' must contain at least one message", param="messages", code="invalid_value")
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise InvalidType(f"'{where}' must be an object", param=where)
        role = msg.get("role")
        if not isinstance(role, str):
            if role is None:
                raise InvalidRequest(
                    f"'{where}.role' is a required property", param=f"{where}.role", code="missing_required_parameter"
                )
            raise InvalidType(f"'{where}.role' must be a string", param=f"{where}.role")
        if role not in _ROLES:
            raise InvalidRequest(
                f"'{where}.role' must be one of {sorted(_ROLES)}", param=f"{where}.role", code="invalid_value"
            )
        content = msg.get("content")
        allowed: tuple[type, ...] = (str,) if ollama else (str, list)
        if content is not None and not isinstance(content, allowed):
            raise InvalidType(f"'{where}.content' must be {_describe(allowed)}", param=f"{where}.content")


def _check_positive(body: Json, *names: str) -> None:
    for name in names:
        v = body.get(name)
        if v is not None and v < 1:
            raise InvalidRequest(f"'{name}' must be at least 1", param=name, code="invalid_value")


def check_chat(body: Json) -> None:
    check_types(body, CHAT)
    require(body, "messages")
    _check_messages(body["messages"])
    _check_positive(body, "n", "max_tokens", "max_completion_tokens")
    _check_n(body)


def check_completion(body: Json) -> None:
    check_types(body, COMPLETION)
    require(body, "prompt")
    _check_positive(body, "n", "max_tokens")
    _check_n(body)


def _check_n(body: Json) -> None:
    """``n > 1`` is served whole (fanned out where a backend answers one choice); streamed, it is
    refused rather than silently answered with one choice."""
    n = body.get("n")
    if n is None or n == 1:
        return
    if n > MAX_N:
        raise InvalidRequest(f"'n' must be at most {MAX_N}", param="n", code="invalid_value")
    if body.get("stream") is True:
        raise InvalidRequest(
            "'n' greater than 1 is not supported with 'stream': true; ask without streaming",
            param="n",
            code="unsupported_value",
        )


def check_embeddings(body: Json) -> None:
    check_types(body, EMBEDDING)
    require(body, "input")
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise InvalidRequest(
            "'encoding_format' must be 'float' or 'base64'", param="encoding_format", code="invalid_value"
        )


def check_ollama_chat(body: Json) -> None:
    check_types(body, OLLAMA_CHAT)
    require(body, "messages")
    _check_messages(body["messages"], ollama=True)


def check_ollama_generate(body: Json) -> None:
    check_types(body, OLLAMA_GENERATE)


def check_ollama_embed(body: Json) -> None:
    check_types(body, OLLAMA_EMBED)
    if body.get("input") is None and body.get("prompt") is None:
        require(body, "input")
