"""Artificial Analysis model evaluations (needs a free API key), ``GET
https://artificialanalysis.ai/api/v2/data/llms/models`` with the key in ``x-api-key``::

    {"status": 200, "prompt_options": {...},
     "data": [{"id": "…uuid…", "name": "Llama 3.1 Instruct 8B", "slug": "llama-3-1-instruct-8b",
               "model_creator": {"id": "…", "name": "Meta", "slug": "meta"},
               "evaluations": {"artificial_analysis_intelligence_index": 16.9,
                               "artificial_analysis_coding_index": 4.9, "artificial_analysis_math_index": 4.3,
                               "mmlu_pro": 0.476, "gpqa": 0.259, "hle": 0.051, "livecodebench": 0.116,
                               "scicode": 0.132, "math_500": 0.519, "aime": 0.077},
               "pricing": {"price_1m_blended_3_to_1": 0.1, "price_1m_input_tokens": 0.1,
                           "price_1m_output_tokens": 0.1},
               "median_output_tokens_per_second": 178.4, "median_time_to_first_token_seconds": 0.35,
               "median_time_to_first_answer_token": 0.35}]}

The whole list comes in one response (no pagination). One row per evaluation present:
metric = the evaluation's key. Normalisation: the ``artificial_analysis_*_index`` figures are
0–100 (``score = value / 100``); the single benchmarks are fractions 0..1 (``score = value``;
a value above 1 is read as a percentage). Pricing and the provider speeds are API facts, not
local ones: they go in ``details`` of every row. ``raw_model`` is the display name, with the
slug as an alias for matching.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from turnout.sync.sources.base import KeyedSourceOptions, SourceRun, as_float, as_object, clamp01, get_data_list

NAME = "artificial_analysis"
URL = "https://artificialanalysis.ai/api/v2/data/llms/models"


class ArtificialAnalysisOptions(KeyedSourceOptions):
    """Artificial Analysis' API (a key is needed)."""

    url: str = URL


class ArtificialAnalysisSource:
    """Quality and speed indices from Artificial Analysis."""

    name = NAME

    def __init__(self, options: ArtificialAnalysisOptions) -> None:
        self.options = options

    async def fetch(self, http: aiohttp.ClientSession) -> SourceRun:
        """One run: every model's indices as benchmark rows."""
        run = SourceRun(self.name)
        key = self.options.api_key.get_secret_value() if self.options.api_key else ""
        for item in await get_data_list(http, self.options.url, self.options, headers={"x-api-key": key}):
            self._model(item, run)
        run.pages = 1
        run.dedupe()
        return run

    def _model(self, item: Any, run: SourceRun) -> None:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"].strip():
            run.skip("entry without a name")
            return
        name = item["name"].strip()
        evaluations = item.get("evaluations")
        if not isinstance(evaluations, dict):
            run.skip(f"{name}: no evaluations object")
            return
        creator = as_object(item.get("model_creator"))
        details = {
            "id": item.get("id"),
            "slug": item.get("slug"),
            "creator": creator.get("name"),
            "pricing": item.get("pricing") if isinstance(item.get("pricing"), dict) else None,
            "provider_tokens_per_s": as_float(item.get("median_output_tokens_per_second")),
            "provider_ttft_s": as_float(item.get("median_time_to_first_token_seconds")),
        }
        aliases = tuple(a for a in (item.get("slug"),) if isinstance(a, str) and a)
        for metric, raw in evaluations.items():
            if raw is None:
                continue  # not evaluated on this benchmark: nothing to record
            value = as_float(raw)
            if value is None:
                run.skip(f"{name}: {metric} is not a number ({raw!r})")
                continue
            if metric.endswith("_index") or value > 1.0:
                score = value / 100.0
            else:
                score = value
            run.add(
                metric=str(metric),
                raw_model=name,
                raw_value=value,
                score=clamp01(score),
                aliases=aliases,
                details=details,
            )
