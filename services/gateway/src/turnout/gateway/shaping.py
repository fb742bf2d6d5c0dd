"""Response shaping: what the gateway does to a reply's text before the client sees it.

* **Reasoning blocks** (``<think>…</think>``, ``<thinking>…</thinking>``, configurable tags):
  ``keep`` them in the text, ``strip`` them, or ``separate`` them into ``reasoning_content``
  (OpenAI; Ollama clients get it as ``message.thinking``). ``/no_think`` in the prompt and
  Ollama's ``think: false`` strip for that request; ``think: true`` separates.
* **JSON fences**: when the request asked for JSON (``response_format`` ``json_object`` /
  ``json_schema``, Ollama ``format``), a reply wrapped in a ```` ```json ```` fence is unwrapped.
* **Signature**: an optional line appended to the reply (off by default; never on JSON replies
  or tool calls), a template with ``{model}`` and ``{backend}``.

Options are global (``TURNOUT_GATEWAY__SHAPING__…``), per model (``models``: fnmatch glob ->
override), per rule (``rules``: match on API key id, client IP/CIDR and/or model glob; first
match wins) and per request (``"turnout": {"shaping": {…}}`` in the body). Later levels win.

Streams are shaped by small state machines (:class:`ReasoningSplitter`, :class:`FenceScrubber`)
that hold back only the bytes that could still be the start of a tag or a closing fence, so a
tag split across chunks at any position is handled, and everything else passes at once.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Json = dict[str, Any]

NO_THINK = "/no_think"
_TAG_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_:-]*$")
_FENCE_WS = " \t\r\n`"
_WHOLE_FENCE_RE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\r?\n(.*?)\r?\n?[ \t]*```", re.DOTALL)


class ReasoningMode(StrEnum):
    """What happens to a model's ``<think>`` text: kept inline, stripped, or moved to ``reasoning_content``."""

    KEEP = "keep"
    STRIP = "strip"
    SEPARATE = "separate"


class ShapingOverride(BaseModel):
    """Any subset of the shaping options; unset fields inherit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reasoning: ReasoningMode | None = Field(
        default=None, description="keep | strip | separate (into reasoning_content / thinking)"
    )
    reasoning_tags: list[str] | None = Field(default=None, description="Tag names of reasoning blocks")
    json_fences: bool | None = Field(default=None, description="Unwrap ```json fences when JSON was asked")
    signature: str | None = Field(
        default=None, description="Line appended to replies ({model}, {backend}); empty string: none"
    )

    @field_validator("reasoning_tags")
    @classmethod
    def _tags(cls, v: list[str] | None) -> list[str] | None:
        for tag in v or ():
            if not _TAG_RE.match(tag):
                raise ValueError(f"reasoning tag {tag!r} must be a bare tag name such as 'think'")
        return v


class ShapingMatch(BaseModel):
    """Which requests a shaping rule applies to: by API key, client address and chosen model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str | None = Field(default=None, description="API key id (key-…)")
    ip: str | None = Field(default=None, description="Client address or CIDR network")
    model: str | None = Field(default=None, description="fnmatch glob on the chosen model")

    @field_validator("ip")
    @classmethod
    def _ip(cls, v: str | None) -> str | None:
        if v is not None:
            ipaddress.ip_network(v, strict=False)
        return v

    @model_validator(mode="after")
    def _some(self) -> Self:
        if self.key is None and self.ip is None and self.model is None:
            raise ValueError("a shaping rule matches on at least one of key, ip, model")
        return self

    def matches(self, model: str, key: str | None, ip: str | None) -> bool:
        """Whether a request for ``model`` from this key and address is matched."""
        if self.model is not None and not fnmatch.fnmatchcase(model, self.model):
            return False
        return self.matches_client(key, ip)

    def matches_client(self, key: str | None, ip: str | None) -> bool:
        """The key and address parts (the model is known only once routed)."""
        if self.key is not None and key != self.key:
            return False
        if self.ip is not None:
            try:
                return ip is not None and ipaddress.ip_address(ip) in ipaddress.ip_network(self.ip, strict=False)
            except ValueError:
                return False
        return True


class ShapingRule(ShapingOverride):
    """A shaping override applied to the requests its ``match`` selects."""

    match: ShapingMatch


class ShapingOptions(BaseModel):
    """Global shaping options, with per-model and per-rule overrides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reasoning: ReasoningMode = Field(
        default=ReasoningMode.SEPARATE, description="keep | strip | separate (into reasoning_content / thinking)"
    )
    reasoning_tags: list[str] = Field(default_factory=lambda: ["think", "thinking"])
    json_fences: bool = Field(default=True, description="Unwrap ```json fences when JSON was asked")
    signature: str = Field(default="", description="Line appended to replies ({model}, {backend}); empty: none")
    honour_no_think: bool = Field(default=True, description="'/no_think' in the prompt strips reasoning")
    models: dict[str, ShapingOverride] = Field(default_factory=dict, description="Model glob -> override")
    rules: list[ShapingRule] = Field(default_factory=list, description="First matching rule's override applies")

    @field_validator("reasoning_tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        ShapingOverride(reasoning_tags=v)
        return v

    def cache_key(self, request: RequestShaping, *, key: str | None, ip: str | None) -> list[Any]:
        """What, besides the model, shapes this client's replies: the rules that match its key and
        address, and the request's own override (for the response cache's key)."""
        rules = [i for i, r in enumerate(self.rules) if r.match.matches_client(key, ip)]
        override = request.override.model_dump(exclude_none=True) if request.override is not None else None
        return [rules, override]

    def resolve(
        self,
        request: RequestShaping,
        *,
        model: str,
        backend: str,
        key: str | None = None,
        ip: str | None = None,
    ) -> Shaper:
        """The shaper for one reply: global, then model, then rule, then request overrides."""
        levels: list[ShapingOverride] = [o for g, o in self.models.items() if fnmatch.fnmatchcase(model, g)][:1]
        rule = next((r for r in self.rules if r.match.matches(model, key, ip)), None)
        if rule is not None:
            levels.append(rule)
        if request.override is not None:
            levels.append(request.override)
        reasoning, tags, fences, signature = self.reasoning, self.reasoning_tags, self.json_fences, self.signature
        for o in levels:
            reasoning = o.reasoning or reasoning
            tags = o.reasoning_tags if o.reasoning_tags is not None else tags
            fences = o.json_fences if o.json_fences is not None else fences
            signature = o.signature if o.signature is not None else signature
        if request.think is False or (self.honour_no_think and request.no_think):
            reasoning = ReasoningMode.STRIP
        elif request.think is True and reasoning is ReasoningMode.KEEP:
            reasoning = ReasoningMode.SEPARATE
        sig = ""
        if signature and not request.json:
            sig = signature.replace("{model}", model).replace("{backend}", backend)
        return Shaper(reasoning, tuple(tags), fences and request.json, sig)


@dataclass(frozen=True, slots=True)
class RequestShaping:
    """What a request itself says about shaping (read before the body is forwarded)."""

    json: bool = False
    no_think: bool = False
    think: bool | None = None
    override: ShapingOverride | None = None

    @classmethod
    def of(cls, body: Json, *, think: bool | None = None) -> RequestShaping:
        """From an OpenAI-form body (``response_format``, messages, ``turnout.shaping``)."""
        rf = body.get("response_format")
        json_mode = isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema")
        no_think = any(_mentions_no_think(m.get("content")) for m in body.get("messages") or () if isinstance(m, dict))
        if not no_think and isinstance(body.get("prompt"), str):
            no_think = NO_THINK in body["prompt"]
        opts = body.get("turnout")
        raw = opts.get("shaping") if isinstance(opts, dict) else None
        override = ShapingOverride.model_validate(raw) if raw is not None else None
        return cls(json=json_mode, no_think=no_think, think=think, override=override)


def _mentions_no_think(content: Any) -> bool:
    if isinstance(content, str):
        return NO_THINK in content
    if isinstance(content, list):
        return any(isinstance(p, dict) and NO_THINK in str(p.get("text") or "") for p in content)
    return False


# --- state machines ------------------------------------------------------------------------------


def _partial_suffix(text: str, token: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``token``."""
    for k in range(min(len(text), len(token) - 1), 0, -1):
        if token.startswith(text[-k:]):
            return k
    return 0


class ReasoningSplitter:
    """Splits streamed text into (content, reasoning) at ``<tag>…</tag>`` blocks, tags cut
    anywhere across chunks. Whitespace right after an opening or closing tag is dropped (models
    write ``<think>\\n…\\n</think>\\n\\n``). An unterminated block is reasoning to the end."""

    __slots__ = ("_buf", "_closes", "_inside", "_opens", "_trim")

    def __init__(self, tags: tuple[str, ...]) -> None:
        self._opens = {f"<{t}>": t for t in tags}
        self._closes = {t: f"</{t}>" for t in tags}
        self._inside: str | None = None
        self._buf = ""
        self._trim = False

    def feed(self, text: str) -> tuple[str, str]:
        """Split the next piece of streamed text into (content, reasoning), holding back a partial tag."""
        if "<" not in text and not self._buf and self._inside is None and not self._trim:
            return text, ""  # no tag can start here: most chunks of most replies
        buf = self._buf + text
        content: list[str] = []
        reasoning: list[str] = []
        while buf:
            if self._trim:
                buf = buf.lstrip()
                if not buf:
                    break
                self._trim = False
            if self._inside is None:
                i = buf.find("<")
                if i < 0:
                    content.append(buf)
                    buf = ""
                    break
                content.append(buf[:i])
                buf = buf[i:]
                tag = next((t for o, t in self._opens.items() if buf.startswith(o)), None)
                if tag is not None:
                    buf = buf[len("<" + tag + ">") :]
                    self._inside = tag
                    self._trim = True
                    continue
                if any(o.startswith(buf) for o in self._opens):
                    break  # maybe the start of a tag: wait for more
                content.append("<")
                buf = buf[1:]
            else:
                close = self._closes[self._inside]
                i = buf.find(close)
                if i >= 0:
                    reasoning.append(buf[:i])
                    buf = buf[i + len(close) :]
                    self._inside = None
                    self._trim = True
                    continue
                k = _partial_suffix(buf, close)
                reasoning.append(buf[: len(buf) - k])
                buf = buf[len(buf) - k :]
                break
        self._buf = buf
        return "".join(content), "".join(reasoning)

    def finish(self) -> tuple[str, str]:
        """What was held back at the end of the stream, as (content, reasoning)."""
        buf, self._buf = self._buf, ""
        if self._inside is not None:
            return "", buf
        return buf, ""


class FenceScrubber:
    """Unwraps a reply that starts with a ```` ``` ```` fence line and ends with ```` ``` ````.

    It holds back text only at the start (until the first line shows whether it is a fence) and,
    inside a fence, the trailing whitespace/backticks that could be the closing fence."""

    __slots__ = ("_fenced", "_head", "_started", "_tail")

    def __init__(self) -> None:
        self._started = False
        self._fenced = False
        self._head = ""
        self._tail = ""

    def feed(self, text: str) -> str:
        """The next piece of streamed text with a leading code fence around JSON removed."""
        if not self._started:
            self._head += text
            stripped = self._head.lstrip()
            if not stripped:
                return ""
            if not "```".startswith(stripped[:3]):
                self._started = True
                out, self._head = self._head, ""
                return out
            nl = stripped.find("\n")
            if len(stripped) < 3 or nl < 0:
                return ""  # "`", "``" or the fence's info line: wait for its end
            self._started = True
            self._head = ""
            self._fenced = True
            text = stripped[nl + 1 :]
        if not self._fenced:
            return text
        text = self._tail + text
        body = text.rstrip(_FENCE_WS)
        self._tail = text[len(body) :]
        return body

    def finish(self) -> str:
        """The held-back tail, without the closing fence when the reply was fenced."""
        if not self._started:
            out, self._head = self._head, ""
            return out
        tail, self._tail = self._tail, ""
        if self._fenced and tail.strip() == "```":
            return ""
        return tail


def scrub_fences(text: str) -> str:
    """A whole reply: the inside of its ```` ```json ```` block when the reply is (or holds) one."""
    stripped = text.strip()
    if stripped.startswith("```"):
        s = FenceScrubber()
        return (s.feed(stripped) + s.finish()).strip()
    m = _WHOLE_FENCE_RE.search(text)
    return m.group(1).strip() if m else text


# --- one reply -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _ChoiceState:
    splitter: ReasoningSplitter | None
    scrubber: FenceScrubber | None
    tool_calls: bool = False


@dataclass(slots=True)
class Shaper:
    """The shaping of one reply (whole or streamed); OpenAI chat and text-completion forms."""

    reasoning: ReasoningMode
    tags: tuple[str, ...]
    json_fences: bool
    signature: str
    _choices: dict[int, _ChoiceState] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        """Whether this shaper changes anything (otherwise the stream passes through untouched)."""
        return self.reasoning is not ReasoningMode.KEEP or self.json_fences or bool(self.signature)

    def _split(self, text: str) -> tuple[str, str]:
        if self.reasoning is ReasoningMode.KEEP or not self.tags or "<" not in text:
            return text, ""
        s = ReasoningSplitter(self.tags)
        c1, r1 = s.feed(text)
        c2, r2 = s.finish()
        return c1 + c2, r1 + r2

    def whole(self, data: Json) -> Json:
        """A ``chat.completion`` or ``text_completion`` reply, shaped in place."""
        if not self.active:
            return data
        for choice in data.get("choices") or ():
            msg = choice.get("message")
            holder, key = (msg, "content") if isinstance(msg, dict) else (choice, "text")
            text = holder.get(key)
            reasoning = ""
            if isinstance(text, str):
                text, reasoning = self._split(text)
                if self.json_fences:
                    text = scrub_fences(text)
                tools = isinstance(msg, dict) and bool(msg.get("tool_calls"))
                if self.signature and not tools:
                    text = text + "\n\n" + self.signature if text else self.signature
                holder[key] = text
            self._set_reasoning(holder, reasoning.strip())
        return data

    def _set_reasoning(self, holder: Json, extra: str) -> None:
        if self.reasoning is ReasoningMode.STRIP:
            holder.pop("reasoning_content", None)
            holder.pop("reasoning", None)
        elif extra:
            prior = holder.get("reasoning_content")
            holder["reasoning_content"] = (prior + extra) if isinstance(prior, str) else extra

    def chunk(self, chunk: Json) -> Json | None:
        """One stream chunk, shaped in place (state carries over to the next); None when shaping
        left nothing in it (text held back or removed, no role, tool call or finish reason)."""
        choices = chunk.get("choices") or ()
        emptied = 0
        for choice in choices:
            state = self._state(int(choice.get("index") or 0))
            delta = choice.get("delta")
            holder, key = (delta, "content") if isinstance(delta, dict) else (choice, "text")
            if isinstance(delta, dict) and delta.get("tool_calls"):
                state.tool_calls = True
            text = holder.get(key)
            content, reasoning = "", ""
            if isinstance(text, str) and text:
                content, reasoning = self._feed(state, text)
            finished = choice.get("finish_reason") is not None
            if finished:
                c2, r2 = self._finish(state)
                content += c2
                reasoning += r2
            if isinstance(text, str) or content:
                holder[key] = content
            self._set_reasoning(holder, reasoning)
            if isinstance(delta, dict) and not content and delta.get("reasoning_content") and text:
                del delta[key]  # a reasoning-only delta, as reasoning servers send it
            if text and not content and not finished and set(holder) <= {key, "refusal"} and holder.get(key) == "":
                emptied += 1
        return None if choices and emptied == len(choices) else chunk

    def _state(self, index: int) -> _ChoiceState:
        state = self._choices.get(index)
        if state is None:
            splitter = ReasoningSplitter(self.tags) if self.reasoning is not ReasoningMode.KEEP and self.tags else None
            state = _ChoiceState(splitter, FenceScrubber() if self.json_fences else None)
            self._choices[index] = state
        return state

    def _feed(self, state: _ChoiceState, text: str) -> tuple[str, str]:
        content, reasoning = state.splitter.feed(text) if state.splitter else (text, "")
        if state.scrubber is not None and content:
            content = state.scrubber.feed(content)
        return content, reasoning

    def _finish(self, state: _ChoiceState) -> tuple[str, str]:
        content, reasoning = state.splitter.finish() if state.splitter else ("", "")
        if state.scrubber is not None:
            content = (state.scrubber.feed(content) if content else "") + state.scrubber.finish()
        if self.signature and not state.tool_calls:
            content += "\n\n" + self.signature
        return content, reasoning
