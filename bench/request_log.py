"""What the request log costs the gateway: per event, off the response path (in the publisher's
task), against encoding the same event without it — measured in the same run, interleaved.

    python bench/request_log.py [--events 2000] [--rounds 5]

Each round encodes ``--events`` typical chat events (a 1.5 KB prompt of prose, code, an e-mail
address and an API key; a 600-character reply streamed in 40 batches) three ways: without the
request log (the baseline: ``encode_event``), with it (text extraction, redaction, caps, then
``encode_event``), and with it but redaction off. Prints the medians in µs per event and the ratios
to the baseline. On the response path itself the log costs one list append per streamed batch.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from turnout.gateway.events import encode_event
from turnout.gateway.request_log import RequestLog, RequestLogOptions

PROMPT = (
    "Here is my function, it fails on empty lists. My key is sk-proj-abcdefghijklmnop0123456789 and "
    "you can mail me at jane.doe@example.com.\n```python\ndef mean(xs):\n    return sum(xs) / len(xs)\n```\n"
) + ("Please explain the error, propose a fix and write three tests for it. " * 16)
REPLY_WORDS = ("The function divides by zero when the list is empty. " * 11).split(" ")


def event() -> dict[str, Any]:
    batches = [
        [{"choices": [{"index": 0, "delta": {"content": " ".join(REPLY_WORDS[i : i + 3]) + " "}}]}]
        for i in range(0, 120, 3)
    ]
    return {
        "v": 1,
        "request_id": "req-0123456789abcdef01234567",
        "ts": 1765000000.0,
        "kind": "chat",
        "model": "qwen2.5-coder:7b",
        "backend": "gpu1",
        "status": 200,
        "attempts": [],
        "candidates": [],
        "_body": {"model": "turnout/auto", "messages": [{"role": "user", "content": PROMPT}], "stream": True},
        "_reply": batches,
    }


def run(n: int, log: RequestLog | None) -> float:
    events = [event() for _ in range(n)]
    t0 = time.perf_counter()
    for ev in events:
        if log is None:
            ev.pop("_body")
            ev.pop("_reply")
            encode_event(ev)
        else:
            encode_event(log.fill(ev))
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    on = RequestLog(RequestLogOptions(enabled=True))
    plain = RequestLog(RequestLogOptions(enabled=True, redact=False))
    out: dict[str, list[float]] = {"off": [], "on": [], "on, no redaction": []}
    for _ in range(args.rounds):
        out["off"].append(run(args.events, None))
        out["on"].append(run(args.events, on))
        out["on, no redaction"].append(run(args.events, plain))
    base = statistics.median(out["off"])
    print(f"{'request log':<18} {'µs/event':>9} {'vs off':>7}")
    for name, xs in out.items():
        m = statistics.median(xs)
        print(f"{name:<18} {m:9.1f} {m / base:6.1f}x")
    print(f"(prompt {len(PROMPT)} chars, reply 40 batches; {args.rounds} rounds of {args.events} events, medians)")


if __name__ == "__main__":
    main()
