"""The OpenRouter model list: context windows, prices and modalities of hosted models, ``GET
https://openrouter.ai/api/v1/models`` (no key needed; one response, no pagination)::

    {"data": [{"id": "meta-llama/llama-3.1-8b-instruct", "canonical_slug": "meta-llama/llama-3.1-8b-instruct",
               "hugging_face_id": "meta-llama/Meta-Llama-3.1-8B-Instruct", "name": "Meta: Llama 3.1 8B Instruct",
               "created": 1721692800, "context_length": 131072,
               "architecture": {"modality": "text->text", "input_modalities": ["text"],
                                "output_modalities": ["text"], "tokenizer": "Llama3", "instruct_type": "llama3"},
               "pricing": {"prompt": "0.00000002", "completion": "0.00000003", "request": "0", "image": "0"},
               "top_provider": {"context_length": 131072, "max_completion_tokens": 16384, "is_moderated": false},
               "per_request_limits": null, "supported_parameters": ["max_tokens", "temperature", "tools"]}]}

OpenRouter publishes no quality scores; its rows are facts (``kind`` ``context`` or ``price``):

* ``context_length`` — tokens; ``score = log2(ctx / 2048) / log2(1048576 / 2048)`` clamped
  (2k → 0, 1M and more → 1);
* ``price_prompt_usd_per_mtok`` / ``price_completion_usd_per_mtok`` — USD per million tokens
  (the API's per-token strings × 10⁶); ``score = 1 / (1 + price / 1 USD)`` (free → 1, 1 USD → 0.5).
  Negative prices (OpenRouter's marker for variable pricing) are skipped.

Modalities, supported parameters (``tools``…) and the Hugging Face id go in ``details``; the
Hugging Face id and the display name are aliases for matching.
"""

from __future__ import annotations

import math
from typing import Any

import aiohttp

from turnout.sync.sources.base import SourceOptions, SourceRun, as_float, as_object, clamp01, get_data_list

NAME = "openrouter"
URL = "https://openrouter.ai/api/v1/models"


class OpenRouterOptions(SourceOptions):
    """OpenRouter's model list endpoint."""

    url: str = URL


def context_score(tokens: float) -> float:
    """A context window as 0..1 on a log scale from 2K (0) to 1M tokens (1)."""
    return clamp01(math.log2(max(tokens, 1) / 2048) / math.log2(1048576 / 2048))


def price_score(usd_per_mtok: float) -> float:
    """A price per million tokens as 0..1: free is 1, falling as it rises."""
    return 1.0 / (1.0 + usd_per_mtok)


class OpenRouterSource:
    """Context windows and prices of hosted models from OpenRouter."""

    name = NAME

    def __init__(self, options: OpenRouterOptions) -> None:
        self.options = options

    async def fetch(self, http: aiohttp.ClientSession) -> SourceRun:
        """One run: the model list as context and price rows."""
        run = SourceRun(self.name)
        for item in await get_data_list(http, self.options.url, self.options):
            self._model(item, run)
        run.pages = 1
        run.dedupe()
        return run

    def _model(self, item: Any, run: SourceRun) -> None:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"].strip():
            run.skip("entry without an id")
            return
        mid = item["id"].strip()
        arch = as_object(item.get("architecture"))
        details = {
            "name": item.get("name"),
            "hugging_face_id": item.get("hugging_face_id") or None,
            "modality": arch.get("modality"),
            "input_modalities": arch.get("input_modalities"),
            "output_modalities": arch.get("output_modalities"),
            "supported_parameters": item.get("supported_parameters"),
            "max_completion_tokens": as_object(item.get("top_provider")).get("max_completion_tokens"),
        }
        aliases = tuple(a for a in (item.get("hugging_face_id"), item.get("name")) if isinstance(a, str) and a.strip())
        wrote = 0
        ctx = as_float(item.get("context_length"))
        if ctx is not None and ctx > 0:
            run.add(
                metric="context_length",
                kind="context",
                raw_model=mid,
                raw_value=ctx,
                score=round(context_score(ctx), 6),
                aliases=aliases,
                details=details,
            )
            wrote += 1
        pricing = as_object(item.get("pricing"))
        for field, metric in (("prompt", "price_prompt_usd_per_mtok"), ("completion", "price_completion_usd_per_mtok")):
            per_token = as_float(pricing.get(field))
            if per_token is None or per_token < 0:
                continue
            usd = round(per_token * 1e6, 6)
            run.add(
                metric=metric,
                kind="price",
                raw_model=mid,
                raw_value=usd,
                score=round(price_score(usd), 6),
                aliases=aliases,
                details=details,
            )
            wrote += 1
        if not wrote:
            run.skip(f"{mid}: neither a context length nor a price")
