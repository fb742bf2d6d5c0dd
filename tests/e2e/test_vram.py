"""VRAM management end to end: two simulated GPU hosts (fakefleet Ollama listeners with 12 GiB
each, loads that do not fit fail like Ollama's), more models than fit, a gpu-agent per host
publishing its simulated GPU and serving orders, the scorer planning, the gateway routing.

A workload alternating categories (code, general, math, creative) with requests that name the
biggest model now and then, so that room has to be made. Checked: every request succeeds; no
host's loaded models ever exceed the router's budget; the pinned model is never unloaded; every
unload the fleet saw was ordered, succeeded and is in the action log with a reason; resident
models keep serving; ``GET /admin/vram`` shows it all.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from tests.e2e.support import eventually
from turnout.devstack.infra import free_port
from turnout.devstack.stack import Stack, StackConfig, file_sink

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
GiB = 1024**3
CAPACITY = 12 * GiB
BUDGET = int(0.9 * CAPACITY)
PINNED = "small:3b"
HOSTS = {"host-a": "ollama", "host-b": "ollama-b"}  # the first one must be "ollama" (devstack)

MODELS = [
    {"name": "small:3b", "params": "3.2B", "family": "llama", "capabilities": ["completion", "tools"],
     "vram_bytes": "2GiB", "context_length": 131072},
    {"name": "coder:7b", "params": "7.6B", "family": "qwen2", "capabilities": ["completion", "tools", "insert"],
     "vram_bytes": "5GiB", "context_length": 32768},
    {"name": "chat:8b", "params": "8B", "family": "llama", "capabilities": ["completion", "tools"],
     "vram_bytes": "6GiB", "context_length": 131072},
    {"name": "math:7b", "params": "7B", "family": "qwen2", "capabilities": ["completion"],
     "vram_bytes": "5GiB", "context_length": 32768},
    {"name": "big:14b", "params": "14.8B", "family": "qwen2", "capabilities": ["completion", "tools"],
     "vram_bytes": "9GiB", "context_length": 32768},
]  # fmt: skip


def fleet_config() -> dict[str, object]:
    listeners: list[dict[str, object]] = [
        {"name": li, "dialect": "ollama", "host_label": host, "vram_total_bytes": "12GiB", "keep_alive": -1,
         "on_overflow": "fail", "models": MODELS}
        for host, li in HOSTS.items()
    ]  # fmt: skip
    listeners.append(
        {"name": "openai", "dialect": "openai", "models": [
            {"name": "embed-small", "params": "33M", "capabilities": ["embedding"], "vram_bytes": "128MiB"}]}
    )  # fmt: skip
    return {"seed": 3, "time_scale": 0, "listeners": listeners}


PROMPTS = {
    "code": "Write a Python function that parses an ISO 8601 timestamp and returns a datetime; add tests.",
    "general": "What is the capital of Australia, and why was it chosen over Sydney and Melbourne?",
    "math": "Solve for x: 3x^2 - 12x + 9 = 0. Show each step of the derivation and verify the roots.",
    "creative": "Write a short poem about a lighthouse keeper who befriends a storm.",
}


@dataclass
class VramStack:
    stack: Stack
    gateway: str
    admin: str
    log_dir: Path
    samples: list[dict[str, int]] = field(default_factory=list)


@pytest.fixture(scope="module")
def vram_stack(redis_url: str, database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VramStack]:
    run_id = uuid.uuid4().hex[:8]
    log_dir = REPO / ".run" / "test" / f"e2e-vram-{run_id}"
    fleet_yaml = tmp_path_factory.mktemp("vram") / "fleet.yaml"
    fleet_yaml.write_text(yaml.safe_dump(fleet_config()))
    stack = Stack(
        StackConfig(
            redis_url=redis_url,
            database_url=database_url,
            key_prefix=f"syvram-{run_id}",
            gateway_host="127.0.0.1",
            gateway_port=free_port(),
            ops_host="127.0.0.1",
            free_ports=True,
            environment="test",
            log_json=True,
            log_level="DEBUG",
            inherit_turnout_env=False,
            extra_env={
                "TURNOUT_MIGRATE_ON_START": "false",
                "TURNOUT_GATEWAY__ROUTE_TIMEOUT_S": "3",
                "TURNOUT_SCORER__VRAM__PINNED": f'{{"host-a": ["{PINNED}"]}}',
                "TURNOUT_SCORER__VRAM__SCORE_MARGIN": "0.3",
                "TURNOUT_SCORER__VRAM__REFRESH_S": "0.2",
                "TURNOUT_SCORER__VRAM__EVICT_WAIT_S": "2.5",
                "TURNOUT_SCORER__FLEET_POLL_S": "0.3",
                "TURNOUT_SCORER__ROUTING__ROUTE_CACHE__ENABLED": "false",
                # runtime profiling loads and unloads models outside the router's orders: off here
                "TURNOUT_PROFILER__PROFILING__ENABLED": "false",
            },
            cwd=REPO,
        ),
        sink=file_sink(log_dir),
    )
    try:
        fleet = stack.start_fleet(["--config", str(fleet_yaml)])
        urls = fleet.raw["urls"]
        stack.config.backends = ",".join(f"{li}:ollama={urls[li]}" for li in HOSTS.values())
        for svc in ("scorer", "profiler", "gateway"):
            stack.start_service(svc)
        for host, listener in HOSTS.items():
            env = stack.env_for("gpu-agent")
            env.update(
                TURNOUT_GPU_AGENT__HOST=host,
                TURNOUT_GPU_AGENT__BACKEND=listener,
                TURNOUT_GPU_AGENT__READERS='["simulated"]',
                TURNOUT_GPU_AGENT__OPS_PORT=str(free_port()),
                TURNOUT_GPU_AGENT__INTERVAL_S="0.3",
                TURNOUT_GPU_AGENT__TTL_S="5",
            )
            stack._spawn(f"gpu-agent-{host}", [sys.executable, "-m", "turnout.gpu_agent"], env)
        stack.wait_ready(timeout=90)
        stack.wait_models(min_models=5, timeout=60)
        vs = VramStack(stack, stack.urls().gateway, fleet.admin_url, log_dir)
        yield vs
    finally:
        stack.stop()


def fleet_stats(admin: str) -> dict[str, dict[str, object]]:
    return dict(httpx.get(f"{admin}/_fleet/stats", timeout=5).json()["listeners"])


def test_alternating_workload_keeps_budgets_pinning_and_records_every_action(vram_stack: VramStack) -> None:
    gw, admin = vram_stack.gateway, vram_stack.admin
    # the gpu-agents publish both simulated hosts, with their GPUs, and the scorer sees them
    report = eventually(
        lambda: (
            (r := httpx.get(f"{gw}/admin/vram", timeout=5).json())
            and len([h for h in r["hosts"] if h["managed"]]) == 2
            and r
        ),
        timeout=30,
        what="both hosts managed in /admin/vram",
    )
    assert {h["host"]: h["budget_bytes"] for h in report["hosts"]} == {"host-a": BUDGET, "host-b": BUDGET}
    assert {h["host"]: h["gpus"][0]["vendor"] for h in report["hosts"]} == {
        "host-a": "simulated",
        "host-b": "simulated",
    }

    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                stats = fleet_stats(admin)
                used = {n: s["vram_used_bytes"] for n, s in stats.items() if n in HOSTS.values()}
                vram_stack.samples.append({n: int(str(v)) for n, v in used.items()})
            except httpx.HTTPError:
                pass
            time.sleep(0.03)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    served: list[tuple[str, str, str]] = []
    try:
        with openai.OpenAI(base_url=f"{gw}/v1", api_key="unused", max_retries=0, timeout=30) as client:
            # the pinned model first, on host-a
            raw = client.chat.completions.with_raw_response.create(
                model=PINNED, messages=[{"role": "user", "content": "hi"}], max_tokens=8
            )
            served.append(("pin", raw.headers["x-turnout-model"], raw.headers["x-turnout-backend"]))
            forced = iter(["chat:8b", "math:7b", "big:14b", "chat:8b"])
            for i in range(24):
                if i % 6 == 5:
                    model, category = next(forced), "forced"
                else:
                    category = list(PROMPTS)[i % 4]
                    model = "turnout/auto"
                prompt = PROMPTS.get(category, "Summarise the plot of Hamlet in three sentences.")
                raw = client.chat.completions.with_raw_response.create(
                    model=model, messages=[{"role": "user", "content": prompt}], max_tokens=16
                )
                assert raw.http_response.status_code == 200
                served.append((category if model == "turnout/auto" else f"forced {model}",
                               raw.headers["x-turnout-model"], raw.headers["x-turnout-backend"]))  # fmt: skip
                time.sleep(0.4)  # let the agents publish between requests, as a real workload would
    finally:
        stop.set()
        sampler.join(timeout=5)

    # 1. budgets: no host ever held more than the router's budget
    assert vram_stack.samples, "the sampler saw nothing"
    peak = {li: max(s.get(li, 0) for s in vram_stack.samples) for li in HOSTS.values()}
    final = httpx.get(f"{gw}/admin/vram", params={"actions": 1000}, timeout=5).json()
    assert all(v <= BUDGET for v in peak.values()), f"peak VRAM {peak} over the budget {BUDGET}: {served} {final}"

    # 2. the pinned model was never unloaded; 3. every unload was ordered and recorded
    stats = fleet_stats(admin)
    report = eventually(
        lambda: (
            (r := httpx.get(f"{gw}/admin/vram", params={"actions": 1000}, timeout=5).json())
            and not any(h["pending"] for h in r["hosts"])
            and r
        ),
        timeout=15,
        what="no pending loads",
    )
    actions = report["actions"]
    unloads_seen = {li: dict(stats[li]["unloads"]) for li in HOSTS.values()}  # type: ignore[call-overload]
    host_of = {li: h for h, li in HOSTS.items()}
    assert unloads_seen["ollama"].get(PINNED, 0) == 0, f"{unloads_seen} {served} {actions}"
    assert not [a for a in actions if a["action"] == "unload" and a["model"] == PINNED and a["host"] == "host-a"]
    ordered: dict[tuple[str, str], int] = {}
    for a in actions:
        assert a["reason"], a
        assert a["requested_by"].startswith("scorer-")
        if a["action"] == "unload" and a["ok"]:
            ordered[(a["host"], a["model"])] = ordered.get((a["host"], a["model"]), 0) + 1
    seen = {(host_of[li], m): n for li, ms in unloads_seen.items() for m, n in ms.items()}
    assert seen == ordered, f"fleet unloads {seen} != ordered unloads {ordered}"
    assert ordered, f"the workload never needed an unload: {served}"
    assert all(a["ok"] for a in actions), actions

    # 4. resident models kept serving: most requests needed no load at all
    decisions = report["decisions"]
    resident = decisions.get("resident", 0) + decisions.get("resident_within_margin", 0)
    assert resident >= len(served) // 2, decisions
    # 5. a model asked for by name was served each time, on a host that had room made for it
    assert all(c.removeprefix("forced ") == m for c, m, _ in served if c.startswith("forced"))
    print({"served": served, "decisions": decisions, "peak": peak, "unloads": ordered})


def test_explain_names_the_model_the_gateway_serves_after_the_vram_planner(vram_stack: VramStack) -> None:
    """``/admin/explain`` runs the VRAM planner too (without its bookkeeping): its ``model`` is
    what the gateway then serves, and a substitution is shown with the planner's reason."""
    gw = vram_stack.gateway
    planned = 0
    with (
        httpx.Client(base_url=gw, timeout=30) as http,
        openai.OpenAI(base_url=f"{gw}/v1", api_key="unused", max_retries=0, timeout=30) as client,
    ):
        for category, prompt in PROMPTS.items():
            eventually(
                lambda: not any(h["pending"] for h in http.get("/admin/vram").json()["hosts"]),
                timeout=15,
                what="no pending loads",
            )
            body = {"model": "turnout/auto", "messages": [{"role": "user", "content": prompt}]}
            explained = http.post("/admin/explain", json=body).json()
            raw = client.chat.completions.with_raw_response.create(
                model="turnout/auto", messages=[{"role": "user", "content": prompt}], max_tokens=8
            )
            served = raw.headers["x-turnout-model"]
            vram = explained["vram"]
            assert explained["model"] == explained["candidates"][0]["model"], explained
            if vram is not None:
                planned += 1
                assert vram["chosen"] == explained["model"], explained
                assert vram["reason"], explained
                if vram["chosen"] != vram["ranked_first"]:
                    assert any(n.startswith("VRAM planner: ") for n in explained["notes"]), explained
            late = vram is not None and vram["kind"] == "evict" and served == vram["if_late"]
            assert served == explained["model"] or late, (category, served, explained)
            time.sleep(0.4)
    assert planned == len(PROMPTS), "the planner should weigh in on every request of a managed fleet"
