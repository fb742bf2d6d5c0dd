"""LMArena (formerly LMSYS Chatbot Arena) ratings, from the official ``lmarena-ai/leaderboard-dataset``
on Hugging Face through the dataset viewer's ``/rows`` API (see :mod:`.hf_datasets`).

Subsets (``config``) are arenas: ``text``, ``text_style_control``, ``vision``, ``webdev`` …; the
``latest`` split holds the most recent published leaderboard. Each row::

    {"model_name": "llama-3.1-8b-instruct", "organization": "Meta", "license": "Llama 3.1",
     "rating": 1212.4, "rating_lower": 1207.1, "rating_upper": 1217.9, "variance": 7.3,
     "vote_count": 51263, "rank": 121, "category": "overall", "leaderboard_publish_date": "2026-11-18"}

Metric ``elo_<category>`` (``elo_overall``, ``elo_coding`` …); ``raw_value`` is the rating.
Normalisation: ``score = 1 / (1 + 10 ** ((median - rating) / 400))`` — the expected win rate
against the median-rated model of the same category in this run (0.5 for the median model;
the Elo/Bradley–Terry reading of a rating difference). Categories not in ``categories`` and
models with fewer than ``min_votes`` votes are left out.
"""

from __future__ import annotations

import statistics
from typing import Any

import aiohttp
from pydantic import Field

from turnout.sync.sources.base import SourceRun, as_float
from turnout.sync.sources.hf_datasets import DatasetRowsOptions, dataset_rows

NAME = "lmarena"


class LmArenaOptions(DatasetRowsOptions):
    """The LMArena leaderboard dataset: which arena (subset) and split."""

    dataset: str = "lmarena-ai/leaderboard-dataset"
    config: str = "text"
    split: str = "latest"
    categories: tuple[str, ...] = Field(
        default=("overall", "coding", "math", "creative_writing", "instruction_following", "hard_prompts"),
        description="Arena categories to import (empty: all)",
    )
    min_votes: int = Field(default=0, ge=0)


class LmArenaSource:
    """Arena ratings from LMArena."""

    name = NAME

    def __init__(self, options: LmArenaOptions) -> None:
        self.options = options

    async def fetch(self, http: aiohttp.ClientSession) -> SourceRun:
        """One run: every rated model of the chosen arena as benchmark rows."""
        run = SourceRun(self.name)
        wanted = set(self.options.categories)
        by_category: dict[str, list[tuple[str, float, dict[str, Any]]]] = {}
        async for row in dataset_rows(http, self.options, run):
            model = row.get("model_name")
            rating = as_float(row.get("rating"))
            category = row.get("category") or "overall"
            if not isinstance(model, str) or not model.strip():
                run.skip("row without model_name")
                continue
            if rating is None:
                run.skip(f"{model}: rating is not a number ({row.get('rating')!r})")
                continue
            if wanted and category not in wanted:
                continue
            votes = as_float(row.get("vote_count"))
            if votes is not None and votes < self.options.min_votes:
                continue
            details = {
                "category": category,
                "rating_lower": as_float(row.get("rating_lower")),
                "rating_upper": as_float(row.get("rating_upper")),
                "votes": int(votes) if votes is not None else None,
                "rank": row.get("rank"),
                "organization": row.get("organization"),
                "license": row.get("license"),
                "published": row.get("leaderboard_publish_date"),
                "arena": self.options.config,
            }
            by_category.setdefault(str(category), []).append((model.strip(), rating, details))
        for category, entries in by_category.items():
            median = statistics.median(r for _, r, _ in entries)
            for model, rating, details in entries:
                run.add(
                    metric=f"elo_{category}"[:128],
                    raw_model=model,
                    raw_value=rating,
                    score=round(1.0 / (1.0 + 10 ** ((median - rating) / 400.0)), 6),
                    details={**details, "median_rating": median},
                )
        run.dedupe()
        return run
