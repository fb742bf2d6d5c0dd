"""A real llama.cpp server on the GPU, seen by the gpu-agent (run through ``scripts/gpu-llama-smoke.sh``).

1. private ``redis-server`` + ``python -m turnout.gpu_agent`` (NVML reader) watching the backend
   ``llama`` (``TURNOUT_BACKENDS=llama:openai=http://127.0.0.1:PORT/v1``);
2. baseline: the GPU's used memory in the HostStateV1 the agent publishes to Redis;
3. start ``llama-server -m MODEL -ngl 99`` (every layer offloaded), wait for ``/health``;
4. a real chat completion (``/v1/chat/completions``) with llama.cpp's own timings (tokens/s);
5. after: HostStateV1 used memory again (the rise includes the model's weights, KV cache and the
   CUDA context), NVML's per-process list (pid → MiB) and ``nvidia-smi --query-compute-apps``.

HostStateV1/GpuStateV1 carry per-GPU totals only, not per-process memory: the per-process figure
is NVML's (the same call the agent's reader makes), printed here beside what the agent published.
Prints one JSON summary line at the end; exit 0 when every check passes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_smoke import _pong, free_port, host_state, nvml_process_mib, wait_for

MiB = 1024 * 1024


def post_json(url: str, body: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except Exception:
        return False


def gpu0(state: dict[str, Any] | None) -> dict[str, Any]:
    gpus = (state or {}).get("gpus") or [{}]
    return gpus[0]  # type: ignore[no-any-return]


def settled_used(rport: int, prefix: str, interval: float) -> tuple[dict[str, Any], float]:
    """The published state after two more publishes (so it reflects the present)."""
    time.sleep(interval * 2.5)
    st = host_state(rport, prefix) or {}
    return st, gpu0(st).get("memory_used_bytes", 0) / MiB


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True, help="llama-server binary (CUDA build)")
    p.add_argument("--model", required=True, help="GGUF to load")
    p.add_argument("--redis-server", default=os.environ.get("REDIS_SERVER", "redis-server"))
    p.add_argument("--ctx", type=int, default=4096)
    p.add_argument("--interval", type=float, default=0.5)
    p.add_argument("--max-tokens", type=int, default=128)
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sy-llama-gpu-"))
    prefix, host = f"llamagpu{os.getpid()}", "gpu-llama-smoke"
    rport, ops_port, lport = free_port(), free_port(), free_port()
    procs: list[subprocess.Popen[Any]] = []
    checks: list[tuple[str, bool, str]] = []
    summary: dict[str, Any] = {"model": Path(args.model).name}

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append((name, ok, detail))
        print(f"[{'PASS' if ok else 'FAIL'}] {name}: {detail}", flush=True)

    try:
        procs.append(
            subprocess.Popen(
                [
                    args.redis_server,
                    "--port",
                    str(rport),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "everysec",
                    "--dir",
                    str(work),
                    "--loglevel",
                    "warning",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        if not wait_for(lambda: _pong(rport), 10):
            print("redis-server did not start")
            return 2
        base_url = f"http://127.0.0.1:{lport}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TURNOUT_")}
        env.update(
            TURNOUT_REDIS_URL=f"redis://127.0.0.1:{rport}/0",
            TURNOUT_KEY_PREFIX=prefix,
            TURNOUT_LOG_JSON="false",
            TURNOUT_BACKENDS=f"llama:openai={base_url}/v1",
            TURNOUT_GPU_AGENT__BACKEND="llama",
            TURNOUT_GPU_AGENT__HOST=host,
            TURNOUT_GPU_AGENT__INTERVAL_S=str(args.interval),
            TURNOUT_GPU_AGENT__OPS_PORT=str(ops_port),
            PYTHONUNBUFFERED="1",
        )
        print(f"agent env: TURNOUT_BACKENDS={env['TURNOUT_BACKENDS']} TURNOUT_REDIS_URL={env['TURNOUT_REDIS_URL']}")
        agent_log = (work / "agent.log").open("w")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "turnout.gpu_agent"], env=env, stdout=agent_log, stderr=subprocess.STDOUT
            )
        )
        if not wait_for(lambda: host_state(rport, prefix), 30):
            print("the agent published nothing; its log:\n" + (work / "agent.log").read_text()[-4000:])
            return 2
        before, used_before = settled_used(rport, prefix, args.interval)
        g = gpu0(before)
        uuid = g.get("uuid", "")
        summary["gpu"] = {"uuid": uuid, "name": g.get("name"), "total_mib": g.get("memory_total_bytes", 0) / MiB}
        summary["used_before_mib"] = round(used_before, 1)
        print(
            f"HostStateV1 before (Redis {prefix}:fleet:host:{host}): gpu0 used={used_before:.0f} MiB "
            f"models={before.get('loaded_models')}"
        )

        t0 = time.monotonic()
        server_log = (work / "llama-server.log").open("w")
        cmd = [
            args.server,
            "-m",
            args.model,
            "-ngl",
            "99",
            "-c",
            str(args.ctx),
            "--host",
            "127.0.0.1",
            "--port",
            str(lport),
            "-a",
            "llama-gpu",
        ]
        print("$ " + " ".join(cmd), flush=True)
        srv = subprocess.Popen(cmd, stdout=server_log, stderr=subprocess.STDOUT)
        procs.append(srv)
        ok = wait_for(lambda: healthy(f"{base_url}/health") or srv.poll() is not None, 120, 0.25)
        up = bool(ok) and srv.poll() is None
        summary["server_load_s"] = round(time.monotonic() - t0, 2)
        log_text = (work / "llama-server.log").read_text(errors="replace")
        offload = [
            ln.strip()
            for ln in log_text.splitlines()
            if any(
                k in ln
                for k in (
                    "offloaded",
                    "CUDA0 model buffer",
                    "CUDA0 KV buffer",
                    "CUDA0 compute buffer",
                    "found 1 CUDA devices",
                    "Device 0:",
                )
            )
        ]
        print("llama-server log (GPU lines):\n  " + "\n  ".join(offload[:12]))
        check("llama-server up (/health)", up, f"pid={srv.pid} health ok in {summary['server_load_s']} s")
        if not up:
            print(log_text[-4000:])
            return 1

        body = {
            "model": "llama-gpu",
            "max_tokens": args.max_tokens,
            "temperature": 0.8,
            "seed": 1,
            "messages": [{"role": "user", "content": "Say hello to the router in one sentence."}],
        }
        r = post_json(f"{base_url}/v1/chat/completions", body)
        text = r["choices"][0]["message"]["content"]
        timings = r.get("timings", {})
        summary["usage"] = r.get("usage")
        summary["tokens_per_s"] = round(timings.get("predicted_per_second", 0.0), 1)
        summary["prompt_tokens_per_s"] = round(timings.get("prompt_per_second", 0.0), 1)
        check(
            "chat completion from the GPU server",
            bool(r.get("usage", {}).get("completion_tokens")),
            f"usage={r.get('usage')} gen {summary['tokens_per_s']} tok/s, "
            f"prompt {summary['prompt_tokens_per_s']} tok/s; "
            f"text={text[:120]!r}",
        )
        # a longer one for a steadier tokens/s
        body["max_tokens"], body["messages"][0]["content"] = 512, "Write a long story about GPUs."
        body["ignore_eos"] = True
        r2 = post_json(f"{base_url}/v1/chat/completions", body)
        t2 = r2.get("timings", {})
        summary["tokens_per_s_512"] = round(t2.get("predicted_per_second", 0.0), 1)
        print(f"512-token completion: {r2.get('usage')} gen {summary['tokens_per_s_512']} tok/s")

        after, used_after = settled_used(rport, prefix, args.interval)
        summary["used_after_mib"] = round(used_after, 1)
        summary["published_rise_mib"] = round(used_after - used_before, 1)
        summary["published_models"] = after.get("loaded_models")
        print(
            f"HostStateV1 after: gpu0 used={used_after:.0f} MiB (+{used_after - used_before:.0f} MiB) "
            f"models={after.get('loaded_models')} backend={after.get('backend')} backend_ok={after.get('backend_ok')}"
        )
        print("HostStateV1 after (gpu0): " + json.dumps(gpu0(after)))
        found, mib, listed = nvml_process_mib(uuid, srv.pid) if uuid else (False, 0.0, [])
        summary["nvml_processes"] = [{"pid": p_, "mib": round(m, 1)} for p_, m in listed]
        summary["llama_server_pid"] = srv.pid
        summary["llama_server_nvml_mib"] = round(mib if found else (listed[0][1] if len(listed) == 1 else 0.0), 1)
        print(f"NVML per-process (nvmlDeviceGetComputeRunningProcesses): {listed} (llama-server pid {srv.pid})")
        check(
            "NVML lists the llama-server process on the GPU",
            found and mib > 0,
            f"pid {srv.pid}: {mib:.0f} MiB (all: {listed})",
        )
        smi = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,process_name,used_memory", "--format=csv"],
            capture_output=True,
            text=True,
            check=False,
        )
        print("nvidia-smi --query-compute-apps:\n" + smi.stdout.strip())
        rd = subprocess.run(
            [sys.executable, "-m", "turnout.gpu_agent.nvml"], capture_output=True, text=True, check=False
        )
        print("python -m turnout.gpu_agent.nvml (server running):\n" + rd.stdout.strip()[:1500])
        check(
            "published used memory rose by at least the process's NVML memory (-64 MiB)",
            used_after - used_before >= summary["llama_server_nvml_mib"] - 64 and summary["llama_server_nvml_mib"] > 0,
            f"+{used_after - used_before:.0f} MiB published vs {summary['llama_server_nvml_mib']} MiB per-process",
        )

        srv.send_signal(signal.SIGTERM)
        srv.wait(timeout=20)
        gone, used_gone = settled_used(rport, prefix, args.interval)
        summary["used_after_stop_mib"] = round(used_gone, 1)
        check(
            "published used memory falls back after the server stops",
            used_gone < used_after - 0.5 * max(mib, 1),
            f"{used_gone:.0f} MiB (was {used_after:.0f})",
        )
        return 0 if all(c[1] for c in checks) else 1
    finally:
        summary["ok"] = bool(checks) and all(c[1] for c in checks)
        summary["checks"] = [{"name": n, "ok": o} for n, o, _ in checks]
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        alog = work / "agent.log"
        if alog.exists():
            print("--- agent log (tail) ---\n" + alog.read_text()[-1500:])
        print("SUMMARY " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    sys.exit(main())
