"""GPU smoke test: the gpu-agent reads a real NVIDIA GPU through NVML, and what it publishes
(HostStateV1 in Redis, ``/metrics``) follows a known allocation made by another process.

Run through ``scripts/gpu-smoke.sh`` (which sets PYTHONPATH and finds redis-server). Steps:

1. start a private ``redis-server`` (free port, append-only file with ``appendfsync everysec``
   as the devstack runs it, temp dir);
2. start ``python -m turnout.gpu_agent`` against it (NVML reader, ops port for /metrics);
3. start an allocator process: CUDA driver API through ctypes (``libcuda.so.1``, always
   installed with the driver; no torch, no CUDA toolkit): create a context, report the device
   UUID, wait; take the baseline; then ``cuMemAlloc`` N MiB and wait;
4. within ``--timeout`` seconds the published used memory of that GPU (Redis and /metrics)
   must rise by N MiB ± tolerance, and NVML's per-process list must show the allocator's pid
   with at least N MiB; then free it and report the drop.

Exit status 0 when every check passes, 1 when one fails, 2 when the set-up is impossible
(no GPU, no redis-server, agent did not publish). Prints one JSON summary line at the end.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MiB = 1024 * 1024


# --- the allocator (runs as a child: ``gpu_smoke.py --allocate``) ------------------------------


def _cuda_check(lib: Any, rc: int, what: str) -> None:
    if rc != 0:
        msg = ctypes.c_char_p()
        lib.cuGetErrorString(rc, ctypes.byref(msg))
        raise SystemExit(f"allocator: {what} failed: {rc} {msg.value.decode() if msg.value else ''}")


def format_uuid(raw: bytes) -> str:
    """16 bytes from ``cuDeviceGetUuid`` as NVML writes them: ``GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx``."""
    h = raw.hex()
    return f"GPU-{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def allocate(device: int) -> None:
    """Protocol on stdout/stdin: prints ``ctx <pid> <uuid>``; on ``alloc <MiB>`` allocates and prints
    ``allocated <MiB>``; on ``free`` frees and prints ``freed``; exits on EOF."""
    lib = ctypes.CDLL("libcuda.so.1")
    _cuda_check(lib, lib.cuInit(0), "cuInit")
    dev = ctypes.c_int()
    _cuda_check(lib, lib.cuDeviceGet(ctypes.byref(dev), device), "cuDeviceGet")
    uuid = (ctypes.c_ubyte * 16)()
    getter = getattr(lib, "cuDeviceGetUuid_v2", None) or lib.cuDeviceGetUuid
    _cuda_check(lib, getter(uuid, dev), "cuDeviceGetUuid")
    ctx = ctypes.c_void_p()
    _cuda_check(lib, lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
    _cuda_check(lib, lib.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
    ptrs: list[ctypes.c_uint64] = []
    print(f"ctx {os.getpid()} {format_uuid(bytes(uuid))}", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd and cmd[0] == "alloc":
            size = int(cmd[1]) * MiB
            ptr = ctypes.c_uint64()
            _cuda_check(lib, lib.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(size)), "cuMemAlloc")
            # touch it so that no driver defers the backing
            _cuda_check(lib, lib.cuMemsetD8_v2(ptr, ctypes.c_ubyte(0x5A), ctypes.c_size_t(size)), "cuMemsetD8")
            _cuda_check(lib, lib.cuCtxSynchronize(), "cuCtxSynchronize")
            ptrs.append(ptr)
            print(f"allocated {cmd[1]}", flush=True)
        elif cmd and cmd[0] == "free":
            for p in ptrs:
                _cuda_check(lib, lib.cuMemFree_v2(p), "cuMemFree")
            ptrs.clear()
            _cuda_check(lib, lib.cuCtxSynchronize(), "cuCtxSynchronize")
            print("freed", flush=True)


# --- reading what the agent published -----------------------------------------------------------


def metric_samples(text: str, name_suffix: str) -> list[tuple[str, dict[str, str], float]]:
    """Samples of every metric whose name ends with ``name_suffix`` (no prometheus_client needed)."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, rest = head.partition("{")
        if not name.endswith(name_suffix):
            continue
        labels: dict[str, str] = {}
        body = rest.rstrip("}")
        while body:
            key, _, body = body.partition('="')
            val, _, body = body.partition('"')
            labels[key.strip(", ")] = val
            body = body.lstrip(",")
        try:
            out.append((name, labels, float(value)))
        except ValueError:
            continue
    return out


def metric_used(text: str, uuid: str, index: int | None) -> float | None:
    for _, labels, value in metric_samples(text, "gpu_memory_used_bytes"):
        if labels.get("uuid") == uuid or (uuid not in labels.values() and str(index) == labels.get("gpu")):
            return value
    return None


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Smoke:
    args: argparse.Namespace
    checks: list[Check] = field(default_factory=list)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, ok, detail))
        print(f"[{'PASS' if ok else 'FAIL'}] {name}: {detail}", flush=True)

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_cmd(port: int, *args: str) -> Any:
    """A minimal RESP client (so the orchestrator needs no redis-py)."""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        s.sendall(payload.encode())
        f = s.makefile("rb")
        return _resp(f)


def _resp(f: Any) -> Any:
    line = f.readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data.decode()
    if kind == b"*":
        n = int(rest)
        return [] if n < 0 else [_resp(f) for _ in range(n)]
    raise RuntimeError(f"unexpected RESP {line!r}")


def host_state(port: int, prefix: str) -> dict[str, Any] | None:
    hosts = redis_cmd(port, "ZRANGE", f"{prefix}:fleet:hosts", "0", "-1")
    for h in hosts or []:
        raw = redis_cmd(port, "GET", f"{prefix}:fleet:host:{h}")
        if raw:
            return json.loads(raw)  # type: ignore[no-any-return]
    return None


def gpu_in(state: dict[str, Any], uuid: str) -> dict[str, Any] | None:
    return next((g for g in state.get("gpus", []) if g.get("uuid") == uuid), None)


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=3) as r:
        return r.read().decode()  # type: ignore[no-any-return]


def nvml_process_mib(uuid: str, pid: int) -> tuple[bool, float, list[tuple[int, float]]]:
    import pynvml

    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
        listed = [(int(p.pid), (p.usedGpuMemory or 0) / MiB) for p in procs]
    finally:
        pynvml.nvmlShutdown()
    mine = [m for p, m in listed if p == pid]
    return bool(mine), (mine[0] if mine else 0.0), listed


def in_child_pid_namespace() -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return len(line.split()) > 2
    return False


def wait_for(pred: Any, timeout: float, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def run(args: argparse.Namespace) -> int:  # noqa: C901 - one linear script
    smoke = Smoke(args)
    work = Path(tempfile.mkdtemp(prefix="sy-gpu-smoke-"))
    prefix = f"gpusmoke{os.getpid()}"
    redis_server = args.redis_server or shutil.which("redis-server")
    if not redis_server:
        print("no redis-server: install it or carry one (scripts/gpu-smoke-bundle.sh)", file=sys.stderr)
        return 2
    rport, ops_port = free_port(), free_port()
    try:
        smoke.procs.append(
            subprocess.Popen(
                [
                    redis_server,
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
                    "--daemonize",
                    "no",
                    "--loglevel",
                    "warning",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        if not wait_for(lambda: _pong(rport), 10):
            print(f"redis-server did not start: {smoke.procs[-1].stderr.read() if smoke.procs[-1].stderr else ''}")
            return 2
        env = {k: v for k, v in os.environ.items() if not k.startswith("TURNOUT_")}
        env.update(
            TURNOUT_REDIS_URL=f"redis://127.0.0.1:{rport}/0",
            TURNOUT_KEY_PREFIX=prefix,
            TURNOUT_LOG_JSON="false",
            PYTHONUNBUFFERED="1",
        )
        env[args.ops_port_env] = str(ops_port)
        env[args.interval_env] = str(args.interval)
        env[args.host_env] = "gpu-smoke"
        for kv in args.agent_env:
            key, _, value = kv.partition("=")
            env[key] = value
        agent_log = (work / "agent.log").open("w")
        smoke.procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "turnout.gpu_agent"],
                env=env,
                stdout=agent_log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
        state = wait_for(lambda: host_state(rport, prefix), args.timeout)
        if not state:
            print("the agent published nothing; its log:\n" + (work / "agent.log").read_text()[-4000:])
            return 2
        smoke.check(
            "agent publishes HostStateV1",
            bool(state.get("gpus")),
            f"host={state.get('host')} gpus={len(state.get('gpus', []))} gpu_error={state.get('gpu_error')}",
        )
        if not state.get("gpus"):
            return 1

        alloc = subprocess.Popen(
            [sys.executable, __file__, "--allocate", "--device", str(args.device)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        smoke.procs.append(alloc)
        assert alloc.stdin is not None and alloc.stdout is not None
        first = alloc.stdout.readline().split()
        if not first or first[0] != "ctx":
            print(f"allocator failed to create a CUDA context: {first}")
            return 2
        pid, uuid = int(first[1]), first[2]
        gpu = gpu_in(state, uuid)
        smoke.check("allocator's GPU is published", gpu is not None, f"uuid={uuid}")
        if gpu is None:
            return 1
        time.sleep(2 * args.interval + 0.5)  # let the context's own memory show up before the baseline
        base = gpu_in(host_state(rport, prefix) or {}, uuid) or gpu
        base_metrics = metric_used(http_get(f"http://127.0.0.1:{ops_port}/metrics"), uuid, base.get("index"))
        print(
            f"baseline: published used={base['memory_used_bytes'] / MiB:.0f} MiB, "
            f"metrics used={(base_metrics or 0) / MiB:.0f} MiB, total={base['memory_total_bytes'] / MiB:.0f} MiB"
        )

        alloc.stdin.write(f"alloc {args.alloc_mib}\n")
        alloc.stdin.flush()
        if alloc.stdout.readline().strip() != f"allocated {args.alloc_mib}":
            print("allocation failed")
            return 1
        lo, hi = (args.alloc_mib - args.tolerance_mib) * MiB, (args.alloc_mib + args.tolerance_mib) * MiB

        def published_delta() -> float | None:
            g = gpu_in(host_state(rport, prefix) or {}, uuid)
            d = g["memory_used_bytes"] - base["memory_used_bytes"] if g else None
            return d if d is not None and lo <= d <= hi else None

        delta = wait_for(published_delta, args.timeout)
        g_now = gpu_in(host_state(rport, prefix) or {}, uuid) or {}
        seen = g_now.get("memory_used_bytes", 0) - base["memory_used_bytes"]
        smoke.check(
            "Redis HostStateV1 used memory rose by the allocation",
            delta is not None,
            f"+{seen / MiB:.0f} MiB (want {args.alloc_mib} ± {args.tolerance_mib})",
        )
        text = http_get(f"http://127.0.0.1:{ops_port}/metrics")
        now_metrics = metric_used(text, uuid, g_now.get("index"))
        if base_metrics is None or now_metrics is None:
            smoke.check("/metrics gpu memory used", False, "no turnout_gpu_memory_used_bytes sample for the GPU")
        else:
            md = now_metrics - base_metrics
            smoke.check(
                "/metrics used memory rose by the allocation",
                lo <= md <= hi,
                f"+{md / MiB:.0f} MiB (want {args.alloc_mib} ± {args.tolerance_mib})",
            )
        found, mib, listed = nvml_process_mib(uuid, pid)
        if found:
            smoke.check(
                "NVML lists the allocating pid",
                mib >= args.alloc_mib - args.tolerance_mib,
                f"pid {pid} uses {mib:.0f} MiB",
            )
        elif in_child_pid_namespace() and any(m >= args.alloc_mib for _, m in listed):
            smoke.check(
                "NVML lists the allocating process",
                True,
                f"pid namespace: NVML shows host pids {listed}; one holds >= {args.alloc_mib} MiB",
            )
        else:
            smoke.check("NVML lists the allocating pid", False, f"pid {pid} not in {listed}")

        alloc.stdin.write("free\n")
        alloc.stdin.flush()
        alloc.stdout.readline()

        def released() -> bool:
            g = gpu_in(host_state(rport, prefix) or {}, uuid)
            return g is not None and g["memory_used_bytes"] - base["memory_used_bytes"] < args.tolerance_mib * MiB

        smoke.check("published used memory drops after cudaFree", bool(wait_for(released, args.timeout)), "")
        return 0 if all(c.ok for c in smoke.checks) else 1
    finally:
        smoke.stop_all()
        summary = {
            "ok": all(c.ok for c in smoke.checks) and bool(smoke.checks),
            "checks": [c.__dict__ for c in smoke.checks],
            "work_dir": str(work),
        }
        agent_log_path = work / "agent.log"
        if agent_log_path.exists() and not summary["ok"]:
            print("--- agent log (tail) ---\n" + agent_log_path.read_text()[-3000:])
        print(json.dumps(summary))


def _pong(port: int) -> bool:
    try:
        return bool(redis_cmd(port, "PING") == "PONG")
    except OSError:
        return False


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--allocate", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--device", type=int, default=0, help="CUDA device ordinal to allocate on")
    p.add_argument("--alloc-mib", type=int, default=4096)
    p.add_argument("--tolerance-mib", type=int, default=256)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--interval", type=float, default=1.0, help="agent publish interval (s)")
    p.add_argument("--redis-server", default=os.environ.get("REDIS_SERVER"))
    p.add_argument("--ops-port-env", default="TURNOUT_GPU_AGENT__OPS_PORT")
    p.add_argument("--interval-env", default="TURNOUT_GPU_AGENT__INTERVAL_S")
    p.add_argument("--host-env", default="TURNOUT_GPU_AGENT__HOST")
    p.add_argument("--agent-env", action="append", default=[], metavar="KEY=VALUE", help="extra agent env")
    args = p.parse_args()
    if args.allocate:
        allocate(args.device)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
