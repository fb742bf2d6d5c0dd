"""The shared arq plumbing the sync and profiler workers use: JSON serialisation, schedules,
back-off, settings validation."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from turnout.common.arq import RetryPolicy, dumps, every, loads
from turnout.common.errors import ConfigError
from turnout.profiler.settings import ProfilerSettings
from turnout.sync.settings import SyncSettings


class Result(BaseModel):
    rows: int


def test_jobs_and_results_are_json_not_pickle():
    job = {"t": 1, "f": "import_benchmarks_file", "a": (), "k": {"path": None}, "et": 1}
    assert loads(dumps(job)) == {"t": 1, "f": "import_benchmarks_file", "a": [], "k": {"path": None}, "et": 1}
    assert loads(dumps({"r": Result(rows=3)})) == {"r": {"rows": 3}}
    assert loads(dumps({"r": FileNotFoundError("no such file")})) == {
        "r": {"error": "FileNotFoundError", "message": "no such file"}
    }
    assert dumps({"x": 1}).startswith(b"{")


@pytest.mark.parametrize(
    ("seconds", "fields"),
    [
        (15, {"second": {0, 15, 30, 45}}),
        (60, {"second": {0}}),
        (300, {"minute": set(range(0, 60, 5)), "second": {0}}),
        (21600, {"hour": {0, 6, 12, 18}, "minute": {0}, "second": {0}}),
        (86400, {"hour": {0}, "minute": {0}, "second": {0}}),
    ],
)
def test_intervals_become_cron_fields(seconds, fields):
    assert every(seconds) == fields


@pytest.mark.parametrize("seconds", [0, 7, 90, 7000, 50000])
def test_intervals_that_do_not_divide_the_clock_are_rejected(seconds):
    with pytest.raises(ValueError):
        every(seconds)


def test_a_bad_schedule_is_a_clear_startup_error():
    with pytest.raises(ConfigError, match="TURNOUT_PROFILER__DISCOVER_EVERY_S"):
        ProfilerSettings.load(profiler={"discover_every_s": 7})
    with pytest.raises(ConfigError, match="TURNOUT_SYNC__BENCHMARKS_EVERY_S"):
        SyncSettings.load(sync={"benchmarks_every_s": 100})
    assert ProfilerSettings.load(profiler={"discover_every_s": 300}).profiler.discover_every_s == 300


def test_back_off_doubles_up_to_the_cap():
    policy = RetryPolicy(max_tries=6, base_s=2, max_s=10)
    assert [policy.delay_s(n) for n in range(1, 6)] == [2, 4, 8, 10, 10]
