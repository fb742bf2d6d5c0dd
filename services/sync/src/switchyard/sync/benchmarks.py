"""Benchmark scores from a local CSV or JSON file (format: docs/benchmarks-file.md).

1. :func:`read_file` parses rows; a row missing a field, with a value that is not a finite
   number, or with no usable scale is skipped and counted (``invalid``), never fatal.
2. :func:`normalise` maps the raw value to 0..1 with ``scale_min``/``scale_max`` (swap them for
   lower-is-better metrics), or keeps a value already in 0..1.
3. :class:`ModelMatcher` matches the raw model name to a local model: exact name (or an
   upstream name) → confidence 1.0; same family and size (:func:`match_key`, so
   ``meta-llama/Llama-3.1-8B-Instruct`` is ``llama3.1:8b``) → 0.9; else a fuzzy name match
   (rapidfuzz, over models of the *same size only*) at or above the threshold → 0.8·ratio.
   Unmatched rows are stored with no model, and matched on a later import.
4. :func:`upsert_rows` writes all rows in the caller's transaction with
   ``ON CONFLICT (source, metric, raw_model) DO UPDATE … WHERE … IS DISTINCT FROM``, so the
   returned count is what actually changed.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, Field
from rapidfuzz import fuzz, process
from sqlalchemy import func, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from switchyard.common.catalog import match_key, normalize_name
from switchyard.common.db.models import Benchmark, Deployment, Model

CHUNK = 1000


class RowError(ValueError):
    """Why one row of the file was skipped."""


@dataclass(frozen=True, slots=True)
class BenchmarkRow:
    source: str
    metric: str
    raw_model: str
    raw_value: float
    score: float
    details: dict[str, Any] = field(default_factory=dict)


class ImportResult(BaseModel):
    path: str | None = None
    skipped: bool = Field(default=False, description="No file configured")
    rows: int = 0
    matched: int = 0
    unmatched: int = 0
    invalid: int = 0
    duplicate: int = 0
    changed: int = 0
    published: bool = False
    errors: list[str] = Field(default_factory=list, description="First invalid rows: 'line N: why'")


def _number(value: Any, name: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise RowError(f"{name} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise RowError(f"{name} {value!r} is not a number") from exc
    if not math.isfinite(number):
        raise RowError(f"{name} is not finite")
    return number


def normalise(value: float, scale_min: float | None, scale_max: float | None) -> float:
    if scale_min is None and scale_max is None:
        if 0.0 <= value <= 1.0:
            return value
        raise RowError(f"value {value:g} is outside 0..1 and the row has no scale_min/scale_max")
    if scale_min is None or scale_max is None:
        raise RowError("give both scale_min and scale_max, or neither")
    if scale_min == scale_max:
        raise RowError("scale_min equals scale_max")
    lo, hi = min(scale_min, scale_max), max(scale_min, scale_max)
    if not lo <= value <= hi:
        raise RowError(f"value {value:g} is outside its scale {scale_min:g}..{scale_max:g}")
    return (value - scale_min) / (scale_max - scale_min)


def parse_row(item: dict[str, Any], default_source: str) -> BenchmarkRow:
    data = {str(k).strip().lower(): v for k, v in item.items() if k is not None}
    model = str(data.get("model") or "").strip()
    metric = str(data.get("metric") or "").strip()
    if not model or not metric:
        raise RowError("model and metric are required")
    if len(model) > 255 or len(metric) > 128:
        raise RowError("model (255) or metric (128) name too long")
    source = str(data.get("source") or "").strip() or default_source
    if len(source) > 64:
        raise RowError("source name too long (64)")
    value = _number(data.get("value"), "value")
    if value is None:
        raise RowError("value is required")
    lo, hi = _number(data.get("scale_min"), "scale_min"), _number(data.get("scale_max"), "scale_max")
    score = normalise(value, lo, hi)
    details: dict[str, Any] = {}
    if lo is not None:
        details = {"scale_min": lo, "scale_max": hi}
    return BenchmarkRow(source, metric, model, value, round(score, 6), details)


def _items(path: Path, text: str) -> list[tuple[int, Any]]:
    """(line or index, item) pairs: CSV rows by line number, JSON items by position."""
    if path.suffix.lower() == ".json":
        doc = orjson.loads(text)
        if isinstance(doc, dict):
            source = doc.get("source")
            items = doc.get("rows", doc.get("benchmarks"))
            if not isinstance(items, list):
                raise ValueError(f"{path}: a JSON object needs a 'rows' list")
            if isinstance(source, str) and source:
                items = [{"source": source, **i} if isinstance(i, dict) else i for i in items]
        elif isinstance(doc, list):
            items = doc
        else:
            raise ValueError(f"{path}: JSON must be a list of rows or an object with 'rows'")
        return list(enumerate(items, start=1))
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    if reader.fieldnames is None or not {"model", "metric", "value"} <= {f.strip().lower() for f in reader.fieldnames}:
        raise ValueError(f"{path}: the CSV header must name at least model, metric, value")
    return [(reader.line_num, row) for row in reader]


@dataclass(slots=True)
class ParsedFile:
    rows: list[BenchmarkRow]
    invalid: list[str]
    duplicate: int


def read_file(path: Path, default_source: str) -> ParsedFile:
    """Parse the file; raises ``OSError``/``ValueError`` only when the file itself is unusable."""
    items = _items(path, path.read_text(encoding="utf-8"))
    invalid: list[str] = []
    rows: dict[tuple[str, str, str], BenchmarkRow] = {}
    duplicate = 0
    for where, item in items:
        if not isinstance(item, dict):
            invalid.append(f"row {where}: not an object")
            continue
        try:
            row = parse_row(item, default_source)
        except RowError as exc:
            invalid.append(f"row {where}: {exc}")
            continue
        key = (row.source, row.metric, row.raw_model)
        if key in rows:
            duplicate += 1  # the last one wins
        rows[key] = row
    return ParsedFile(list(rows.values()), invalid, duplicate)


@dataclass(frozen=True, slots=True)
class Match:
    model_id: int | None
    confidence: float | None
    how: str


class ModelMatcher:
    def __init__(self, models: Iterable[tuple[int, str, Sequence[str]]], *, threshold: float = 90.0) -> None:
        """``models``: (id, catalog name, upstream names) of every local model."""
        self._threshold = threshold
        self._exact: dict[str, int] = {}
        self._by_key: dict[tuple[str, float | None], list[tuple[int, str]]] = {}
        self._by_size: dict[float | None, list[tuple[str, int]]] = {}
        for mid, name, upstream in models:
            for n in (name, *upstream):
                self._exact.setdefault(n.lower(), mid)
                self._exact.setdefault(n.lower().removesuffix(":latest"), mid)
            key = match_key(name)
            self._by_key.setdefault(key, []).append((mid, name))
            self._by_size.setdefault(key[1], []).append((normalize_name(name), mid))

    def match(self, raw: str) -> Match:
        mid = self._exact.get(raw.lower()) or self._exact.get(raw.lower().rsplit("/", 1)[-1])
        if mid is not None:
            return Match(mid, 1.0, "exact")
        key = match_key(raw)
        if key[1] is not None and key in self._by_key:
            # quantisations of one model share the key: prefer the plainest name
            mid = min(self._by_key[key], key=lambda m: (len(m[1]), m[1]))[0]
            return Match(mid, 0.9, "family+size")
        choices = self._by_size.get(key[1], [])
        if choices:
            best = process.extractOne(
                normalize_name(raw),
                [c[0] for c in choices],
                scorer=fuzz.token_sort_ratio,
                score_cutoff=self._threshold,
            )
            if best is not None:
                return Match(choices[best[2]][1], round(0.8 * best[1] / 100.0, 4), "fuzzy")
        return Match(None, None, "none")


async def load_matcher(session: AsyncSession, *, threshold: float) -> ModelMatcher:
    rows = (
        await session.execute(
            select(Model.id, Model.name, func.array_remove(func.array_agg(Deployment.upstream_name), None))
            .outerjoin(Deployment, Deployment.model_id == Model.id)
            .group_by(Model.id, Model.name)
        )
    ).all()
    return ModelMatcher(((r[0], r[1], r[2] or []) for r in rows), threshold=threshold)


async def upsert_rows(session: AsyncSession, rows: Sequence[BenchmarkRow], matcher: ModelMatcher) -> tuple[int, int]:
    """Upsert in the caller's transaction; returns (matched rows, rows inserted or changed)."""
    matched = changed = 0
    values = []
    for row in rows:
        m = matcher.match(row.raw_model)
        matched += m.model_id is not None
        values.append(
            {
                "source": row.source,
                "metric": row.metric,
                "raw_model": row.raw_model,
                "model_id": m.model_id,
                "raw_value": row.raw_value,
                "score": row.score,
                "match_confidence": m.confidence,
                "details": {**row.details, "match": m.how},
            }
        )
    for start in range(0, len(values), CHUNK):
        stmt = pg_insert(Benchmark).values(values[start : start + CHUNK])
        ex = stmt.excluded
        cols = ("model_id", "raw_value", "score", "match_confidence", "details")
        upsert = stmt.on_conflict_do_update(
            index_elements=[Benchmark.source, Benchmark.metric, Benchmark.raw_model],
            set_={**{c: ex[c] for c in cols}, "updated_at": func.now()},
            where=tuple_(*(Benchmark.__table__.c[c] for c in cols)).is_distinct_from(tuple_(*(ex[c] for c in cols))),
        ).returning(Benchmark.id)
        changed += len((await session.execute(upsert)).all())
    return matched, changed
