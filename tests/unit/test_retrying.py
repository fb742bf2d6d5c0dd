"""The shared retry wait: exponential back-off with jitter, or the server's Retry-After."""

from __future__ import annotations

import pytest
from tenacity import RetryCallState, Retrying

from turnout.common.retrying import backoff_or_retry_after, parse_retry_after


class _Throttled(Exception):
    def __init__(self, retry_after_s: float | None) -> None:
        super().__init__("429")
        self.retry_after_s = retry_after_s


def _state(attempt: int, exc: BaseException) -> RetryCallState:
    state = RetryCallState(Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    state.set_exception((type(exc), exc, None))
    return state


@pytest.mark.parametrize(("value", "seconds"), [("7", 7.0), ("0.5", 0.5), ("-3", 0.0), ("", None), (None, None)])
def test_retry_after_in_seconds(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


def test_an_http_date_retry_after_is_not_read() -> None:
    assert parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT") is None


def test_the_server_retry_after_is_honoured_up_to_the_ceiling() -> None:
    wait = backoff_or_retry_after(0.5, 8.0)
    assert wait(_state(1, _Throttled(3.0))) == 3.0
    assert wait(_state(1, _Throttled(60.0))) == 8.0


def test_without_retry_after_the_wait_doubles_with_up_to_initial_of_jitter_under_the_ceiling() -> None:
    wait = backoff_or_retry_after(0.5, 8.0)
    for attempt, low in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0)]:
        waits = [wait(_state(attempt, _Throttled(None))) for _ in range(200)]
        assert low <= min(waits) and max(waits) <= low + 0.5
        assert max(waits) - min(waits) > 0.1  # jittered: retries from several workers spread out
    assert {wait(_state(9, TimeoutError())) for _ in range(20)} == {8.0}
