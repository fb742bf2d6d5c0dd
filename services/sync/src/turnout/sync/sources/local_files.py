"""Benchmark scores from local CSV or JSON files, for air-gapped sites (or private evaluations).

``paths`` lists files or directories (every ``*.csv`` / ``*.json`` inside, sorted). Columns
(CSV header) or keys (JSON objects):

==================  ========  =====================================================================
``model``           required  the public or local model name (matched like any other source)
``metric``          required  e.g. ``mmlu``, ``my_eval``
``value``           required  the published figure (a number; ``"71.3%"`` is read as 71.3)
``scale_min`` /     optional  the figure's scale (also ``min`` / ``max``, as in
``scale_max``                 ``docs/benchmarks-file.md``); default 0 and 1 when every value of that
                              metric in the file is at most 1, else 100; swapped (min > max) means
                              lower is better
``higher_is_better`` optional ``true`` (default) / ``false`` — lower-is-better figures are inverted
``kind``            optional  ``quality`` (default), ``speed``, ``price``, ``context``
anything else       optional  kept in ``details``
==================  ========  =====================================================================

JSON files hold a list of such objects, or ``{"rows": [...]}``; column names are
case-insensitive. Normalisation: ``score = (value - min) / (max - min)``, ``1 - score`` when
lower is better, clamped to 0..1. Rows are stored under source ``local`` (``source_name``). A
file that cannot be read fails the run (previous data stays); a malformed row is skipped and
counted. The one-file import (``sync.benchmarks_file``, the ``import_benchmarks_file`` job)
reads its file with this same source.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from turnout.sync.errors import SourceError, SourceFormatError
from turnout.sync.sources.base import SourceRun, as_float, clamp01

NAME = "local"
_RESERVED = {"model", "metric", "value", "min", "max", "scale_min", "scale_max", "higher_is_better", "kind"}


class LocalFilesOptions(BaseModel):
    """Operator-supplied CSV or JSON files of benchmark scores."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    paths: tuple[Path, ...] = Field(default=(), description="Files or directories of *.csv / *.json")
    source_name: str = Field(default=NAME, max_length=64)


def _files(paths: tuple[Path, ...]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in (".csv", ".json")))
        elif p.exists():
            out.append(p)
        else:
            raise SourceError(f"local benchmark file {p} does not exist")
    return out


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a CSV or JSON file (a list, or an object holding one)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc}") from exc
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SourceFormatError(f"{path}: not valid JSON: {exc}") from exc
        if isinstance(data, dict):
            data = data.get("rows")
        if not isinstance(data, list):
            raise SourceFormatError(f"{path}: expected a list of objects or {{'rows': [...]}}")
        return [_keys(r) if isinstance(r, dict) else {"_invalid": r} for r in data]
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or not {"model", "metric", "value"} <= {f.strip().lower() for f in reader.fieldnames}:
        raise SourceFormatError(f"{path}: the CSV header must have model, metric and value columns")
    return [_keys(row) for row in reader]


def _keys(row: dict[Any, Any]) -> dict[str, Any]:
    """Column names are case-insensitive (``Model``, ``METRIC``)."""
    return {str(k or "").strip().lower(): v for k, v in row.items()}


def _truthy(v: Any, default: bool = True) -> bool:
    if v is None or v == "":
        return default
    if isinstance(v, bool):
        return v
    return str(v).strip().lower() in ("1", "true", "yes", "y")


class LocalFilesSource:
    """Benchmark rows from local files."""

    def __init__(self, options: LocalFilesOptions) -> None:
        self.options = options
        self.name = options.source_name

    async def fetch(self, http: aiohttp.ClientSession | None = None) -> SourceRun:  # noqa: ARG002
        """One run over every configured file."""
        run = SourceRun(self.name)
        for path in _files(self.options.paths):
            records = read_records(path)
            run.pages += 1
            self._file(path, records, run)
        run.dedupe()
        return run

    def _file(self, path: Path, records: list[dict[str, Any]], run: SourceRun) -> None:
        max_by_metric: dict[str, float] = {}
        for r in records:
            v = as_float(r.get("value"))
            if v is not None and isinstance(r.get("metric"), str):
                max_by_metric[r["metric"]] = max(max_by_metric.get(r["metric"], v), v)
        for i, r in enumerate(records, start=1):
            where = f"{path.name}:{i}"
            model, metric, value = r.get("model"), r.get("metric"), as_float(r.get("value"))
            if not isinstance(model, str) or not model.strip() or not isinstance(metric, str) or not metric.strip():
                run.skip(f"{where}: model and metric are required")
                continue
            if value is None:
                run.skip(f"{where}: value {r.get('value')!r} is not a number")
                continue
            lo = as_float(r.get("scale_min", r.get("min")))
            hi = as_float(r.get("scale_max", r.get("max")))
            lo = 0.0 if lo is None else lo
            hi = (1.0 if max_by_metric.get(metric, value) <= 1.0 else 100.0) if hi is None else hi
            if hi == lo:
                run.skip(f"{where}: the scale is empty (min equals max)")
                continue
            score = (value - lo) / (hi - lo)  # a swapped scale (min > max) reads lower-is-better
            if not _truthy(r.get("higher_is_better")):
                score = 1.0 - score
            run.add(
                metric=metric.strip(),
                kind=str(r.get("kind") or "quality"),
                raw_model=model.strip(),
                raw_value=value,
                score=clamp01(score),
                details={
                    "file": path.name,
                    **{k: v for k, v in r.items() if k not in _RESERVED and v not in (None, "")},
                },
            )
