"""Reading model output: reasoning blocks, markdown fences, final answers, numbers, JSON and code.

Models wrap answers in many ways (``<think>`` blocks, ```` ```json ```` fences, ``**Answer:** 42``,
``\\boxed{42}``, trailing prose). These helpers take the answer out before it is graded, and the
judge uses :func:`extract_json` on its own verdicts.
"""

from __future__ import annotations

import json
import re
from typing import Any

_THINK = re.compile(r"<(think|thinking|reasoning)>.*?</\1>", re.S | re.I)
_UNCLOSED_THINK = re.compile(r"^\s*<(think|thinking|reasoning)>.*", re.S | re.I)
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.S)
_ANSWER_LINE = re.compile(
    r"^[ \t>*_#-]*(?:final[ \t]+)?answer[ \t*_]*(?:is)?[ \t]*[:：=][ \t*_]*(.+?)[ \t]*$", re.I | re.M
)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_ANSWER_PHRASE = re.compile(r"\banswer\s+is\s*:?\s*(.+?)(?=\.(?!\d)|[\n;!?]|$)", re.I)
_NUMBER = re.compile(r"(?<![\w.])[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?")


def strip_think(text: str) -> str:
    """Drop reasoning blocks (``<think>…</think>``); an unclosed one means no answer was given."""
    out = _THINK.sub("", text)
    return "" if _UNCLOSED_THINK.match(out) else out.strip()


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced block, in order."""
    return [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]


def strip_fences(text: str) -> str:
    """The body of the first fenced block when the text has one, else the text itself."""
    blocks = fenced_blocks(text)
    return blocks[0][1].strip() if blocks else text.strip()


def clean_answer(text: str) -> str:
    """Markdown emphasis, quotes, code ticks and a trailing full stop removed."""
    t = text.strip()
    t = re.sub(r"^[*_`\"'“”‘’]+|[*_`\"'“”‘’]+$", "", t).strip()
    t = re.sub(r"[*_`]{1,3}", "", t)
    t = t.rstrip(" .。!").strip()
    return t


def final_answer(text: str) -> str:
    """The answer a reply ends on: the last ``Answer: …`` line, else the last ``\\boxed{…}``,
    else the last "the answer is …" phrase, else the last non-empty line."""
    body = strip_think(text)
    lines = _ANSWER_LINE.findall(body)
    if lines:
        return clean_answer(lines[-1])
    boxed = _BOXED.findall(body)
    if boxed:
        return clean_answer(boxed[-1])
    phrases = _ANSWER_PHRASE.findall(body)
    if phrases:
        return clean_answer(phrases[-1])
    rest = [ln for ln in body.splitlines() if ln.strip() and not ln.strip().startswith("```")]
    return clean_answer(rest[-1]) if rest else ""


def parse_number(token: str) -> float | None:
    """A number as written in an answer (thousands commas, a Unicode minus, a fraction), or ``None``."""
    t = token.replace(",", "").replace("−", "-").replace(" ", "")
    try:
        if "/" in t:
            num, den = t.split("/", 1)
            return float(num) / float(den) if float(den) != 0 else None
        return float(t)
    except ValueError:
        return None


def numbers_in(text: str) -> list[float]:
    """Every number in ``text``, in order."""
    out = []
    for m in _NUMBER.finditer(text):
        v = parse_number(m.group(0))
        if v is not None:
            out.append(v)
    return out


def final_number(text: str) -> float | None:
    """The number a reply ends on: the first number of the final answer, else the last number."""
    answer = final_answer(text)
    found = numbers_in(answer)
    if found:
        return found[0]
    everywhere = numbers_in(strip_think(text))
    return everywhere[-1] if everywhere else None


def extract_json(text: str) -> Any:
    """The first JSON value in ``text`` — whole, inside a fence, or embedded in prose.
    Raises ``ValueError`` when there is none."""
    body = strip_think(text)
    candidates = [b for _, b in fenced_blocks(body)] + [body]
    for cand in candidates:
        cand = cand.strip()
        try:
            return json.loads(cand)
        except ValueError:
            pass
        found = _first_balanced(cand)
        if found is not None:
            return found
    raise ValueError("no JSON value found")


def _first_balanced(text: str) -> Any:
    """The first ``{…}`` or ``[…]`` span that parses as JSON (string-aware bracket matching)."""
    for start, ch in enumerate(text):
        if ch not in "{[":
            continue
        depth = 0
        in_str = False
        escaped = False
        for i in range(start, len(text)):
            c = text[i]
            if in_str:
                if escaped:
                    escaped = False
                elif c == "\\":
                    escaped = True
                elif c == '"':
                    in_str = False
            elif c == '"':
                in_str = True
            elif c in "{[":
                depth += 1
            elif c in "}]":
                depth -= 1
                if depth == 0:
                    try:
                        return json.loads(text[start : i + 1])
                    except ValueError:
                        break
    return None


def extract_code(text: str, entrypoint: str | None = None) -> str:
    """The Python code of a reply: the fenced block defining ``entrypoint``, else the first
    Python (or unlabelled) block, else the whole reply."""
    body = strip_think(text)
    blocks = fenced_blocks(body)
    if entrypoint:
        pattern = re.compile(rf"^\s*(?:async\s+)?def\s+{re.escape(entrypoint)}\s*\(", re.M)
        for _, code in blocks:
            if pattern.search(code):
                return code
    for lang, code in blocks:
        if lang in ("python", "py", "python3", ""):
            return code
    return blocks[0][1] if blocks else body


def words(text: str) -> list[str]:
    """The words of ``text`` (letters and digits, with inner apostrophes and hyphens)."""
    return re.findall(r"[A-Za-z0-9À-ÿ]+(?:['’-][A-Za-z0-9À-ÿ]+)*", text)
