"""The request log (opt-in): a request's prompt and reply stored with its routing decision.

With ``TURNOUT_GATEWAY__REQUEST_LOG__ENABLED=true`` the response path keeps a reference to the
request body and to the reply (the whole reply, or each streamed batch of chunks: one list
append per batch); everything else happens off the path, in the event publisher's task, when
the event is encoded: the text is extracted (messages, prompt, input), secrets and personal data
are replaced by ``[REDACTED:<kind>]`` and each text is capped at ``max_chars`` (a marker says
how much was cut). Only then does it leave the process (the Redis stream, then Postgres through
the sync worker), so a secret never reaches Redis.

Redacted by default (:data:`WORD_PATTERNS`, :data:`KEYWORD_PATTERNS`, :data:`NUMBER_PATTERNS`):
private keys, bearer tokens, API keys of the usual shapes (``sk-…``, ``sk-ant-…``, ``ghp_…``,
``xox…``, ``AKIA…``, ``AIza…``, ``hf_…``, ``glpat-…``), JWTs, ``password=…``-style assignments,
e-mail addresses, payment card numbers (Luhn-checked), IBANs, US social security numbers and
phone numbers. ``extra_patterns`` adds regular expressions of
the operator's own (redacted as ``[REDACTED:custom]``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

Json = dict[str, Any]


class RequestLogOptions(BaseModel):
    """Whether prompts and replies are stored with each decision, capped and redacted."""

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


_BOUNDARY = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")

# Each pattern starts with a literal where it can: Python's re then finds candidates with a fast
# substring search (~1 µs on a 1.5 KB prompt) instead of trying the pattern at every position
# (~100 µs each, measured on the 2-core box under load); word starts are checked on the matches.
WORD_PATTERNS: tuple[tuple[str, str], ...] = (
    ("private_key", r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)"),
    ("jwt", r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"),
    ("api_key", r"sk-(?:ant-|proj-)?[A-Za-z0-9_-]{16,}"),
    ("api_key", r"gh[pousr]_[A-Za-z0-9]{20,}"),
    ("api_key", r"xox[abprs]-[A-Za-z0-9-]{10,}"),
    ("api_key", r"AKIA[0-9A-Z]{16}"),
    ("api_key", r"AIza[0-9A-Za-z_-]{35}"),
    ("api_key", r"hf_[A-Za-z0-9]{30,}"),
    ("api_key", r"glpat-[A-Za-z0-9_-]{20,}"),
)
"""Secrets with a literal prefix, redacted where the prefix starts a word."""

KEYWORD_PATTERNS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("bearer_token", ("bearer",), r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]{8,}=*"),
    (
        "secret",
        ("password", "passwd", "pwd", "secret", "api_key", "api-key", "apikey", "token"),
        r"(?i)\b(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token|client[_-]?secret)"
        r"(\s*[:=]\s*)[\"']?[^\s\"',;]{4,}[\"']?",
    ),
)
"""Case-insensitive patterns, run only when one of their keywords occurs (a substring check)."""

NUMBER_PATTERNS: tuple[tuple[str, str], ...] = (
    ("iban", r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}(?: ?[A-Z0-9]{1,3})?\b"),
    ("ssn", r"\b\d{3}-\d{2}-\d{4}\b"),
    # international (+…) or US "(415) 555-2671" numbers; bare digit groups are too often other things
    ("phone", r"(?<![\w+])\+\d{1,3}[ .-]?\(?\d{1,4}\)?(?:[ .-]?\d{2,4}){2,4}\b"),
    ("phone", r"\(\d{3}\) ?\d{3}-\d{4}\b"),
)
"""Numbers (and IBANs), looked for only around the text's runs of digits (:data:`_NUMBER_RUN`);
card numbers too (:data:`_CARD`, Luhn-checked, so that ordinary long numbers stay)."""

_NUMBER_RUN = re.compile(r"\d[\d ().+/-]{5,}\d")
_RUN_CONTEXT = 4
"""Characters before a run of digits that the number patterns also see (a leading ``+`` or
``(``, an IBAN's country code, the word boundary)."""

_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_EMAIL_DOMAIN = re.compile(r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_EMAIL_LOCAL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")


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


def _word_start(replacement: str) -> Callable[[re.Match[str]], str]:
    def sub(m: re.Match[str]) -> str:
        before = m.string[m.start() - 1] if m.start() > 0 else ""
        return m.group(0) if before in _BOUNDARY else replacement

    return sub


def _keep_name(m: re.Match[str]) -> str:
    """``password=hunter2`` -> ``password=[REDACTED:secret]``."""
    return m.group(0)[: m.start(1) - m.start(0)] + m.group(1) + "[REDACTED:secret]"


def _redact_emails(text: str) -> str:
    """Addresses found from their ``@domain`` (a literal start: fast), the local part walked back."""
    out: list[str] = []
    done = 0
    for m in _EMAIL_DOMAIN.finditer(text):
        local = at = m.start()
        while local > done and text[local - 1] in _EMAIL_LOCAL:
            local -= 1
        if local == at:
            continue  # "@name.io" with nothing before it: a handle, not an address
        out += (text[done:local], "[REDACTED:email]")
        done = m.end()
    out.append(text[done:])
    return "".join(out)


class Redactor:
    """Masks secrets and personal data (keys, e-mails, card and phone numbers, custom patterns) in text."""

    def __init__(self, extra_patterns: Iterable[str] = ()) -> None:
        self._words = [(re.compile(p), _word_start(f"[REDACTED:{kind}]")) for kind, p in WORD_PATTERNS]
        self._keywords = [(kind, triggers, re.compile(p)) for kind, triggers, p in KEYWORD_PATTERNS]
        self._numbers = [(re.compile(p), f"[REDACTED:{kind}]") for kind, p in NUMBER_PATTERNS]
        self._custom = [re.compile(p) for p in extra_patterns]

    def __call__(self, text: str) -> str:
        # keywords first: the markers the others leave ("[REDACTED:api_key]") contain keywords
        lower = text.lower()
        for kind, triggers, rx in self._keywords:
            if any(t in lower for t in triggers):
                text = rx.sub(_keep_name if kind == "secret" else f"[REDACTED:{kind}]", text)
        text = self._redact_numbers(text)
        for rx, sub in self._words:
            text = rx.sub(sub, text)
        if "@" in text:
            text = _redact_emails(text)
        for rx in self._custom:
            text = rx.sub("[REDACTED:custom]", text)
        return text

    def _redact_numbers(self, text: str) -> str:
        out: list[str] = []
        done = 0
        for m in _NUMBER_RUN.finditer(text):
            start, end = max(m.start() - _RUN_CONTEXT, done), min(m.end() + 1, len(text))
            piece = _CARD.sub(_card, text[start:end])
            for rx, replacement in self._numbers:
                piece = rx.sub(replacement, piece)
            out += (text[done:start], piece)
            done = end
        if not out:
            return text
        out.append(text[done:])
        return "".join(out)


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
        """``text`` redacted and capped to ``max_chars`` (with a note of the original length)."""
        original = len(text)
        work = text[: self._max * 2]  # cut before redacting too: a huge body costs bounded regex time
        if self._redact is not None:
            work = self._redact(work)
        return cap(work, self._max, original if original > self._max * 2 else None)

    def fill(self, event: dict[str, Any]) -> dict[str, Any]:
        """Move the event's private body and reply into ``prompt`` and ``reply`` when logging is on."""
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
