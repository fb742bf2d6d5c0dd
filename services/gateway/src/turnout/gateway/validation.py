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
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_MODEL_NAME = 256
"""Longest model name accepted (400 beyond): no catalog name comes near it."""
MAX_TOKENS = 10_000_000
"""Largest ``max_tokens`` accepted (400 beyond): above every context window there is."""
DEFAULT_MAX_N = 8
DEFAULT_MAX_MESSAGES = 1000


async def read_json(request: Request) -> Json:
    """The request body as a JSON object; a 400 for anything that is not one."""
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
    """A 422 naming the first field of ``body`` whose JSON type is not the one ``spec`` allows."""
    for name, value in body.items():
        types = spec.get(name)
        if types is None or value is None:
            continue
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise InvalidType(f"'{prefix}{name}' must be {_describe(types)}", param=prefix + name)


def require(body: Json, name: str) -> None:
    """A 400 when ``name`` is missing or null."""
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
        if ollama:
            _check_images(msg.get("images"), f"{where}.images")


def _check_images(images: Any, where: str) -> None:
    """Ollama ``images``: a list of base64 strings."""
    if images is None:
        return
    if not isinstance(images, list):
        raise InvalidType(f"'{where}' must be an array", param=where)
    for i, image in enumerate(images):
        if not isinstance(image, str):
            raise InvalidType(f"'{where}[{i}]' must be a string", param=f"{where}[{i}]")


def _check_positive(body: Json, *names: str) -> None:
    for name in names:
        v = body.get(name)
        if v is not None and v < 1:
            raise InvalidRequest(f"'{name}' must be at least 1", param=name, code="invalid_value")
        if v is not None and v > MAX_TOKENS:
            raise InvalidRequest(f"'{name}' must be at most {MAX_TOKENS}", param=name, code="invalid_value")


def check_model(body: Json) -> None:
    """A 400 when the model name is longer than the catalog allows."""
    model = body.get("model")
    if isinstance(model, str) and len(model) > MAX_MODEL_NAME:
        raise InvalidRequest(
            f"'model' must be at most {MAX_MODEL_NAME} characters", param="model", code="invalid_value"
        )


def check_n(body: Json, max_n: int) -> None:
    """``n > 1`` is served whole (fanned out where a backend answers one choice); streamed, it is
    refused rather than silently answered with one choice."""
    n = body.get("n")
    if n is None or n == 1:
        return
    if n > max_n:
        raise InvalidRequest(f"'n' must be at most {max_n}", param="n", code="invalid_value")
    if body.get("stream") is True:
        raise InvalidRequest(
            "'n' greater than 1 is not supported with 'stream': true; ask without streaming",
            param="n",
            code="unsupported_value",
        )


def check_count(messages: list[Any], max_messages: int) -> None:
    """A 400 when a conversation has more than ``max_messages`` messages."""
    if len(messages) > max_messages:
        raise InvalidRequest(
            f"'messages' must contain at most {max_messages} messages", param="messages", code="invalid_value"
        )


def check_chat(body: Json, *, max_n: int = DEFAULT_MAX_N, max_messages: int = DEFAULT_MAX_MESSAGES) -> None:
    """Bound an OpenAI chat body: types, model, messages, images, positive counts and ``n``."""
    check_types(body, CHAT)
    check_model(body)
    require(body, "messages")
    check_count(body["messages"], max_messages)
    _check_messages(body["messages"])
    _check_positive(body, "n", "max_tokens", "max_completion_tokens")
    check_n(body, max_n)


def check_completion(body: Json, *, max_n: int = DEFAULT_MAX_N) -> None:
    """Bound an OpenAI (legacy) completion body: types, model, prompt, positive counts and ``n``."""
    check_types(body, COMPLETION)
    check_model(body)
    require(body, "prompt")
    _check_positive(body, "n", "max_tokens")
    check_n(body, max_n)


def check_embeddings(body: Json) -> None:
    """Bound an OpenAI embeddings body: types, model, input and ``encoding_format``."""
    check_types(body, EMBEDDING)
    check_model(body)
    require(body, "input")
    _check_embedding_input(body["input"])
    dims = body.get("dimensions")
    if dims is not None and dims < 1:
        raise InvalidRequest("'dimensions' must be at least 1", param="dimensions", code="invalid_value")
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise InvalidRequest(
            "'encoding_format' must be 'float' or 'base64'", param="encoding_format", code="invalid_value"
        )


def _check_embedding_input(value: str | list[Any]) -> None:
    """OpenAI's ``input``: a non-empty string, or a non-empty array of non-empty strings, of
    token ids, or of token-id arrays (as OpenAI answers, 400 for empty, 422 for other types)."""
    if value == "" or value == []:
        raise InvalidRequest("'input' must not be empty", param="input", code="invalid_value")
    if isinstance(value, str):
        return
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if item == "" or item == []:
            raise InvalidRequest(f"'{where}' must not be empty", param=where, code="invalid_value")
        ok = isinstance(item, str) or (isinstance(item, int) and not isinstance(item, bool))
        if isinstance(item, list):
            ok = all(isinstance(t, int) and not isinstance(t, bool) for t in item)
        if not ok:
            raise InvalidType(f"'{where}' must be a string, a token id or an array of token ids", param=where)


def check_ollama_chat(body: Json, *, max_messages: int = DEFAULT_MAX_MESSAGES) -> None:
    """Bound an Ollama ``/api/chat`` body: types, model, messages and their images."""
    check_types(body, OLLAMA_CHAT)
    check_model(body)
    require(body, "messages")
    check_count(body["messages"], max_messages)
    _check_messages(body["messages"], ollama=True)


def check_ollama_generate(body: Json) -> None:
    """Bound an Ollama ``/api/generate`` body: types, model and images."""
    check_types(body, OLLAMA_GENERATE)
    check_model(body)
    _check_images(body.get("images"), "images")


def check_ollama_embed(body: Json) -> None:
    """Bound an Ollama ``/api/embed`` body: types, model and an ``input`` (or legacy ``prompt``)."""
    check_types(body, OLLAMA_EMBED)
    check_model(body)
    if body.get("input") is None and body.get("prompt") is None:
        require(body, "input")
