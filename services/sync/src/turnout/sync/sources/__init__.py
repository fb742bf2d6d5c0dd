"""Public benchmark sources, one module each, individually switchable.

================  ===========================================================  ==========================
source            what                                                         module
================  ===========================================================  ==========================
hf_leaderboard    Open LLM Leaderboard v2 scores (HF dataset viewer /rows)      :mod:`.hf_leaderboard`
lmarena           LMArena (Chatbot Arena) ratings per category (HF dataset)     :mod:`.lmarena`
artificial_anal…  Artificial Analysis indices and benchmarks (API key)          :mod:`.artificial_analysis`
openrouter        context windows, prices, modalities (OpenRouter /models)     :mod:`.openrouter`
local             CSV/JSON files, for air-gapped sites                          :mod:`.local_files`
================  ===========================================================  ==========================

Configuration nests under the sync settings, e.g. ``TURNOUT_SYNC__SOURCES__LMARENA__ENABLED=false``,
``TURNOUT_SYNC__SOURCES__ARTIFICIAL_ANALYSIS__API_KEY=…``,
``TURNOUT_SYNC__SOURCES__LOCAL_FILES__PATHS='["/data/benchmarks"]'``; every URL can be pointed
at a mirror. Artificial Analysis runs only with an API key; local files only with paths.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from turnout.sync.errors import SourceAuthError, SourceError, SourceFormatError, SourceUnavailable
from turnout.sync.sources.artificial_analysis import ArtificialAnalysisOptions, ArtificialAnalysisSource
from turnout.sync.sources.base import BenchmarkRow, Source, SourceRun
from turnout.sync.sources.hf_leaderboard import HfLeaderboardOptions, HfLeaderboardSource
from turnout.sync.sources.lmarena import LmArenaOptions, LmArenaSource
from turnout.sync.sources.local_files import LocalFilesOptions, LocalFilesSource
from turnout.sync.sources.openrouter import OpenRouterOptions, OpenRouterSource


class BenchmarkSourcesOptions(BaseModel):
    """Every public benchmark source's options."""

    model_config = ConfigDict(extra="forbid")

    hf_leaderboard: HfLeaderboardOptions = Field(default_factory=HfLeaderboardOptions)
    lmarena: LmArenaOptions = Field(default_factory=LmArenaOptions)
    artificial_analysis: ArtificialAnalysisOptions = Field(default_factory=ArtificialAnalysisOptions)
    openrouter: OpenRouterOptions = Field(default_factory=OpenRouterOptions)
    local_files: LocalFilesOptions = Field(default_factory=LocalFilesOptions)


def build_sources(options: BenchmarkSourcesOptions) -> dict[str, Source]:
    """The enabled sources by name (Artificial Analysis needs a key, local files need paths)."""
    out: dict[str, Source] = {}
    if options.hf_leaderboard.enabled:
        out["hf_leaderboard"] = HfLeaderboardSource(options.hf_leaderboard)
    if options.lmarena.enabled:
        out["lmarena"] = LmArenaSource(options.lmarena)
    if options.artificial_analysis.enabled and options.artificial_analysis.api_key is not None:
        out["artificial_analysis"] = ArtificialAnalysisSource(options.artificial_analysis)
    if options.openrouter.enabled:
        out["openrouter"] = OpenRouterSource(options.openrouter)
    if options.local_files.enabled and options.local_files.paths:
        src = LocalFilesSource(options.local_files)
        out[src.name] = src
    return out


__all__ = [
    "ArtificialAnalysisOptions",
    "ArtificialAnalysisSource",
    "BenchmarkRow",
    "BenchmarkSourcesOptions",
    "HfLeaderboardOptions",
    "HfLeaderboardSource",
    "LmArenaOptions",
    "LmArenaSource",
    "LocalFilesOptions",
    "LocalFilesSource",
    "OpenRouterOptions",
    "OpenRouterSource",
    "Source",
    "SourceAuthError",
    "SourceError",
    "SourceFormatError",
    "SourceRun",
    "SourceUnavailable",
    "build_sources",
]
