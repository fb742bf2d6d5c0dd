"""Per-attempt read bounds come from the model's profile and are built once per shape of request."""

from __future__ import annotations

from turnout.common.schemas.catalog import CatalogModelV1
from turnout.gateway.upstream_limits import ReadBounds, TimeoutCache


def _model(**kw: float) -> CatalogModelV1:
    return CatalogModelV1.model_validate({"name": "m", **kw})


def test_whole_replies_are_bounded_by_their_max_tokens_and_reused() -> None:
    cache = TimeoutCache(ReadBounds(read_min_s=1.0, read_max_s=600.0), connect_s=3.0)
    cache.use_catalog({"m": _model(ttft_ms=100.0, tokens_per_s=50.0)})
    short = cache.get("m", stream=False, max_tokens=16, connect_cap_s=5.0, read_cap_s=600.0)
    long = cache.get("m", stream=False, max_tokens=4000, connect_cap_s=5.0, read_cap_s=600.0)
    assert short.sock_read is not None and long.sock_read is not None
    assert short.sock_read < long.sock_read  # 1 s + 50 × 16 / 50 vs. the 600 s cap
    assert short.sock_connect == 3.0
    assert cache.get("m", stream=False, max_tokens=16, connect_cap_s=5.0, read_cap_s=600.0) is short
    # a stream's bound ignores max_tokens: one object for every length
    s1 = cache.get("m", stream=True, max_tokens=16, connect_cap_s=5.0, read_cap_s=600.0)
    assert cache.get("m", stream=True, max_tokens=4000, connect_cap_s=5.0, read_cap_s=600.0) is s1


def test_a_new_catalog_or_a_full_cache_starts_over() -> None:
    cache = TimeoutCache(ReadBounds(read_min_s=1.0, read_max_s=600.0), connect_s=3.0, max_entries=2)
    cache.use_catalog({"m": _model(ttft_ms=100.0, tokens_per_s=50.0)})
    first = cache.get("m", stream=False, max_tokens=16, connect_cap_s=5.0, read_cap_s=600.0)
    cache.get("m", stream=False, max_tokens=32, connect_cap_s=5.0, read_cap_s=600.0)
    cache.get("m", stream=False, max_tokens=64, connect_cap_s=5.0, read_cap_s=600.0)  # over the bound
    again = cache.get("m", stream=False, max_tokens=16, connect_cap_s=5.0, read_cap_s=600.0)
    assert again is not first and again.sock_read == first.sock_read
    cache.use_catalog({"m": _model(ttft_ms=100.0, tokens_per_s=5.0)})  # slower now: a longer bound
    slower = cache.get("m", stream=False, max_tokens=16, connect_cap_s=5.0, read_cap_s=600.0)
    assert slower.sock_read is not None and first.sock_read is not None and slower.sock_read > first.sock_read
