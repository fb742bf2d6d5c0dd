"""The scorer's noted decisions (``scorer/notes.py``): expiry by their time, absorption by a read
taken ``lag_s`` after them, and the live counts per replica that both keep."""

from __future__ import annotations

import numpy as np

from turnout.scorer.notes import Notes

A, B = ("a", "m"), ("b", "m")


def test_notes_expire_soonest_first_and_keep_their_counts() -> None:
    n = Notes()
    n.add(A, at=0.0, until=0.3)
    n.add(B, at=0.0, until=0.1)
    n.add(A, at=0.1, until=0.2)
    assert (len(n), n.count, n.next_expiry()) == (3, {A: 2, B: 1}, 0.1)
    assert n.expire(0.05) == []
    assert n.expire(0.2) == [B, A]  # soonest first, both at their time (until <= now)
    assert (n.count, n.next_expiry(), n.live(0.25)) == ({A: 1}, 0.3, 1)
    assert n.expire(1.0) == [A]
    assert (len(n), n.count, n.next_expiry(), n.live(1.0)) == (0, {}, float("inf"), 0)


def test_a_read_holds_the_notes_lag_old_and_drops_those_over() -> None:
    n = Notes()
    n.add(A, at=0.0, until=5.0)  # 0.4 s before the read: the read holds it
    n.add(A, at=0.3, until=5.0)  # 0.1 s before: it may not, so it stays on top
    n.add(B, at=0.35, until=0.38)  # its time is over at the read
    n.absorb(now=0.4, lag_s=0.35)
    assert (len(n), n.count) == (1, {A: 1})
    assert n.on_top_of({A: 3, B: 2}) == {A: 4, B: 2}
    n.absorb(now=0.7, lag_s=0.35)
    assert (len(n), n.count) == (0, {})
    read = {A: 3}
    assert n.on_top_of(read) is read  # nothing noted: the read as it is


def test_counts_match_the_live_notes_through_random_adds_expiries_and_reads() -> None:
    rng = np.random.default_rng(11)
    n = Notes()
    live: list[tuple[float, float, tuple[str, str]]] = []  # (at, until, key): the reference
    now = 0.0
    for _ in range(2000):
        now += float(rng.uniform(0.0, 0.05))
        op = rng.random()
        if op < 0.6:
            key = (str(rng.integers(0, 4)), "m")
            until = now + float(rng.uniform(0.0, 1.0))
            n.add(key, now, until)
            live.append((now, until, key))
        elif op < 0.9:
            gone = n.expire(now)
            assert sorted(gone) == sorted(k for _, u, k in live if u <= now)
            live = [x for x in live if x[1] > now]
        else:
            n.absorb(now, 0.35)
            live = [x for x in live if x[1] > now and x[0] > now - 0.35]
        want: dict[tuple[str, str], int] = {}
        for *_, k in live:
            want[k] = want.get(k, 0) + 1
        assert n.count == want
        assert len(n) == len(live)
        assert n.live(now) == sum(u > now for _, u, _ in live)
