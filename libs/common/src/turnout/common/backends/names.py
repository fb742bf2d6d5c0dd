"""Read what a model's name tells: family, parameter count (MoE-aware), quantisation, role.

Works on Ollama tags (``qwen3:30b-a3b``, ``llama3.1:8b-instruct-q4_K_M``), Hugging Face ids
(``meta-llama/Llama-3.1-8B-Instruct``, ``Qwen/Qwen3-30B-A3B``) and GGUF file names
(``smollm2-135m-instruct-q4_1.gguf``).

MoE conventions: ``30b-a3b`` gives total 30B / active 3B. ``8x7b`` gives total 56B and active
14B (top-2 routing, nominal: Mixtral's real totals are ~47B/13B since attention is shared).
Memory follows the total; speed follows the active count.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

_SIZE = r"(\d+(?:\.\d+)?)"
_MOE_AX = re.compile(rf"(?<![a-z0-9.]){_SIZE}b[-_ ]?a{_SIZE}b(?![a-z0-9])")
_MOE_NX = re.compile(rf"(?<![a-z0-9.])(\d+)x{_SIZE}([bm])(?![a-z0-9])")
_PARAMS = re.compile(rf"(?<![a-z0-9.]){_SIZE}([bm])(?![a-z0-9])")
_QUANT = re.compile(
    r"(?<![a-z0-9])(i?q\d(?:_[a-z0-9]+)*|f16|fp16|bf16|f32|fp32|fp8|int4|int8|awq|gptq|mlx|exl2)(?![a-z0-9])"
)
_SPLIT = re.compile(r"[-_:/ ]+")
_NAMED_SIZES = {"mini": 3.8, "small": 7.0, "medium": 14.0}

_VISION = ("vision", "llava", "bakllava", "moondream", "-vl", "vl-", "minicpm-v", "pixtral", "gemma3", "qwen2.5vl")
_EMBED = ("embed", "bge-", "bge:", "e5-", "minilm", "gte-", "nomic-embed", "arctic-embed", "mxbai")
_CODER = ("coder", "code", "starcoder", "codestral", "devstral", "deepseek-coder", "codegemma", "codellama")
_TOOLS = (
    "llama3.1",
    "llama3.2",
    "llama3.3",
    "qwen2.5",
    "qwen3",
    "mistral",
    "mixtral",
    "command-r",
    "firefunction",
    "hermes",
    "granite3",
    "smollm2",
    "gpt-4",
    "gpt-3.5",
    "gpt-4o",
    "claude",
    "nemotron",
    "phi4",
)


@dataclass(frozen=True, slots=True)
class ModelNameInfo:
    name: str
    family: str
    params_b: float | None
    """Total parameters in billions (what memory needs)."""
    active_params_b: float | None
    """Active parameters per token in billions (what speed follows); equals params_b for dense models."""
    quant: str | None
    instruct: bool
    embedding: bool
    vision: bool
    coder: bool
    tools_likely: bool

    @property
    def is_moe(self) -> bool:
        """A mixture of experts: fewer active parameters than total."""
        return self.params_b is not None and self.active_params_b is not None and self.active_params_b < self.params_b


@lru_cache(maxsize=4096)
def parse_model_name(name: str) -> ModelNameInfo:
    base = name.rsplit("/", 1)[-1] if "/" in name and not name.endswith("/") else name
    low = base.lower().removesuffix(".gguf")
    total = active = None
    m = _MOE_AX.search(low)
    if m:
        total, active = float(m.group(1)), float(m.group(2))
    else:
        m = _MOE_NX.search(low)
        if m:
            n, size = int(m.group(1)), float(m.group(2)) / (1000.0 if m.group(3) == "m" else 1.0)
            total, active = n * size, min(n, 2) * size
        else:
            m = _PARAMS.search(low)
            if m:
                total = float(m.group(1)) / (1000.0 if m.group(2) == "m" else 1.0)
                active = total
    if total is None:
        for word, size in _NAMED_SIZES.items():
            if re.search(rf"(?<![a-z]){word}(?![a-z])", low):
                total = active = size
                break
    q = _QUANT.search(low)
    quant = q.group(1) if q else None
    if quant and name.rsplit(":", 1)[-1].lower().endswith(quant):
        # keep the original spelling (q4_K_M) from the tag
        quant = name[len(name) - len(quant) :]
    return ModelNameInfo(
        name=name,
        family=_family(low, m.start() if m else None),
        params_b=_round(total),
        active_params_b=_round(active),
        quant=quant,
        instruct=any(t in low for t in ("instruct", "-it", ":it", "chat", "-sft")),
        embedding=any(t in low for t in _EMBED),
        vision=any(t in low for t in _VISION),
        coder=any(t in low for t in _CODER),
        tools_likely=any(t in low for t in _TOOLS),
    )


def _family(low: str, size_at: int | None) -> str:
    if ":" in low:
        head = low.split(":", 1)[0]
    elif size_at is not None and size_at > 0:
        head = low[:size_at]
    else:
        q = _QUANT.search(low)
        head = low[: q.start()] if q else low
    head = _SPLIT.sub("-", head).strip("-")
    return head or low


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def untagged_match(name: str, names: Iterable[str]) -> str | None:
    """A tag-less name as Ollama reads it: ``name:latest``, else the only ``name:<tag>``
    (``llama3.1`` is ``llama3.1:latest``, or ``llama3.1:8b`` when that is the only one)."""
    if ":" in name.rsplit("/", 1)[-1]:
        return None
    names = list(names)
    if f"{name}:latest" in names:
        return f"{name}:latest"
    tagged = [n for n in names if n.startswith(name + ":")]
    return tagged[0] if len(tagged) == 1 else None
