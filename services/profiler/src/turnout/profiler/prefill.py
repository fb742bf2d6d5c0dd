"""Prefill speed (prompt tokens processed per second) from a profiling run: the long prompt the
runner sends after the suite (:func:`prefill_probe_text`) and the rate read from it against the
suite's short prompts (:func:`prefill_rate`). Each call's tokens and seconds come from
:attr:`turnout.profiler.chat.ChatResult.prefill_sample`: the backend's counters where it gives
them, else client timing.
"""

from __future__ import annotations

import statistics

from turnout.profiler.chat import PrefillSample


def prefill_rate(short: list[PrefillSample], long: PrefillSample | None) -> tuple[float, str] | None:
    """Prompt tokens per second, and how they were measured, from the suite's short prompts and
    the long probe: the slope between the two, ``(long tokens − median short tokens) / (long
    seconds − median short seconds)`` over the samples of the long one's source, so that what
    every call costs whatever its length (the request's round trip, scheduling, the first
    sampling step) cancels out — which also lets client timing stand in for counters. A long
    probe the backend counted but with no short samples to pair: its own counter rate (fixed
    costs included: a lower bound). No long probe: the suite's counters over all prompts (short
    prompts: a lower bound too), or ``None`` on client timing alone."""
    if long is not None:
        same = [s for s in short if s.source == long.source]
        if same:
            n_s = statistics.median(s.tokens for s in same)
            t_s = statistics.median(s.seconds for s in same)
            if long.tokens >= 2 * n_s and long.seconds > t_s:
                return (long.tokens - n_s) / (long.seconds - t_s), long.source
        if long.source == "backend":
            return long.tokens / long.seconds, "backend"
    counted = [s for s in short if s.source == "backend"]
    if counted:
        return sum(s.tokens for s in counted) / sum(s.seconds for s in counted), "backend"
    return None


_RECORD = (
    "Record {i}: the courier left depot {a} at {h}:{m:02d} with {n} parcels for the {d} district and "
    "handed {k} of them over before noon."
)


def prefill_probe_text(tokens: int, nonce: str) -> str:
    """A prompt of about ``tokens`` tokens (≈ 4 characters each): ``nonce`` first, so no prompt
    (prefix) cache holds it, then numbered records, then a question with a one-line answer."""
    districts = ("north", "south", "harbour", "market", "river", "castle", "mill")
    lines = [f"Reference {nonce}. Read these delivery records."]
    i = 0
    while sum(len(line) + 1 for line in lines) < 4 * tokens - 80:
        i += 1
        lines.append(
            _RECORD.format(
                i=i, a=(7 * i) % 31, h=6 + i % 12, m=(13 * i) % 60, n=10 + (5 * i) % 40, d=districts[i % 7], k=3 + i % 9
            )
        )
    lines.append("How many records are there? Reply with the number only.")
    return "\n".join(lines)
