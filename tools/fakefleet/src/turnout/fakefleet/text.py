"""Deterministic model output: replies, token counts, tool calls and embeddings.

Everything here is a pure function of (model, prompt): the same request always gets the same
answer, so tests can assert exact values. Replies are a short canned sentence plus words of
the prompt; arithmetic questions ("what is 17 + 25?") are answered right with the model's
``accuracy`` (a per-prompt coin, not a random draw), which gives a profiler something to
measure. Embeddings are feature-hashed bags of words: texts sharing words are close.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from dataclasses import dataclass
from typing import Any

from turnout.fakefleet.config import ModelSpec
from turnout.fakefleet.skill import AnswerBook

Json = dict[str, Any]

_WORD_RE = re.compile(r"[A-Za-z0-9_'-]+")
_WHITESPACE_TOKEN_RE = re.compile(r"\s*\S+")  # a word with the whitespace before it: joins back exactly
_ARITH_RE = re.compile(r"(-?\d{1,9})\s*([+\-*x×])\s*(-?\d{1,9})")
_OPENERS = (
    "Here is a simulated answer from {model}.",
    "{model} (simulated) replies:",
    "A deterministic reply by {model}:",
    "Simulated response from {model}:",
)
_FILLER = (
    "the", "result", "depends", "on", "context", "and", "this", "simulated", "fleet", "keeps",
    "answers", "short", "so", "routing", "tests", "stay", "fast", "while", "still", "streaming",
    "real", "tokens", "over", "the", "wire", "one", "at", "a", "time",
)  # fmt: skip


def _digest(*parts: str) -> bytes:
    h = hashlib.blake2b(digest_size=32)
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.digest()


def _unit(*parts: str) -> float:
    """A number in [0, 1) fixed by the parts."""
    return int.from_bytes(_digest(*parts)[:8], "big") / 2**64


def estimate_tokens(text: str) -> int:
    """About four characters a token, at least one."""
    return max(1, (len(text) + 3) // 4)


@dataclass(frozen=True, slots=True)
class Reply:
    tokens: tuple[str, ...]
    finish_reason: str  # "stop" | "length"
    thinking: tuple[str, ...] = ()
    """Reasoning tokens sent apart from the content (Ollama ``think: true``)."""

    @property
    def text(self) -> str:
        return "".join(self.tokens)


_THOUGHT = ("Let", " me", " think", " about", " this", " request", " step", " by", " step.")


def reply(
    model: ModelSpec,
    prompt: str,
    *,
    max_tokens: int | None = None,
    json_mode: bool = False,
    think: bool | None = None,
    book: AnswerBook | None = None,
) -> Reply:
    """The model's answer to ``prompt``: the answer book's right answer when the model knows it
    (skill.py), else ``reply_tokens`` tokens; cut at ``max_tokens``.

    A model with the ``thinking`` capability reasons first, as Qwen3 and DeepSeek-R1 do: inline
    as ``<think>…</think>`` before the answer, or apart (``thinking``) when the request says
    ``think: true``; ``think: false`` or ``/no_think`` in the prompt turn it off. A model with
    ``fences_json`` wraps JSON answers in a ```` ```json ```` fence, as chatty models do."""
    known = book.answer(model, prompt) if book is not None else None
    tokens = (
        (_WHITESPACE_TOKEN_RE.findall(known) or [known]) if known is not None else _canned(model, prompt, json_mode)
    )
    thinking: tuple[str, ...] = ()
    if model.can("thinking") and think is not False and "/no_think" not in prompt:
        if think:
            thinking = _THOUGHT
        else:
            tokens = ["<think>", "\n", *_THOUGHT, "\n", "</think>", "\n\n", *tokens]
    if max_tokens is not None and 0 < max_tokens < len(tokens):
        return Reply(tuple(tokens[:max_tokens]), "length", thinking)
    return Reply(tuple(tokens), "stop", thinking)


def _canned(model: ModelSpec, prompt: str, json_mode: bool) -> list[str]:
    words = _answer_words(model, prompt)
    want = model.reply_tokens
    while len(words) < want:
        words.append(_FILLER[len(words) % len(_FILLER)])
    words = words[:want]
    if json_mode:
        words = ['{"answer": "', *(w.replace('"', "'") for w in words), '"}']
    tokens = [w if i == 0 or json_mode else " " + w for i, w in enumerate(words)]
    if not json_mode:
        tokens[-1] = tokens[-1].rstrip(".:") + "."
    elif model.fences_json:
        tokens = ["```json\n", *tokens, "\n```"]
    return tokens


def _answer_words(model: ModelSpec, prompt: str) -> list[str]:
    opener = _OPENERS[int(_unit(model.name, prompt) * len(_OPENERS))].format(model=model.name)
    words = opener.split()
    m = _ARITH_RE.search(prompt)
    if m:
        words += ["The", "answer", "is", f"{_arith(model, prompt, m)}."]
    echoed = _WORD_RE.findall(prompt)[:8]
    if echoed:
        words += ["You", "asked", "about", *echoed]
    return words


def _arith(model: ModelSpec, prompt: str, m: re.Match[str]) -> int:
    a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
    right = a + b if op == "+" else a - b if op == "-" else a * b
    accuracy = 1.0 if model.accuracy is None else model.accuracy
    if _unit("accuracy", model.name, prompt) < accuracy:
        return right
    return right + 1 + int(_unit("wrong", model.name, prompt) * 9)


# --- tools ---------------------------------------------------------------------------------------


def pick_tool(tools: list[Json], tool_choice: Any, prompt: str) -> Json | None:
    """The tool the model calls: the one ``tool_choice`` names, else the one whose name and
    description share most words with the prompt (first on ties); ``None`` for ``"none"``."""

    functions = [t.get("function") or {} for t in tools if isinstance(t, dict)]
    functions = [f for f in functions if isinstance(f, dict) and f.get("name")]
    if not functions or tool_choice == "none":
        return None
    if isinstance(tool_choice, dict):
        wanted = (tool_choice.get("function") or {}).get("name")
        named = next((f for f in functions if f.get("name") == wanted), None)
        if named is not None:
            return named

    def words(s: str) -> set[str]:  # words of four letters or more: no "the", "is", "a"
        return {w.lower() for w in _WORD_RE.findall(s.replace("_", " ")) if len(w) >= 4}

    prompt_words = words(prompt)

    def overlap(f: Json) -> int:
        return len(prompt_words & words(f"{f.get('name', '')} {f.get('description', '')}"))

    return max(functions, key=overlap)


def tool_arguments(function: Json, prompt: str) -> Json:
    """Arguments that satisfy the function's JSON schema, filled from the prompt where a string is asked."""
    params = function.get("parameters") or {}
    props: Json = params.get("properties") or {}
    required = params.get("required") or list(props)
    capitalised = [w for w in _WORD_RE.findall(prompt) if w[:1].isupper()]
    words = capitalised[1:] or capitalised or _WORD_RE.findall(prompt) or ["example"]
    out: Json = {}
    for i, name in enumerate(required):
        schema = props.get(name) or {}
        out[name] = _value_for(schema, words[i % len(words)])
    return out


def _value_for(schema: Json, word: str) -> Any:
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type", "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    return {"integer": 1, "number": 1.0, "boolean": True, "array": [], "object": {}}.get(kind, word)


def tool_call_id(model: str, prompt: str) -> str:
    return "call_" + _digest("call", model, prompt).hex()[:24]


# --- embeddings ----------------------------------------------------------------------------------


def embedding(text: str, dims: int) -> list[float]:
    """A unit vector: feature-hashed words (shared words -> close vectors) plus a small text hash."""
    vec = [0.0] * dims
    for word in _WORD_RE.findall(text.lower()):
        d = _digest("w", word)
        for k in range(4):
            idx = int.from_bytes(d[k * 4 : k * 4 + 3], "big") % dims
            vec[idx] += 1.0 if d[k * 4 + 3] & 1 else -1.0
    d = _digest("t", text)
    for k in range(8):
        idx = int.from_bytes(d[k * 4 : k * 4 + 3], "big") % dims
        vec[idx] += 0.1 if d[k * 4 + 3] & 1 else -0.1
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


def embedding_base64(vec: list[float]) -> str:
    """OpenAI's ``encoding_format: base64``: little-endian float32, base64."""
    return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
