"""What every benchmark source shares: the row type, the run summary, errors, and HTTP with retries.

A source fetches everything first and returns a :class:`SourceRun`; the worker then writes the
rows in one transaction, so a source that fails half-way (:class:`SourceError`) leaves the
previous data untouched. A malformed row never fails a run: it is skipped and counted, with a
few sample reasons kept for the logs and the admin view.
The errors are in :mod:`turnout.sync.errors`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from turnout.common.retrying import backoff_or_retry_after, parse_retry_after
from turnout.sync.errors import SourceAuthError, SourceError, SourceFormatError, SourceTransient, SourceUnavailable

log = logging.getLogger(__name__)

MAX_SKIP_SAMPLES = 10


class BenchmarkRow(BaseModel):
    """One published figure for one public model name.

    ``raw_value`` is the figure as the source publishes it; ``score`` is it normalised to 0..1
    (higher is better) by the rule the source module documents. ``kind`` says what the score
    measures: only ``quality`` rows belong in a model's quality average (prices, context
    windows and speeds are facts, stored alongside). ``aliases`` are other public
    names of the same model (an OpenRouter entry's Hugging Face id, say), tried by the matcher.
    """

    model_config = ConfigDict(frozen=True)

    source: str = Field(max_length=64)
    metric: str = Field(max_length=128)
    kind: str = Field(default="quality", description="quality | speed | price | context: what the score means")
    raw_model: str = Field(min_length=1, max_length=255)
    raw_value: float
    score: float = Field(ge=0.0, le=1.0)
    aliases: tuple[str, ...] = ()
    details: dict[str, Any] = Field(default_factory=dict)

    @field_validator("raw_value", "score")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be finite")
        return round(v, 6)


@dataclass(slots=True)
class SourceRun:
    """What one source run fetched: its rows, what it skipped and why, pages read."""

    source: str
    rows: list[BenchmarkRow] = field(default_factory=list)
    skipped: int = 0
    skip_reasons: list[str] = field(default_factory=list)
    pages: int = 0
    notes: list[str] = field(default_factory=list)

    def skip(self, reason: str) -> None:
        """Count a skipped record (a few reasons are kept as samples)."""
        self.skipped += 1
        if len(self.skip_reasons) < MAX_SKIP_SAMPLES:
            self.skip_reasons.append(reason[:200])

    def db_rows(self) -> list[dict[str, Any]]:
        """Rows for ``benchmarks`` (whitelisted columns; ``kind`` and ``aliases`` go in details)."""
        return [
            {
                "source": r.source,
                "metric": r.metric,
                "raw_model": r.raw_model,
                "raw_value": r.raw_value,
                "score": r.score,
                "details": {**r.details, "kind": r.kind, **({"aliases": list(r.aliases)} if r.aliases else {})},
            }
            for r in self.rows
        ]

    def add(self, **row: Any) -> None:
        """Add a row, or count it as skipped when it does not validate."""
        try:
            self.rows.append(BenchmarkRow(source=self.source, **row))
        except ValueError as exc:
            first = str(exc).splitlines()[1:2] or [str(exc)]
            self.skip(f"{row.get('raw_model')!r} {row.get('metric')}: {first[0].strip()}")

    def dedupe(self) -> None:
        """One row per (metric, model): a source listing a model twice (several precisions, say)
        keeps the best figure, since ``(source, metric, raw_model)`` is unique in the table."""
        best: dict[tuple[str, str], BenchmarkRow] = {}
        for row in self.rows:
            key = (row.metric, row.raw_model)
            if key not in best or row.score > best[key].score:
                best[key] = row
        dropped = len(self.rows) - len(best)
        if dropped:
            self.notes.append(f"{dropped} duplicate row(s) merged (best kept)")
        self.rows = list(best.values())

    def summary(self) -> dict[str, Any]:
        """The run's counts, for logs and job results."""
        return {
            "source": self.source,
            "rows": len(self.rows),
            "skipped": self.skipped,
            "skip_reasons": self.skip_reasons,
            "pages": self.pages,
            "notes": self.notes,
        }


class SourceOptions(BaseModel):
    """What every source has: a switch, a URL, timeouts and retries."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    url: str
    timeout_s: float = Field(default=30.0, gt=0, description="Per HTTP request")
    max_attempts: int = Field(default=4, ge=1, le=10, description="Per HTTP request, on 429/5xx/timeouts")
    backoff_initial_s: float = Field(default=1.0, ge=0)
    backoff_max_s: float = Field(default=30.0, ge=0)


class KeyedSourceOptions(SourceOptions):
    """A source that needs an API key."""

    api_key: SecretStr | None = None


class Source(Protocol):
    """A public benchmark source: fetches its rows."""

    name: str

    async def fetch(self, http: aiohttp.ClientSession) -> SourceRun: ...


def clamp01(v: float) -> float:
    """``v`` clamped to 0..1."""
    return 0.0 if v < 0 else 1.0 if v > 1 else v


def as_float(v: Any) -> float | None:
    """A finite float from a number or numeric string; ``None`` for anything else (and booleans)."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, int | float):
        f = float(v)
    elif isinstance(v, str):
        try:
            f = float(v.strip().rstrip("%"))
        except ValueError:
            return None
    else:
        return None
    return f if math.isfinite(f) else None


def as_object(v: Any) -> dict[str, Any]:
    """``v`` when it is a JSON object, else an empty one (for reading optional nested fields)."""
    return v if isinstance(v, dict) else {}


async def get_data_list(
    http: aiohttp.ClientSession, url: str, options: SourceOptions, *, headers: Mapping[str, str] | None = None
) -> list[Any]:
    """The ``data`` list of the JSON object at ``url`` (a one-page model list, as OpenAI-style
    APIs answer); any other shape is a :class:`SourceFormatError`."""
    data = await get_json(http, url, options, headers=headers)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise SourceFormatError(f"{url}: expected an object with a 'data' list")
    items: list[Any] = data["data"]
    return items


async def get_json(
    http: aiohttp.ClientSession,
    url: str,
    options: SourceOptions,
    *,
    params: Mapping[str, str | int] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Any:
    """GET ``url`` as JSON: per-request timeout, retries with back-off and jitter on 429, 5xx,
    timeouts and connection errors (``Retry-After`` honoured up to the back-off ceiling)."""

    wait = backoff_or_retry_after(options.backoff_initial_s, options.backoff_max_s)

    retrying = AsyncRetrying(
        stop=stop_after_attempt(options.max_attempts),
        wait=wait,
        retry=retry_if_exception_type(SourceTransient),
        reraise=True,
        before_sleep=lambda s: (
            log.info("retrying %s (attempt %d): %s", url, s.attempt_number, s.outcome.exception())
            if s.outcome
            else None
        ),
    )
    try:
        async for attempt in retrying:
            with attempt:
                return await _get_once(http, url, options, params, headers)
    except SourceTransient as exc:
        raise SourceUnavailable(f"{url}: {exc} (after {options.max_attempts} attempts)") from exc
    raise SourceUnavailable(url)  # pragma: no cover


async def _get_once(
    http: aiohttp.ClientSession,
    url: str,
    options: SourceOptions,
    params: Mapping[str, str | int] | None,
    headers: Mapping[str, str] | None,
) -> Any:
    hdrs = {"accept": "application/json", **(headers or {})}
    try:
        async with asyncio.timeout(options.timeout_s):
            async with http.get(url, params=params, headers=hdrs) as r:
                body = await r.read()
                status = r.status
                retry_after = r.headers.get("retry-after")
    except TimeoutError as exc:
        raise SourceTransient(f"timed out after {options.timeout_s}s") from exc
    except aiohttp.ClientError as exc:
        raise SourceTransient(f"{type(exc).__name__}: {exc}") from exc
    if status == 429 or status >= 500:
        raise SourceTransient(f"HTTP {status}", retry_after_s=parse_retry_after(retry_after))
    if status in (401, 403):
        raise SourceAuthError(f"{url}: HTTP {status} (check the API key)")
    if status >= 400:
        raise SourceError(f"{url}: HTTP {status}: {body[:200]!r}")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise SourceFormatError(f"{url}: response is not JSON: {body[:120]!r}") from exc
