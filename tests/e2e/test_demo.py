"""What ``make run`` shows: once the profiler has graded the simulated fleet, a greeting, a hard
coding task and an image question go to three different models, each the kind it should be."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.e2e.conftest import E2E
from turnout.devstack import demo

pytestmark = pytest.mark.e2e


def test_a_greeting_a_hard_coding_task_and_an_image_go_to_three_different_models(e2e: E2E) -> None:
    t0 = time.monotonic()
    assert demo.wait_profiled(e2e.gateway, timeout=240), "the profiler did not grade every chat model"
    profiled_s = time.monotonic() - t0
    catalog = {m["name"]: m for m in httpx.get(f"{e2e.gateway}/admin/catalog", timeout=10).json()["data"]}
    routed = {r.label: r for r in demo.run(e2e.gateway)}
    assert {label: r.status for label, r in routed.items()} == {
        "greeting": 200,
        "hard coding task": 200,
        "image question": 200,
    }
    greeting, code, image = (routed[k].model for k in ("greeting", "hard coding task", "image question"))
    explained = httpx.get(f"{e2e.gateway}/admin/explain", params={"prompt": demo.GREETING}, timeout=10).json()
    ranked = [(c["model"], round(c["score"], 3)) for c in explained["candidates"]]
    assert len({greeting, code, image}) == 3, (greeting, code, image, f"profiled in {profiled_s:.0f} s", ranked)
    assert image == "llava:7b"  # the only vision model
    # the coding task goes to a model the profiler graded best at code, the greeting to a smaller one
    best_code = max(m["quality"].get("code", 0.0) for m in catalog.values() if m["quality"])
    assert catalog[code]["quality"]["code"] == best_code, {n: m["quality"].get("code") for n, m in catalog.items()}
    assert catalog[greeting]["quality"]["code"] < best_code, (greeting, code)
    assert not catalog[greeting]["capabilities"]["vision"]
