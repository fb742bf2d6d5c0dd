"""When a model is due for profiling: new, changed digest or size, a stale failure, or forced."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from turnout.profiler.profiling import ProfilingOptions, _due_reason

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
OK = ({"status": "ok", "digest": "sha256:aaa", "size_bytes": 4_000}, NOW - timedelta(days=3))


def due(last: object, digest: str | None = "sha256:aaa", size: int | None = 4_000, force: bool = False) -> str | None:
    return _due_reason(last, digest, size, NOW, 3600, force)  # type: ignore[arg-type]


def test_a_new_model_is_due() -> None:
    assert due(None) == "new"


def test_a_model_profiled_with_the_current_suite_is_not_due_unless_forced() -> None:
    assert due(OK) is None
    assert due(OK, force=True) == "forced"


def test_a_changed_digest_or_size_makes_it_due() -> None:
    assert due(OK, digest="sha256:bbb") == "digest changed"
    assert due(OK, size=5_000) == "size changed"
    assert due(OK, digest=None, size=None) is None  # a backend that reports neither


def test_a_failed_profile_is_retried_after_a_while() -> None:
    recent = ({"status": "failed"}, NOW - timedelta(minutes=10))
    old = ({"status": "failed"}, NOW - timedelta(hours=2))
    assert due(recent) is None
    assert due(old) == "last profile failed"


def test_options_select_categories_of_the_suite() -> None:
    suite = ProfilingOptions(categories=("math",)).suite()
    assert {p.category for p in suite.prompts} == {"math"}
    assert ProfilingOptions().suite().suite_version == suite.suite_version
