"""The profiler's prefill speed: the rate read from the long prompt and the suite's, and the long prompt."""

from __future__ import annotations

import pytest

from turnout.profiler.chat import PrefillSample
from turnout.profiler.prefill import prefill_probe_text, prefill_rate


def test_the_rate_is_the_slope_between_the_short_prompts_and_the_long_one() -> None:
    # 50 ms of fixed cost on every call and 2,000 tokens/s: 40 tokens in 70 ms, 1,040 in 570 ms
    short = [
        PrefillSample(40, 0.07, "backend"),
        PrefillSample(30, 0.065, "backend"),
        PrefillSample(50, 0.075, "backend"),
    ]
    assert prefill_rate(short, PrefillSample(1040, 0.57, "backend")) == (pytest.approx(2000.0), "backend")
    # client timing pairs with client timing only
    timed = [PrefillSample(40, 0.08, "timing")]
    assert prefill_rate([*short, *timed], PrefillSample(1040, 0.58, "timing")) == (pytest.approx(2000.0), "timing")


def test_prefill_rate_without_a_usable_pair() -> None:
    short = [PrefillSample(40, 0.07, "backend"), PrefillSample(60, 0.08, "backend")]
    # a long probe counted by the backend but no short one of its kind: its own counter rate
    assert prefill_rate([], PrefillSample(1000, 0.5, "backend")) == (2000.0, "backend")
    # timed by the client with nothing to pair: fall back to the suite's counters (60 + 40 in 0.15 s)
    rate = prefill_rate(short, PrefillSample(1000, 0.5, "timing"))
    assert rate is not None and rate[1] == "backend" and rate[0] == pytest.approx(100 / 0.15)
    # a "long" prompt no longer than the suite's (a prompt cache served it): not a slope
    assert prefill_rate(short, PrefillSample(60, 0.02, "backend")) == (3000.0, "backend")
    assert prefill_rate([PrefillSample(40, 0.07, "timing")], None) is None


def test_the_prefill_probe_text_is_about_as_long_as_asked_and_starts_with_the_nonce() -> None:
    text = prefill_probe_text(1024, "f00d")
    assert text.startswith("Reference f00d.")
    assert 1000 <= len(text) // 4 <= 1100
    assert prefill_probe_text(1024, "f00d") == text
    assert 4000 <= len(prefill_probe_text(4096, "x")) // 4 <= 4200
