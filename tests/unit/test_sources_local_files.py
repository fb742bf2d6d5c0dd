"""Local benchmark files (CSV and JSON) for air-gapped sites."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from turnout.sync.sources import LocalFilesOptions, LocalFilesSource, SourceError, SourceFormatError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sources"


async def fetch(*paths: Path) -> object:
    return await LocalFilesSource(LocalFilesOptions(paths=paths)).fetch()


async def test_csv_and_json_files_in_a_directory(tmp_path: Path) -> None:
    for name in ("local_scores.csv", "local_scores.json"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    (tmp_path / "README.txt").write_text("ignored")
    run = await LocalFilesSource(LocalFilesOptions(paths=(tmp_path,))).fetch()
    by = {(r.raw_model, r.metric): r for r in run.rows}
    assert run.source == "local" and run.pages == 2
    qa = by[("llama3.1:8b", "internal_qa")]
    assert (qa.raw_value, qa.score) == (71.5, 0.715)  # "71.5%" on a 0-100 scale
    assert qa.details == {"file": "local_scores.csv", "notes": "from the March eval"}
    latency = by[("qwen2.5:7b", "latency_p50_ms")]
    assert latency.kind == "speed" and latency.score == pytest.approx(1 - 1200 / 2000)
    he = by[("Qwen/Qwen2.5-7B-Instruct", "humaneval_plus")]
    assert he.score == 0.74  # every value of the metric is <= 1: a 0-1 scale
    odd = by[("Qwen/Qwen2.5-7B-Instruct", "odd_scale")]
    assert odd.score == pytest.approx(6 / 9)
    swapped = by[("Qwen/Qwen2.5-7B-Instruct", "bad_scale")]  # min 10, max 1: lower is better
    assert swapped.score == pytest.approx(3 / 9)
    assert run.skipped == 3  # "lots", no model, a non-object row
    assert len(run.skip_reasons) == 3


async def test_a_csv_without_the_required_columns_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("name,score\nx,1\n")
    with pytest.raises(SourceFormatError, match="model, metric and value"):
        await LocalFilesSource(LocalFilesOptions(paths=(bad,))).fetch()


async def test_broken_json_and_missing_files_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(SourceFormatError):
        await LocalFilesSource(LocalFilesOptions(paths=(bad,))).fetch()
    with pytest.raises(SourceError, match="does not exist"):
        await LocalFilesSource(LocalFilesOptions(paths=(tmp_path / "missing.csv",))).fetch()


def test_the_source_name_is_configurable() -> None:
    assert LocalFilesSource(LocalFilesOptions(source_name="lab-evals")).name == "lab-evals"
