"""``turnout`` (typer's CliRunner) against a real in-process gateway: check, models, explain,
profile, requests tail/list/show; how it finds the gateway and the admin key."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis
from typer.testing import CliRunner, Result

from tests.integration.stack_support import ADMIN_KEY, Stack, running_stack
from tests.integration.test_gateway_fakes import catalog_model, snapshot
from turnout.cli.app import build_app
from turnout.devstack.infra import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
async def stack(redis_url: str, db: str, key_prefix: str) -> AsyncIterator[Stack]:
    async with running_stack(redis_url, db, key_prefix, request_log={"enabled": True}) as s:
        yield s


async def turnout(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run the CLI in a thread: the gateway answers from this test's event loop meanwhile."""
    runner = CliRunner()
    env = {"COLUMNS": "220", **(env or {})}
    return await asyncio.to_thread(runner.invoke, build_app(), list(args), env=env)


def admin(stack: Stack) -> list[str]:
    return ["--url", stack.url, "--admin-key", ADMIN_KEY]


def squash(text: str) -> str:
    return re.sub(r"[ \t]+", " ", text)


async def test_check_reports_every_part_and_passes(stack: Stack):
    result = await turnout(*admin(stack), "check")
    assert result.exit_code == 0, result.output
    out = squash(result.output)
    for row in (
        "✓ │ gateway │ answers /health",
        "✓ │ redis │ answers PING",
        "✓ │ postgres │ schema at 0003_prefill_rate",
        "✓ │ scorer │ a scorer is alive",
        "✓ │ backend alpha │ 1 model(s): gpt-fake-8b",
        "✓ │ configuration: request log │ on: prompts and replies stored, redacted",
    ):
        assert row in out, out
    assert out.rstrip().endswith("all good")


async def test_check_says_what_to_fix(redis_url: str, db: str, key_prefix: str):
    dead = free_port()
    async with running_stack(redis_url, db, key_prefix) as stack:
        # a backend nobody listens on, added the way operators add them: configuration
        stack.gateway.settings.backends.append(
            type(stack.gateway.settings.backends[0])(name="gpu9", kind="openai", url=f"http://127.0.0.1:{dead}/v1")
        )
        result = await turnout(*admin(stack), "check")
    assert result.exit_code == 1
    out = squash(result.output)
    assert "✗ │ backend gpu9 │" in out
    assert f"is http://127.0.0.1:{dead}/v1 up? check the backend's URL, kind (openai) and api_key in" in out
    assert "1 problem(s): backend gpu9" in out


async def test_an_unreachable_gateway_is_a_clear_error_with_the_fix():
    port = free_port()
    result = await turnout("check", env={"TURNOUT_GATEWAY__PORT": str(port)})
    assert result.exit_code == 1
    out = squash(result.output)
    assert f"✗ gateway at http://127.0.0.1:{port}: cannot reach the gateway at http://127.0.0.1:{port}" in out
    assert "fix: start it (`make run`), or point --url / TURNOUT_GATEWAY_URL / TURNOUT_GATEWAY__PORT at it" in out


async def test_the_port_setting_and_the_admin_key_come_from_the_environment(stack: Stack):
    port = stack.url.rsplit(":", 1)[1]
    no_key = await turnout("profile", env={"TURNOUT_GATEWAY__PORT": port})
    assert no_key.exit_code == 1
    assert "GET /admin/profiling: HTTP 401" in no_key.output
    assert "hint: pass the admin key: --admin-key or TURNOUT_ADMIN_KEY" in no_key.output
    ok = await turnout("profile", env={"TURNOUT_GATEWAY__PORT": port, "TURNOUT_ADMIN_KEY": ADMIN_KEY})
    assert ok.exit_code == 0, ok.output
    assert "nothing queued or running" in ok.output


async def test_models_lists_the_catalog(stack: Stack, redis: Redis):
    coder = catalog_model("qwen2.5-coder:7b", "alpha", "qwen2.5-coder:7b", 7.6, tools=True)
    coder.quality = {"code": 0.81, "general": 0.55}
    coder.tokens_per_s, coder.ttft_ms = 48.0, 120.0
    vision = catalog_model("llava:7b", "beta", "llava:7b", 7.0, vision=True)
    await redis.set(stack.keys.catalog_snapshot, snapshot(coder, vision))
    await asyncio.sleep(0.3)  # the gateway re-reads the snapshot every 50 ms here
    result = await turnout(*admin(stack), "models")
    assert result.exit_code == 0, result.output
    lines = [squash(line) for line in result.output.splitlines()]
    assert any(line.startswith("│ llava:7b │ 7 B │ beta │ vision │ – │ – │") for line in lines), result.output
    assert any(
        line.startswith("│ qwen2.5-coder:7b │ 7.6 B │ alpha │ tools │ 81% │ 55% │ 48 │ 120 ms │") for line in lines
    )


async def test_models_fits_an_80_column_terminal_without_cutting_names_or_numbers(stack: Stack, redis: Redis):
    big = catalog_model("Qwen3-30B-A3B-Instruct-Q4_K_M", "gpu-box-openai", "Qwen3-30B-A3B-Instruct-Q4_K_M", 30.5)
    big.quality = dict.fromkeys(("code", "creative", "extraction", "general", "instruction", "math", "reasoning"), 0.9)
    big.tokens_per_s, big.ttft_ms, big.benchmark = 60.0, 151.0, 0.77
    small = catalog_model("llama3.2:1b", "gpu-box-ollama", "llama3.2:1b", 1.2, tools=True)
    small.quality = {"code": 0.2, "math": 0.17}
    await redis.set(stack.keys.catalog_snapshot, snapshot(big, small))
    await asyncio.sleep(0.3)
    result = await turnout(*admin(stack), "models", env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80, result.output
    out = squash(result.output)
    assert "Qwen3-30B-A3B-Instruct-Q4_K_M 30.5 B gpu-box-openai 60 151 ms" in out, result.output
    assert "llama3.2:1b 1.2 B gpu-box-ollama tools – –" in out
    assert "model code crea extr gene inst math reas bench" in out
    assert "Qwen3-30B-A3B-Instruct-Q4_K_M 90 90 90 90 90 90 90 77" in out
    assert "llama3.2:1b 20 – – – – 17 – –" in out
    assert "crea = creative, extr = extraction, gene = general, inst = instruction, reas = reasoning" in " ".join(
        out.split()
    )  # the caption wraps at the table's width
    # wide enough (or piped): the one table, as before
    wide = squash((await turnout(*admin(stack), "models", env={"COLUMNS": "220"})).output)
    assert "│ Qwen3-30B-A3B-Instruct-Q4_K_M │ 30.5 B │ gpu-box-openai │ │ 90% │ 90% │" in wide


async def test_explain_shows_the_analysis_and_the_ranked_candidates(stack: Stack):
    result = await turnout(*admin(stack), "explain", "implement an LRU cache in Rust", "--quality", "0.9")
    assert result.exit_code == 0, result.output
    out = squash(result.output)
    assert out.startswith("category code, complexity 0.72 (hard); signals: code_keywords")
    assert "│ 1 │ m-alpha │ alpha │ 0.910 │ best code quality 0.84 │" in out
    assert "│ 2 │ m-beta │ beta │ 0.520 │ lower quality 0.41 │" in out
    assert "filtered m-embed: cannot chat" in out
    assert stack.routed[-1].quality == 0.9


async def test_requests_tail_list_and_show(stack: Stack):
    tail = asyncio.create_task(
        turnout(*admin(stack), "requests", "tail", "--no-history", "-n", "2", "--interval", "0.2")
    )
    await asyncio.sleep(1.0)  # the tail is connected and has seen the (empty) history
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        ids = []
        for text in ("Hello!", "write a rust parser"):
            body = {"model": "turnout/auto", "messages": [{"role": "user", "content": text}]}
            ids.append((await http.post("/v1/chat/completions", json=body)).headers["x-request-id"])
    result = await asyncio.wait_for(tail, timeout=20)
    assert result.exit_code == 0, result.output
    lines = [squash(line) for line in result.output.splitlines()]
    assert [re.sub(r"^\d\d:\d\d:\d\d ", "", line).split(" (ttft")[0].rsplit(" ", 2)[0] for line in lines] == [
        f"200 {ids[0]} general → m-beta@beta",
        f"200 {ids[1]} code → m-alpha@alpha",
    ]
    assert lines[1].endswith("best code quality 0.84; resident on gpu0")

    await stack.store_events()
    listed = await turnout(*admin(stack), "requests", "list", "--model", "m-alpha")
    assert listed.exit_code == 0, listed.output
    assert ids[1] in listed.output and ids[0] not in listed.output
    shown = await turnout(*admin(stack), "requests", "show", ids[1])
    assert shown.exit_code == 0, shown.output
    out = squash(shown.output)
    assert f"{ids[1]} 200 ok: m-alpha@alpha" in out
    assert "│ ✓ m-alpha │ alpha │ 0.910 │ best code quality 0.84 │" in out
    assert "attempt 1: m-alpha@alpha ok" in out
    assert "prompt user: write a rust parser" in out
    assert "reply Hello from the fake backend." in out


async def test_profile_posts_to_the_admin_api(stack: Stack):
    result = await turnout(*admin(stack), "profile", "nope:1b", "--force")
    assert result.exit_code == 1
    assert "error: POST /admin/reprofile: HTTP 404: The model 'nope:1b' is not in the catalog" in squash(result.output)


async def test_router_lists_trains_activates_and_rolls_back(stack: Stack):
    listed = await turnout(*admin(stack), "router", "list")
    assert listed.exit_code == 0, listed.output
    assert "Router prior (active: shipped)" in listed.output
    trained = await turnout(*admin(stack), "router", "train")
    assert trained.exit_code == 0, trained.output
    assert "training requested (" in trained.output
    missing = await turnout(*admin(stack), "router", "activate", "nope")
    assert missing.exit_code == 1
    assert "POST /admin/router/activate: HTTP 404: no router prior version 'nope'" in squash(missing.output)
    back = await turnout(*admin(stack), "router", "rollback")
    assert back.exit_code == 0 and "active router prior: shipped" in back.output
