"""Bursts of concurrent chat requests against a running stack on the simulated fleet: how many
attempts does the router send to a model that cannot be loaded (the fleet's out-of-memory 500s)?

Start the stack (``make run``, or ``python -m turnout.devstack run --port <port>`` with its own
``TURNOUT_KEY_PREFIX``), then::

    .venv/bin/python bench/vram_burst.py --gateway http://127.0.0.1:8080 --fleet http://127.0.0.1:11500

Each burst sends ``--concurrency`` requests at once to ``turnout/auto``, a mix of greetings,
hard coding tasks, image questions and general questions (so the router wants several models
at once on the 16 GiB Ollama listener), waits for every answer, then reads the fleet's counters
(``/_fleet/stats``): errors on the Ollama listener are its out-of-memory refusals (nothing else
fails on the default fleet). Prints, per burst: client statuses, OOM 500s, loads and unloads.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import time
from typing import Any

import httpx

GREETING = "Hello! How are you today?"
CODE = (
    "Implement a thread-safe LRU cache in Rust with generics and unit tests, then explain the "
    "trade-offs of your locking strategy step by step."
)
GENERAL = "Explain in detail why the sky is blue, the physics of Rayleigh scattering and how sunsets differ."
VISION = "What is in this picture?"
PIXEL = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def messages(kind: str) -> list[dict[str, Any]]:
    """One request's messages of the given kind."""
    if kind == "vision":
        return [
            {
                "role": "user",
                "content": [{"type": "text", "text": VISION}, {"type": "image_url", "image_url": {"url": PIXEL}}],
            }
        ]
    text = {"greeting": GREETING, "code": CODE, "general": GENERAL}[kind]
    return [{"role": "user", "content": text}]


async def fleet_stats(http: httpx.AsyncClient, fleet: str) -> dict[str, Any]:
    """The fleet's counters."""
    r = await http.get(f"{fleet}/_fleet/stats")
    r.raise_for_status()
    stats: dict[str, Any] = r.json()["listeners"]
    return stats


async def retried(http: httpx.AsyncClient, gateway: str, since: float) -> int:
    """Requests since ``since`` (unix s) that needed more than one attempt (the request log; an
    attempt skipped by an open circuit after an out-of-memory 500 counts too)."""
    n, before = 0, None
    while True:
        r = await http.get(
            f"{gateway}/admin/requests", params={"since": since, "limit": 200} | ({"before": before} if before else {})
        )
        if r.status_code != 200:
            return -1
        doc = r.json()
        n += sum(1 for row in doc["data"] if row["attempts"] > 1)
        before = doc.get("next_before")
        if not before:
            return n


def delta(after: dict[str, int], before: dict[str, int]) -> int:
    return sum(after.values()) - sum(before.values())


async def burst(
    http: httpx.AsyncClient, gateway: str, n: int, rng: random.Random, max_tokens: int | None
) -> collections.Counter[str]:
    """``n`` requests at once; their statuses and chosen models."""
    kinds = rng.choices(["greeting", "code", "vision", "general"], k=n)

    async def one(kind: str) -> str:
        try:
            r = await http.post(
                f"{gateway}/v1/chat/completions",
                json={"model": "turnout/auto", "messages": messages(kind)}
                | ({"max_tokens": max_tokens} if max_tokens else {}),
            )
        except httpx.HTTPError as exc:
            return f"error:{type(exc).__name__}"
        return str(r.status_code)

    return collections.Counter(await asyncio.gather(*(one(k) for k in kinds)))


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gateway", required=True)
    p.add_argument("--fleet", required=True, help="the fleet's admin URL (any listener)")
    p.add_argument("--concurrency", type=int, default=120)
    p.add_argument("--bursts", type=int, default=5)
    p.add_argument("--pause-s", type=float, default=3.0, help="between bursts (the agents report in between)")
    p.add_argument("--listener", default="ollama")
    p.add_argument("--max-tokens", type=int, default=0, help="0: the request sets none (the model's own length)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--reset", action="store_true", help="unload everything before each burst (a cold fleet each time)")
    p.add_argument(
        "--warm",
        default="",
        help="comma-separated models loaded (after the reset) before each burst, e.g. llava:7b,llama3.1:8b,llama3.2:1b",
    )
    args = p.parse_args()
    rng = random.Random(args.seed)
    limits = httpx.Limits(max_connections=args.concurrency + 10)
    ooms: list[int] = []
    retries: list[int] = []
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        for i in range(args.bursts):
            if args.reset:
                (await http.post(f"{args.fleet}/_fleet/reset")).raise_for_status()
            for model in filter(None, args.warm.split(",")):  # straight to the backend, as another client would
                (await http.post(f"{args.fleet}/api/generate", json={"model": model})).raise_for_status()
            if args.reset or args.warm:
                await asyncio.sleep(args.pause_s)
            before = (await fleet_stats(http, args.fleet))[args.listener]
            t0, started = time.monotonic(), time.time()
            statuses = await burst(http, args.gateway, args.concurrency, rng, args.max_tokens)
            wall = time.monotonic() - t0
            after = (await fleet_stats(http, args.fleet))[args.listener]
            await asyncio.sleep(1.5)  # the request log is written a moment after each request ends
            again = await retried(http, args.gateway, started)
            retries.append(again)
            oom = delta(after["errors"], before["errors"])
            by_model = {m: n - before["errors"].get(m, 0) for m, n in after["errors"].items()}
            by_model = {m: n for m, n in by_model.items() if n}
            ooms.append(oom)
            print(
                f"burst {i + 1}: {dict(statuses)}  retried {again}  OOM 500s {oom} {by_model}  "
                f"loads {delta(after['loads'], before['loads'])}  "
                f"unloads {delta(after['unloads'], before['unloads'])}  "
                f"requests {delta(after['requests'], before['requests'])}  {wall:.1f} s  loaded now {after['loaded']}",
                flush=True,
            )
            await asyncio.sleep(args.pause_s)
    print(f"OOM 500s per burst: {ooms}  mean {sum(ooms) / len(ooms):.1f}")
    print(f"requests with more than one attempt per burst: {retries}  mean {sum(retries) / len(retries):.1f}")


if __name__ == "__main__":
    asyncio.run(main())
