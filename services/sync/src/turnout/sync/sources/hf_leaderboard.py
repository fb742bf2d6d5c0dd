"""The Hugging Face Open LLM Leaderboard (v2), from its aggregated ``open-llm-leaderboard/contents``
dataset through the dataset viewer's ``/rows`` API (see :mod:`.hf_datasets`).

Each row is one evaluated model (one precision), with, among others::

    "fullname": "meta-llama/Llama-3.1-8B-Instruct", "Precision": "bfloat16", "#Params (B)": 8.03,
    "Average ⬆️": 23.76, "IFEval": 49.22, "IFEval Raw": 0.4922, "BBH": 29.38, "BBH Raw": 0.5087,
    "MATH Lvl 5": 15.56, "GPQA": 8.72, "MUSR": 8.61, "MMLU-PRO": 31.09, "Official Providers": true,
    "Flagged": false, "MoE": false, "Chat Template": true, "Base Model": "…"

Metrics: ``average``, ``ifeval``, ``bbh``, ``math_lvl5``, ``gpqa``, ``musr``, ``mmlu_pro``.
``raw_value`` is the leaderboard's published figure (0–100, already normalised by the leaderboard
between the random-guess baseline and a perfect score); ``score = raw_value / 100`` clamped to
0..1. The un-normalised accuracy (``"<name> Raw"``, 0..1) is kept in ``details.raw_accuracy``.
Flagged models are skipped; with ``official_only`` (default) only rows the leaderboard marks as
coming from official providers are kept, so that community fine-tunes do not match local models.
"""

from __future__ import annotations

import re

import aiohttp
from pydantic import Field

from turnout.sync.sources.base import SourceRun, as_float, clamp01
from turnout.sync.sources.hf_datasets import DatasetRowsOptions, dataset_rows

NAME = "hf_leaderboard"
METRICS = {
    "average": "Average ⬆️",
    "ifeval": "IFEval",
    "bbh": "BBH",
    "math_lvl5": "MATH Lvl 5",
    "gpqa": "GPQA",
    "musr": "MUSR",
    "mmlu_pro": "MMLU-PRO",
}
_ANCHOR = re.compile(r">([^<>]+)</a>")


class HfLeaderboardOptions(DatasetRowsOptions):
    """The Open LLM Leaderboard dataset: which rows and metrics."""

    dataset: str = "open-llm-leaderboard/contents"
    config: str = "default"
    split: str = "train"
    official_only: bool = Field(default=True, description="Keep only rows from official providers")
    metrics: tuple[str, ...] = tuple(METRICS)


class HfLeaderboardSource:
    """Benchmark scores from the Open LLM Leaderboard."""

    name = NAME

    def __init__(self, options: HfLeaderboardOptions) -> None:
        self.options = options

    async def fetch(self, http: aiohttp.ClientSession) -> SourceRun:
        """One run: every page of the dataset as benchmark rows, de-duplicated."""
        run = SourceRun(self.name)
        async for row in dataset_rows(http, self.options, run):
            self._row(row, run)
        run.dedupe()
        return run

    def _row(self, row: dict[str, object], run: SourceRun) -> None:
        model = row.get("fullname")
        if not isinstance(model, str) or not model.strip():
            m = _ANCHOR.search(str(row.get("Model") or ""))
            model = m.group(1) if m else None
        if not model:
            run.skip("row without a model name")
            return
        model = model.strip()
        if row.get("Flagged") is True:
            run.skip(f"{model}: flagged")
            return
        if self.options.official_only and row.get("Official Providers") is not True:
            return  # filtered out by configuration, not malformed
        details = {
            "precision": row.get("Precision"),
            "params_b": as_float(row.get("#Params (B)")),
            "type": row.get("Type"),
            "moe": row.get("MoE"),
            "chat_template": row.get("Chat Template"),
            "base_model": row.get("Base Model"),
            "submitted": row.get("Submission Date"),
        }
        found = 0
        for metric in self.options.metrics:
            column = METRICS.get(metric)
            if column is None or column not in row:
                continue
            value = as_float(row.get(column))
            if value is None:
                run.skip(f"{model}: {column} is not a number ({row.get(column)!r})")
                continue
            found += 1
            run.add(
                metric=metric,
                raw_model=model,
                raw_value=value,
                score=clamp01(value / 100.0),
                details={**details, "raw_accuracy": as_float(row.get(f"{column} Raw"))},
            )
        if not found:
            run.skip(f"{model}: no metric columns")
