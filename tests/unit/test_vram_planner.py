"""The VRAM planner: needs, budgets, the decision ladder, and properties that hold for any
fleet (never over budget by its own orders, never unloads a pinned or busy model)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from turnout.common.schemas.fleet import GpuStateV1, HostStateV1, LoadedModelV1
from turnout.common.schemas.vram import OrderAction
from turnout.scorer.vram import (
    Decision,
    DecisionKind,
    GiB,
    HostVram,
    Option,
    PlannedOrder,
    ResidentModel,
    VramConfig,
    VramOptions,
    apply_orders,
    bits_per_weight,
    estimate_vram_bytes,
    host_vram,
    measured_sizes,
    model_need,
    plan,
)
from turnout.scorer.vram_reply import attempt_order

CFG = VramConfig(score_margin=0.1)


def host(
    name: str, budget_gb: float, *resident: ResidentModel, free_gb: float | None = None, pinned: tuple[str, ...] = ()
) -> HostVram:
    return HostVram(
        host=name,
        budget_bytes=int(budget_gb * GiB),
        gpu_free_bytes=None if free_gb is None else int(free_gb * GiB),
        resident=resident,
        pinned=frozenset(pinned),
    )


def rm(name: str, gb: float, last_used: float = 0.0, busy: bool = False) -> ResidentModel:
    return ResidentModel(name, int(gb * GiB), last_used, busy)


def opt(model: str, host: str | None, score: float, gb: float) -> Option:
    return Option(model, host, score, int(gb * GiB))


# --- needs ----------------------------------------------------------------------------------


def test_bits_per_weight_by_quantisation() -> None:
    assert [bits_per_weight(q) for q in ("q4_K_M", "Q8_0", "f16", None, "q4_K_XL", "weird")] == [
        4.85, 8.5, 16.0, 4.85, 4.85, 4.85,
    ]  # fmt: skip


def test_estimate_counts_weights_kv_and_overhead() -> None:
    size = estimate_vram_bytes(8.0, "q4_K_M", context_tokens=4096, overhead_bytes=512 * 1024**2)
    assert size == int(8e9 * 4.85 / 8 + (48 + 32) * 1024 * 4096 + 512 * 1024**2)
    assert 5.3 * GiB < size < 5.4 * GiB


def test_moe_memory_follows_total_parameters() -> None:
    need, source = model_need("qwen3:30b-a3b", CFG)
    dense3b, _ = model_need("qwen2.5:3b", CFG)
    assert source == "estimate"
    assert need > 5 * dense3b
    assert need == estimate_vram_bytes(30.0, None, context_tokens=4096, overhead_bytes=512 * 1024**2)


def test_measured_beats_profile_beats_estimate() -> None:
    assert model_need("llama3.1:8b", CFG, measured={"llama3.1:8b": 6 * GiB}, catalog_bytes=7 * GiB) == (
        6 * GiB,
        "measured",
    )
    # a catalog size may be the size on disk: the KV and overhead allowances are added
    assert model_need("llama3.1:8b", CFG, catalog_bytes=7 * GiB) == (
        7 * GiB + (48 + 32) * 1024 * 4096 + 512 * 1024**2,
        "catalog",
    )
    assert model_need("llama3.1:8b-instruct-q8_0", CFG)[0] > model_need("llama3.1:8b", CFG)[0]


def test_measured_sizes_take_the_largest_of_size_and_size_vram_across_hosts() -> None:
    states = [
        HostStateV1(host="a", loaded_models=[LoadedModelV1(name="m", size_bytes=5 * GiB, vram_bytes=4 * GiB)]),
        HostStateV1(host="b", loaded_models=[LoadedModelV1(name="m", size_bytes=6 * GiB, vram_bytes=6 * GiB)]),
    ]
    assert measured_sizes(states) == {"m": 6 * GiB}


# --- hosts ----------------------------------------------------------------------------------


def test_host_budget_defaults_to_90_percent_and_can_be_set_per_host() -> None:
    state = HostStateV1(
        host="gpu1",
        gpus=[GpuStateV1(index=0, memory_total_bytes=80 * GiB, memory_free_bytes=70 * GiB)],
        loaded_models=[LoadedModelV1(name="a", size_bytes=9 * GiB, vram_bytes=9 * GiB)],
    )
    h = host_vram(state, VramConfig(pinned={"*": frozenset({"a"})}), last_used={"a": 5.0}, busy=["a"])
    assert h == HostVram(
        "gpu1", int(72 * GiB), 70 * GiB, (ResidentModel("a", 9 * GiB, 5.0, True),), frozenset({"a"}), max_models=3
    )
    cfg = VramConfig.from_options(VramOptions(max_total_gb={"gpu1": 40}))
    assert host_vram(state, cfg).budget_bytes == 40 * GiB  # type: ignore[union-attr]


def test_a_host_without_gpu_memory_is_unmanaged() -> None:
    assert host_vram(HostStateV1(host="cpu"), CFG) is None
    h = host_vram(HostStateV1(host="mac"), VramConfig(max_total_bytes={"mac": 32 * GiB}))
    assert h is not None and (h.budget_bytes, h.gpu_free_bytes) == (32 * GiB, None)


def test_available_is_the_smaller_of_budget_room_and_gpu_free() -> None:
    h = host("a", 20, rm("x", 8), free_gb=5)  # another process holds memory: only 5 GiB really free
    assert h.available_bytes == 5 * GiB
    assert host("a", 20, rm("x", 8)).available_bytes == 12 * GiB


# --- decisions ------------------------------------------------------------------------------


def test_resident_best_candidate_is_routed_without_orders() -> None:
    hosts = {"a": host("a", 20, rm("big", 15))}
    assert plan([opt("big", "a", 1.0, 15)], hosts, CFG) == Decision(0, DecisionKind.RESIDENT, "big is loaded on a")


def test_best_candidate_that_fits_is_routed_and_the_backend_loads_it() -> None:
    d = plan([opt("new", "a", 1.0, 4)], {"a": host("a", 20, rm("x", 8))}, CFG)
    assert d is not None and (d.kind, d.choice, d.orders) == (DecisionKind.FITS, 0, ())


def test_a_resident_candidate_within_the_margin_wins_over_unloading() -> None:
    hosts = {"a": host("a", 20, rm("ok", 12, last_used=1.0))}
    options = [opt("best", "a", 1.0, 12), opt("other", "a", 0.95, 4), opt("ok", "a", 0.91, 12)]
    d = plan(options, hosts, CFG)
    assert d is not None
    assert (d.kind, d.choice, d.orders) == (DecisionKind.RESIDENT_WITHIN_MARGIN, 2, ())
    assert "ok is loaded on a and scores within 0.1 (0.910 vs 1.000)" in d.reason


def test_outside_the_margin_the_lru_idle_unpinned_models_are_unloaded() -> None:
    hosts = {
        "a": host(
            "a", 26,
            rm("pinned", 6, last_used=1.0), rm("busy", 6, last_used=2.0, busy=True),
            rm("old", 4, last_used=3.0), rm("older", 4, last_used=0.5), rm("recent", 4, last_used=9.0),
            pinned=("pinned",),
        )
    }  # fmt: skip
    options = [opt("best", "a", 1.0, 10), opt("recent", "a", 0.5, 4)]
    d = plan(options, hosts, CFG)
    assert d is not None and (d.kind, d.choice) == (DecisionKind.EVICT, 0)
    assert [(o.action, o.model) for o in d.orders] == [
        (OrderAction.UNLOAD, "older"),
        (OrderAction.UNLOAD, "old"),
        (OrderAction.LOAD, "best"),
    ]
    after = apply_orders(hosts, d.orders)["a"]
    assert after.used_bytes == after.budget_bytes == 26 * GiB  # pinned 6 + busy 6 + recent 4 + best 10


def test_when_nothing_can_be_unloaded_a_lower_candidate_that_fits_is_chosen() -> None:
    hosts = {
        "a": host("a", 16, rm("p", 10), pinned=("p",)),
        "b": host("b", 16),
    }
    d = plan([opt("big", "a", 1.0, 12), opt("big", "b", 0.6, 12)], hosts, CFG)
    assert d is not None and (d.kind, d.choice, d.orders) == (DecisionKind.FALLBACK, 1, ())
    assert d.reason.startswith("big cannot fit on a: big needs 12.0 GiB, b has 16.0 GiB free")


def test_a_model_larger_than_any_budget_gets_no_orders() -> None:
    d = plan([opt("huge", "a", 1.0, 100)], {"a": host("a", 16, rm("x", 4))}, CFG)
    assert d == Decision(0, DecisionKind.NO_ROOM, "huge cannot fit on a and nothing can be unloaded")


def test_unknown_host_is_unmanaged() -> None:
    d = plan([opt("m", "nowhere", 1.0, 4), opt("m", None, 0.9, 4)], {}, CFG)
    assert d is not None and (d.kind, d.choice) == (DecisionKind.UNMANAGED, 0)
    assert plan([], {}, CFG) is None


def test_physical_free_memory_limits_eviction_too() -> None:
    # budget room would allow it, but another process holds 10 GiB: unloading must cover that
    hosts = {"a": host("a", 40, rm("x", 8, 1.0), rm("y", 8, 2.0), free_gb=6)}
    d = plan([opt("best", "a", 1.0, 12)], hosts, CFG)
    assert d is not None and [o.model for o in d.orders] == ["x", "best"]


# --- model count, load time ---------------------------------------------------------------


def test_a_host_at_its_model_limit_unloads_one_even_with_bytes_to_spare() -> None:
    full = HostVram("h", 72 * GiB, None, (rm("a", 4, 1.0), rm("b", 4, 3.0), rm("c", 4, 2.0, busy=True)), max_models=3)
    d = plan([opt("x", "h", 1.0, 4)], {"h": full}, CFG)
    assert d is not None and d.kind is DecisionKind.EVICT
    assert [(o.action, o.model) for o in d.orders] == [(OrderAction.UNLOAD, "a"), (OrderAction.LOAD, "x")]
    roomy = HostVram("h", 72 * GiB, None, full.resident[:2], max_models=3)
    assert plan([opt("x", "h", 1.0, 4)], {"h": roomy}, CFG) == Decision(
        0, DecisionKind.FITS, "x needs 4.0 GiB, h has 64.0 GiB free"
    )


def test_a_slow_load_is_ordered_while_a_resident_model_within_the_margin_serves() -> None:
    cfg = VramConfig(score_margin=0.1, load_gib_per_s=2.0, load_fixed_s=1.0, max_load_wait_s=8.0)
    hosts = {"big": host("big", 72), "small": host("small", 20, rm("mid", 10))}
    d = plan([opt("huge", "big", 1.0, 40), opt("mid", "small", 0.95, 10)], hosts, cfg)
    assert d is not None and d.kind is DecisionKind.PRELOAD and d.choice == 1
    assert [(o.action, o.host, o.model) for o in d.orders] == [(OrderAction.LOAD, "big", "huge")]
    # nothing resident close enough: the request goes to the slow model, whose load is an order
    d = plan([opt("huge", "big", 1.0, 40), opt("mid", "small", 0.8, 10)], hosts, cfg)
    assert d is not None and d.kind is DecisionKind.FITS and d.choice == 0
    assert [(o.action, o.model) for o in d.orders] == [(OrderAction.LOAD, "huge")]
    # a quick load is left to the backend, as before
    d = plan([opt("small-one", "big", 1.0, 10), opt("mid", "small", 0.95, 10)], hosts, cfg)
    assert d is not None and d.kind is DecisionKind.FITS and d.choice == 0 and not d.orders


def test_a_slow_load_under_way_is_not_waited_on_when_a_loaded_model_is_close() -> None:
    cfg = VramConfig(score_margin=0.1, load_gib_per_s=2.0, load_fixed_s=1.0, max_load_wait_s=8.0)
    loading = ResidentModel("huge", 40 * GiB, busy=True, loading=True)
    hosts = {"big": host("big", 72, loading), "small": host("small", 20, rm("mid", 10))}
    d = plan([opt("huge", "big", 1.0, 40), opt("mid", "small", 0.95, 10)], hosts, cfg)
    assert d is not None and d.kind is DecisionKind.RESIDENT_WITHIN_MARGIN and d.choice == 1 and not d.orders
    # nothing close: wait for it (no second load ordered)
    d = plan([opt("huge", "big", 1.0, 40), opt("mid", "small", 0.5, 10)], hosts, cfg)
    assert d == Decision(0, DecisionKind.RESIDENT, "huge is loaded on big")


def test_the_gateway_tries_loaded_fallbacks_before_ones_that_need_a_load() -> None:
    hosts = {"a": host("a", 40, rm("m2", 4), rm("m4", 4)), "b": host("b", 40)}
    options = [opt(f"m{i}", "a" if i % 2 == 0 else "b", 1.0 - i / 10, 4) for i in range(5)]
    assert attempt_order(options, hosts, 1) == [1, 2, 4, 0, 3]
    assert attempt_order(options, hosts, 0) == [0, 2, 4, 1, 3]


# --- properties -----------------------------------------------------------------------------

names = st.sampled_from([f"m{i}" for i in range(8)])


@st.composite
def fleets(draw: st.DrawFn) -> tuple[dict[str, HostVram], list[Option], VramConfig]:
    hosts: dict[str, HostVram] = {}
    for hname in ("h1", "h2"):
        budget = draw(st.integers(4, 64)) * GiB
        resident: list[ResidentModel] = []
        used = 0
        for n in draw(st.lists(names, unique=True, max_size=5)):
            size = draw(st.integers(1, 16)) * GiB
            if used + size > budget:
                continue  # agents may report more than the budget, but start within it here
            used += size
            resident.append(ResidentModel(n, size, draw(st.floats(0, 100)), draw(st.booleans())))
        pinned = frozenset(draw(st.lists(names, max_size=3)))
        free = draw(st.one_of(st.none(), st.integers(0, 64).map(lambda g: g * GiB)))
        hosts[hname] = HostVram(hname, budget, free, tuple(resident), pinned)
    options = draw(
        st.lists(
            st.builds(
                Option,
                model=names,
                host=st.sampled_from(["h1", "h2"]),
                score=st.floats(0, 2),
                need_bytes=st.integers(1, 70).map(lambda g: g * GiB),
            ),
            min_size=1,
            max_size=6,
        )
    )
    options.sort(key=lambda o: -o.score)
    return hosts, options, VramConfig(score_margin=draw(st.floats(0, 0.5)))


def _unloads(d: Decision) -> list[PlannedOrder]:
    return [o for o in d.orders if o.action is OrderAction.UNLOAD]


@settings(max_examples=400, deadline=None)
@given(fleets())
def test_orders_never_take_a_host_over_its_budget_or_its_free_memory(
    case: tuple[dict[str, HostVram], list[Option], VramConfig],
) -> None:
    hosts, options, cfg = case
    d = plan(options, hosts, cfg)
    assert d is not None and 0 <= d.choice < len(options)
    after = apply_orders(hosts, d.orders)
    for name, h in after.items():
        if any(o.host == name and o.action is OrderAction.LOAD for o in d.orders):
            assert h.used_bytes <= h.budget_bytes
            assert h.gpu_free_bytes is None or h.gpu_free_bytes >= 0
    if d.kind is DecisionKind.FITS or d.kind is DecisionKind.FALLBACK and not d.orders:
        chosen = options[d.choice]
        h = hosts[chosen.host]  # type: ignore[index]
        assert h.holds(chosen.model) or chosen.need_bytes <= h.available_bytes


@settings(max_examples=400, deadline=None)
@given(fleets())
def test_pinned_and_busy_models_are_never_unloaded(case: tuple[dict[str, HostVram], list[Option], VramConfig]) -> None:
    hosts, options, cfg = case
    d = plan(options, hosts, cfg)
    assert d is not None
    for o in _unloads(d):
        h = hosts[o.host]
        (m,) = [m for m in h.resident if m.name == o.model]
        assert o.model not in h.pinned
        assert not m.busy
        # and only ever on the host of the model being loaded: the chosen one, or the best one
        # that a preload decision loads while a resident candidate serves
        loaded = options[0] if d.kind is DecisionKind.PRELOAD else options[d.choice]
        assert o.host == loaded.host
    if d.orders:
        loaded = options[0] if d.kind is DecisionKind.PRELOAD else options[d.choice]
        assert d.orders[-1].action is OrderAction.LOAD
        assert d.orders[-1].model == loaded.model


@settings(max_examples=300, deadline=None)
@given(fleets())
def test_a_resident_best_candidate_is_always_kept(case: tuple[dict[str, HostVram], list[Option], VramConfig]) -> None:
    hosts, options, cfg = case
    best = options[0]
    if best.host is not None and hosts[best.host].holds(best.model):
        d = plan(options, hosts, cfg)
        assert d is not None and (d.choice, d.kind, d.orders) == (0, DecisionKind.RESIDENT, ())


def test_pending_loads_count_as_taken_and_cannot_be_evicted() -> None:
    state = HostStateV1(
        host="a",
        gpus=[GpuStateV1(index=0, memory_total_bytes=20 * GiB, memory_free_bytes=12 * GiB)],
        loaded_models=[LoadedModelV1(name="x", size_bytes=8 * GiB, vram_bytes=8 * GiB)],
    )
    h = host_vram(state, VramConfig(budget_fraction=1.0), pending={"y": 6 * GiB, "x": 8 * GiB})
    assert h is not None
    assert [(m.name, m.busy) for m in h.resident] == [("x", False), ("y", True)]
    assert (h.used_bytes, h.gpu_free_bytes, h.available_bytes) == (14 * GiB, 6 * GiB, 6 * GiB)
    assert [m.name for m in h.evictable()] == ["x"]


def test_a_load_of_an_embedding_model_says_so_in_its_order() -> None:
    """The agent loads an embedding model through the embeddings endpoint (Ollama refuses
    /api/generate for one), so the planner's load order carries the flag from the option."""
    hosts = {"h": host("h", 8, rm("llava:7b", 6.5))}  # 2 GiB does not fit beside llava: evict, then load
    decision = plan([Option("nomic-embed-text:latest", "h", 1.0, 2 * GiB, embedding=True)], hosts, CFG)
    assert decision is not None
    assert [(o.action.value, o.model, o.embedding) for o in decision.orders] == [
        ("unload", "llava:7b", False),
        ("load", "nomic-embed-text:latest", True),
    ]


def test_a_loaded_replica_with_too_many_requests_ahead_gives_way_to_a_loaded_one_with_room() -> None:
    cfg = VramConfig(score_margin=0.1, admit_wait_s=5.0)
    hosts = {"big": host("big", 72, rm("huge", 40, busy=True)), "a": host("a", 20, rm("mid", 10)), "b": host("b", 20)}
    busy_huge = Option("huge", "big", 1.0, 40 * GiB, wait_s=12.0)
    options = [busy_huge, Option("mid", "b", 0.7, 10 * GiB), Option("mid", "a", 0.7, 10 * GiB, wait_s=2.0)]
    d = plan(options, hosts, cfg)  # a loaded one, never one that must load behind the busy host's queue
    assert d == Decision(
        2, DecisionKind.BUSY, "huge on big has ~12 s of requests ahead (> 5 s); mid is loaded on a with ~2 s"
    )
    assert plan(options, hosts, replace(cfg, admit_wait_s=0.0)) == Decision(
        0, DecisionKind.RESIDENT, "huge is loaded on big"
    )
    # no loaded candidate within the limit: as decided
    crowded = [busy_huge, replace(options[2], wait_s=6.0)]
    assert plan(crowded, hosts, cfg) == Decision(0, DecisionKind.RESIDENT, "huge is loaded on big")


def test_a_load_still_waiting_for_its_room_is_never_routed_to_but_its_bytes_count() -> None:
    """Unloads for ``big`` are under way: the backend has no room for it yet (a request sent there
    now fails out of memory), so a concurrent decision passes it by — a resident model within the
    margin, else the first candidate that needs no orders — and no plan takes its bytes."""
    waiting = ResidentModel("big", 10 * GiB, busy=True, loading=True, awaiting_room=True)
    hosts = {"a": host("a", 14, rm("small", 3, busy=True), waiting), "b": host("b", 12, rm("mid", 6))}
    d = plan([opt("big", "a", 1.0, 10), opt("mid", "b", 0.95, 6)], hosts, CFG)
    assert d == Decision(
        1,
        DecisionKind.RESIDENT_WITHIN_MARGIN,
        "big waits for unloads on a; mid is loaded on b and scores within 0.1 (0.950 vs 1.000)",
    )
    d = plan([opt("big", "a", 1.0, 10), opt("coder", "b", 0.5, 5)], hosts, CFG)
    assert d == Decision(
        1, DecisionKind.FALLBACK, "big waits for unloads on a: coder needs 5.0 GiB, b has 6.0 GiB free"
    )
    assert plan([opt("coder", "a", 1.0, 2)], hosts, CFG) == Decision(
        0, DecisionKind.NO_ROOM, "coder cannot fit on a and nothing can be unloaded"
    )
    assert plan([opt("big", "a", 1.0, 10)], hosts, CFG) == Decision(
        0, DecisionKind.NO_ROOM, "big waits for unloads on a and no other candidate can take the request now"
    )
    # once its room is made (a load under way), requests go to it as before
    ready = {
        **hosts,
        "a": replace(hosts["a"], resident=(rm("small", 3, busy=True), replace(waiting, awaiting_room=False))),
    }
    assert plan([opt("big", "a", 1.0, 10), opt("coder", "b", 0.5, 5)], ready, CFG) == Decision(
        0, DecisionKind.RESIDENT, "big is loaded on a"
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.builds(
            ResidentModel,
            name=names,
            bytes=st.integers(0, 16).map(lambda g: g * GiB),
            loading=st.booleans(),
            awaiting_room=st.booleans(),
        ),
        max_size=6,
    ),
    st.lists(names, max_size=4),
)
def test_a_hosts_answers_worked_out_once_are_those_of_a_scan_of_its_models(
    resident: list[ResidentModel], asked: list[str]
) -> None:
    """``HostVram`` works out bytes used and which models are loaded, serving or waiting for room
    when it is built (also by ``replace``, as the planner's overlays build it): the answers a scan
    of ``resident`` gives, duplicates included."""
    h = HostVram("h", 64 * GiB, None, tuple(resident))
    for v in (h, replace(h, resident=h.resident[1:]), replace(h, resident=(*h.resident, *h.resident[:1]))):
        assert v.used_bytes == sum(m.bytes for m in v.resident)
        for n in {*asked, *(m.name for m in v.resident)}:
            assert v.holds(n) == any(m.name == n for m in v.resident)
            assert v.serves(n) == any(m.name == n and not m.loading for m in v.resident)
            assert v.awaits_room(n) == any(m.name == n and m.awaiting_room for m in v.resident)
