"""The gateway's read bounds with an expected load or queue: a candidate whose model must load
first, or whose replica has requests ahead of it (the scorer's ``load_s`` and ``wait_s``), waits
longer for its first byte, capped, and a resident idle one keeps its profiled bound."""

from __future__ import annotations

import pytest

from turnout.common.schemas.catalog import CatalogModelV1
from turnout.common.schemas.route import CandidateV1, RouteReplyV1
from turnout.gateway.upstream_limits import ReadBounds, TimeoutCache, expected_delay_s
from turnout.scorer.vram_reply import with_load_estimates

# first byte: clamp(10 x 0.2 s) = 2 s; gap: clamp(50 / 25 tok/s) = 2 s -> a stream's bound is 2 s
MODEL = CatalogModelV1(name="m", params_b=70, ttft_ms=200, tokens_per_s=25)
BOUNDS = ReadBounds(read_min_s=1.0, read_max_s=30.0, load_wait_max_s=20.0)


def test_a_resident_model_keeps_its_profiled_bound() -> None:
    assert BOUNDS.read_timeout_s(MODEL, stream=True) == pytest.approx(2.0)
    assert BOUNDS.read_timeout_s(MODEL, stream=True, load_s=None) == pytest.approx(2.0)
    assert BOUNDS.read_timeout_s(MODEL, stream=True, load_s=0.0) == pytest.approx(2.0)


def test_an_expected_load_is_added_capped_and_never_past_the_largest_bound() -> None:
    assert BOUNDS.read_timeout_s(MODEL, stream=True, load_s=16.0) == pytest.approx(18.0)
    assert BOUNDS.read_timeout_s(MODEL, stream=True, load_s=45.0) == pytest.approx(22.0)  # + at most 20 s
    # a whole reply: its own bound (first byte + generation) plus the load, within read_max_s
    whole = BOUNDS.read_timeout_s(MODEL, stream=False, max_tokens=10)
    assert whole == pytest.approx(2.0 + 50 * 10 / 25)
    assert BOUNDS.read_timeout_s(MODEL, stream=False, max_tokens=10, load_s=16.0) == pytest.approx(30.0)
    assert ReadBounds(load_wait_max_s=0.0).read_timeout_s(MODEL, stream=True, load_s=16.0) == pytest.approx(
        ReadBounds().read_timeout_s(MODEL, stream=True)
    )


def test_the_timeout_cache_gives_an_attempt_with_a_load_its_longer_bound() -> None:
    cache = TimeoutCache(BOUNDS, connect_s=3.0)
    cache.use_catalog({"m": MODEL})
    plain = cache.get("m", stream=True, max_tokens=None, connect_cap_s=3.0, read_cap_s=120.0)
    loading = cache.get("m", stream=True, max_tokens=None, connect_cap_s=3.0, read_cap_s=120.0, load_s=8.0)
    again = cache.get("m", stream=True, max_tokens=None, connect_cap_s=3.0, read_cap_s=120.0)
    assert (plain.sock_read, loading.sock_read, again.sock_read) == (pytest.approx(2.0), pytest.approx(10.0), 2.0)
    assert again is plain  # the cached bound of a resident model is not changed by a load
    # the backend's own read cap still bounds it
    capped = cache.get("m", stream=True, max_tokens=None, connect_cap_s=3.0, read_cap_s=5.0, load_s=8.0)
    assert capped.sock_read == pytest.approx(5.0)


def test_a_queue_the_scorer_expects_adds_to_the_bound_as_a_load_does() -> None:
    def cand(load_s: float | None, wait_s: float | None) -> CandidateV1:
        return CandidateV1(model="m", backend="b", upstream_model="m", load_s=load_s, wait_s=wait_s)

    assert expected_delay_s(cand(None, None)) is None
    assert expected_delay_s(cand(None, 6.5)) == 6.5  # loaded, 6.5 s of requests ahead of it
    assert expected_delay_s(cand(4.0, 6.5)) == 10.5
    # 2 s profiled + 6.5 s of queue; a load and a queue together stay within load_wait_max_s (20 s)
    assert BOUNDS.read_timeout_s(MODEL, stream=True, load_s=expected_delay_s(cand(None, 6.5))) == pytest.approx(8.5)
    assert BOUNDS.read_timeout_s(MODEL, stream=True, load_s=expected_delay_s(cand(16.0, 9.0))) == pytest.approx(22.0)


def test_the_scorer_annotates_each_candidate_with_its_expected_wait() -> None:
    reply = RouteReplyV1(
        candidates=[CandidateV1(model=m, backend="b", upstream_model=m) for m in ("busy", "idle", "cold")]
    )
    out = with_load_estimates(reply, [None, None, 12.0], [7.123, 0.0, 0.0])
    assert [(c.model, c.load_s, c.wait_s) for c in out.candidates] == [
        ("busy", None, 7.12),
        ("idle", None, None),
        ("cold", 12.0, None),
    ]
    assert with_load_estimates(reply, [None, None, None], [0.0, 0.0, 0.0]) is reply
