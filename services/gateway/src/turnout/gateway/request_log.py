"""The request log (opt-in): a request's prompt and reply stored with its routing decision.

With ``TURNOUT_GATEWAY__REQUEST_LOG__ENABLED=true`` the response path keeps a reference to the
request body and to the reply (the whole reply, or each streamed batch of chunks: one list
append per batch); everything else happens off the path, in the event publisher's task, when
the event is encoded: the text is extracted (messages, prompt, input), secrets and personal data
are replaced by ``[REDACTED:<kind>]`` and each text is capped at ``max_chars`` (a marker says
how much was cut). Only then does it leave the process (the Redis stream, then Postgres through
the sync worker), so a secret never reaches Redis.

Redacted by default (:data:`PATTERNS`): private keys, bearer tokens, API keys of the usual
shapes (``sk-…``, ``sk-ant-…``, ``ghp_…``, ``xox…``, ``AKIA…``, ``AIza…``, ``hf_…``), JWTs,
``password=…``-style assignments, e-mail addresses, payment card numbers (Luhn-checked), IBANs,
US social security numbers and phone numbers. ``extra_patterns`` adds regular expressions of
the operator's own (redacted as ``[REDACTED:custom]``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

Json = dict[str, Any]


class RequestLogOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=False, description="Store prompts and replies with each routing decision")
    max_chars: int = Field(default=16_000, ge=100, le=1_000_000, description="Cap per prompt and per reply")
    redact: bool = Field(default=True, description="Replace secrets and personal data before storing")
    extra_patterns: list[str] = Field(default_factory=list, description="More regular expressions to redact")

    @field_validator("extra_patterns")
    @classmethod
    def _compiles(cls, v: list[str]) -> list[str]:
        for p in v:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"request_log.extra_patterns: {p!r} is not a regular expression: {exc}") from exc
        return v


PATTERNS: tuple[tuple[str, str], ...] = (
    ("private_key", r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)"),
    ("bearer_token", r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]{8,}=*"),
    ("jwt", r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"),
    ("api_key", r"\b(?:sk-(?:ant-|proj-)?[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|xox[abprs]-[A-Za-z0-9-]{10,})"),
    ("api_key", r"\b(?:AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{35}|hf_[A-Za-z0-9]{30,}|glpat-[A-Za-z0-9_-]{20,})"),
    (
        "secret",
        r"(?i)\b(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token|client[_-]?secret)"
        r"(\s*[:=]\s*)[\"']?[^\s\"',;]{4,}[\"']?",
    ),
    ("email", r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
    ("iban", r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}(?: ?[A-Z0-9]{1,3})?\b"),
    ("ssn", r"\b\d{3}-\d{2}-\d{4}\b"),
    # international (+…) or US "(415) 555-2671" numbers; bare digit groups are too often other things
    ("phone", r"(?<![\w+])\+\d{1,3}[ .-]?\(?\d{1,4}\)?(?:[ .-]?\d{2,4}){2,4}\b"),
    ("phone", r"\(\d{3}\) ?\d{3}-\d{4}\b"),
)
"""``(kind, regex)``, applied in order. Card numbers are found separately (a Luhn check keeps
ordinary long numbers)."""

_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(m: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", m.group(0))
    return "[REDACTED:card]" if 13 <= len(digits) <= 19 and _luhn(digits) else m.group(0)


class Redactor:
    def __init__(self, extra_patterns: Iterable[str] = ()) -> None:
        self._rules = [(kind, re.compile(p)) for kind, p in PATTERNS]
        self._rules += [("custom", re.compile(p)) for p in extra_patterns]

    def __call__(self, text: str) -> str:
        text = _CARD.sub(_card, text)
        for kind, rx in self._rules:
            if kind == "secret":  # keep the name: "password=[REDACTED:secret]"
                text = rx.sub(lambda m: m.group(0)[: m.start(1) - m.start(0)] + m.group(1) + "[REDACTED:secret]", text)
            else:
                text = rx.sub(f"[REDACTED:{kind}]", text)
        return text


def cap(text: str, max_chars: int, original_chars: int | None = None) -> str:
    """``text`` cut at ``max_chars`` with a marker; ``original_chars``: the length before an
    earlier cut (the marker then shows, and reports it)."""
    cut_before = original_chars is not None and original_chars > len(text)
    if len(text) <= max_chars and not cut_before:
        return text
    original = original_chars if original_chars is not None and cut_before else len(text)
    return text[:max_chars] + f"\n[… truncated: the original had {original} characters]"


# --- text extraction -------------------------------------------------------------------------


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict):
                if part.get("type") in ("text", "input_text") and isinstance(part.get("text"), str):
                    parts.append(part["text"])
                elif part.get("type") in ("image_url", "image", "input_image"):
                    parts.append("[image]")
        return "\n".join(parts)
    return ""


def prompt_text(body: Json) -> str:
    """The request's text: each message as ``role: content``, or the prompt / the input."""
    messages = body.get("messages")
    if isinstance(messages, list):
        lines = []
        for m in messages:
            if isinstance(m, dict):
                text = _content_text(m.get("content"))
                if m.get("images"):
                    text += " [image]" * len(m["images"])
                lines.append(f"{m.get('role', 'user')}: {text}")
        return "\n".join(lines)
    for field in ("prompt", "input"):
        value = body.get(field)
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            return "\n".join(v for v in value if isinstance(v, str))
    return ""


def reply_text(reply: Any) -> str | None:
    """A whole OpenAI reply (dict), or the streamed batches (a list of lists of chunks)."""
    if reply is None:
        return None
    if isinstance(reply, dict):
        if reply.get("object") == "list" or "data" in reply and "choices" not in reply:
            return f"[{len(reply.get('data') or [])} embedding(s)]"
        texts = []
        for choice in reply.get("choices") or []:
            msg = choice.get("message") or {}
            text = msg.get("content") if isinstance(msg, dict) else None
            text = text if isinstance(text, str) else choice.get("text")
            if isinstance(text, str):
                texts.append(text)
            calls = msg.get("tool_calls") if isinstance(msg, dict) else None
            for call in calls or []:
                fn = call.get("function") or {}
                texts.append(f"[tool call {fn.get('name')}({fn.get('arguments', '')})]")
        return "\n".join(texts)
    out: list[str] = []
    for batch in reply:
        for chunk in batch:
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                text = delta.get("content") if isinstance(delta, dict) else None
                text = text if isinstance(text, str) else choice.get("text")
                if isinstance(text, str):
                    out.append(text)
    return "".join(out)


class RequestLog:
    """Turns what the response path kept (``_body``, ``_reply``) into the event's ``prompt`` and
    ``reply`` fields; called by the publisher as it encodes the event."""

    def __init__(self, options: RequestLogOptions) -> None:
        self.enabled = options.enabled
        self._max = options.max_chars
        self._redact = Redactor(options.extra_patterns) if options.redact else None

    def clean(self, text: str) -> str:
        original = len(text)
        work = text[: self._max * 2]  # cut before redacting too: a huge body costs bounded regex time
        if self._redact is not None:
            work = self._redact(work)
        return cap(work, self._max, original if original > self._max * 2 else None)

    def fill(self, event: dict[str, Any]) -> dict[str, Any]:
        body = event.pop("_body", None)
        reply = event.pop("_reply", None)
        if not self.enabled:
            return event
        if isinstance(body, dict):
            event["prompt"] = self.clean(prompt_text(body))
        text = reply_text(reply)
        if text is not None:
            event["reply"] = self.clean(text)
        return event
