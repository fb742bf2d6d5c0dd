"""Paging through a Hugging Face dataset with the dataset viewer's ``/rows`` API.

``GET https://datasets-server.huggingface.co/rows?dataset=D&config=C&split=S&offset=O&length=L``
(``length`` at most 100) answers::

    {"features": [{"feature_idx": 0, "name": "...", "type": {...}}, ...],
     "rows": [{"row_idx": 0, "row": {...}, "truncated_cells": []}, ...],
     "num_rows_total": 4576, "num_rows_per_page": 100, "partial": false}

and errors as ``{"error": "..."}`` with a 4xx/5xx status. Both the Open LLM Leaderboard and the
LMArena leaderboard dataset are read this way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from pydantic import Field

from turnout.sync.errors import SourceFormatError
from turnout.sync.sources.base import SourceOptions, SourceRun, get_json

ROWS_URL = "https://datasets-server.huggingface.co/rows"


class DatasetRowsOptions(SourceOptions):
    """A Hugging Face dataset read through the viewer's ``/rows`` API: which split, page size."""

    url: str = ROWS_URL
    dataset: str
    config: str = "default"
    split: str = "train"
    page_size: int = Field(default=100, ge=1, le=100)
    max_pages: int = Field(default=200, ge=1, description="Safety bound on pages per run")


async def dataset_rows(
    http: aiohttp.ClientSession, options: DatasetRowsOptions, run: SourceRun
) -> AsyncIterator[dict[str, Any]]:
    """Every row (its ``row`` object) of the split, page after page; malformed entries are
    counted as skipped on ``run``; a malformed page ends the run with :class:`SourceFormatError`."""
    offset = 0
    total: int | None = None
    while run.pages < options.max_pages:
        page = await get_json(
            http,
            options.url,
            options,
            params={
                "dataset": options.dataset,
                "config": options.config,
                "split": options.split,
                "offset": offset,
                "length": options.page_size,
            },
        )
        if not isinstance(page, dict) or not isinstance(page.get("rows"), list):
            raise SourceFormatError(f"{options.dataset}: page at offset {offset} has no 'rows' list")
        run.pages += 1
        if isinstance(page.get("num_rows_total"), int):
            total = page["num_rows_total"]
        entries = page["rows"]
        for entry in entries:
            row = entry.get("row") if isinstance(entry, dict) else None
            if not isinstance(row, dict):
                run.skip(f"offset {offset}: entry without a 'row' object")
                continue
            yield row
        offset += len(entries)
        if not entries or (total is not None and offset >= total):
            return
    run.notes.append(f"stopped after max_pages={options.max_pages} ({offset} of {total} rows)")
