#!/usr/bin/env bash
# A CUDA llama.cpp server with a real GGUF on the GPU, seen by the gpu-agent (NVML): on the device
# machine (H100) through the `device` tool, offline. Idempotent: the first call unpacks and starts
# the CUDA build in the background (setsid, survives between calls while the machine stays warm) and
# waits up to BUILD_WAIT seconds; exit 75 = the build is still running, call again.
# Then scripts/gpu_llama_smoke.py: private redis + gpu-agent + llama-server -ngl 99 + chat + VRAM.
# Carried (made here, git-ignored): .run/gpucarry/llama-src.tar.xz (pruned llama.cpp source, no
# models/docs/tests), .run/gpucarry/*.gguf (e.g. a random-weight q4_0 llama from
# turnout.llamafleet.models with SmolLM2's tokenizer), .run/gpucarry/redis-server (+ redis/),
# .whl/ (cp312 wheels for the agent). Call: run(carry=[".run/gpucarry", ".whl"],
#   command="bash scripts/gpu-llama-smoke.sh")
set -uo pipefail
cd "$(dirname "$0")/.."
C=${GPUCARRY:-.run/gpucarry}
W=${LLAMA_GPU_WORK:-/tmp/sy-llama-gpu}
BUILD_WAIT=${BUILD_WAIT:-480}
JOBS=${JOBS:-$(nproc)}
mkdir -p "$W"
export PYTHONUNBUFFERED=1
say() { echo "=== $(date -u +%T) $*"; }

SERVER="$W/src/build/bin/llama-server"
if [[ ! -x "$SERVER" ]]; then
  if [[ ! -f "$W/build.started" ]]; then
    say "unpack + start CUDA build (jobs=$JOBS)"
    nvcc --version | tail -2; cmake --version | head -1
    rm -rf "$W/src" && mkdir -p "$W/src" && tar -xJf "$C/llama-src.tar.xz" -C "$W/src" || exit 3
    date +%s > "$W/build.started"
    setsid bash -c "cd '$W/src' && cmake -B build -G Ninja -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
      -DGGML_CUDA_FA=${GGML_CUDA_FA:-OFF} -DGGML_NCCL=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_SERVER=ON \
      -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DCMAKE_BUILD_TYPE=Release >'$W/build.log' 2>&1 \
      && cmake --build build -j$JOBS --target llama-server >>'$W/build.log' 2>&1; echo \$? >'$W/build.rc'" \
      </dev/null >/dev/null 2>&1 &
  fi
  end=$(( $(date +%s) + BUILD_WAIT ))
  while [[ ! -f "$W/build.rc" && $(date +%s) -lt $end ]]; do
    sleep 20; echo "  build $(( $(date +%s) - $(cat "$W/build.started") )) s: $(tail -c 300 "$W/build.log" | tr '\r' '\n' | grep -v '^$' | tail -1 | cut -c1-150)"
  done
  if [[ ! -f "$W/build.rc" ]]; then say "build still running; call again"; exit 75; fi
  rc=$(cat "$W/build.rc")
  say "build finished rc=$rc in $(( $(stat -c %Y "$W/build.rc") - $(cat "$W/build.started") )) s"
  if [[ "$rc" != 0 ]]; then grep -n -i -E "error|fatal" "$W/build.log" | head -30; tail -40 "$W/build.log"; exit 1; fi
fi
ls -la "$SERVER"; "$SERVER" --version 2>&1 | tail -3

if [[ ! -d /tmp/site/pydantic ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
fi
export PYTHONPATH=/tmp/site:$PWD/$C/pyextra:libs/common/src:services/gpu-agent/src
MODEL=${MODEL:-$(ls "$C"/*.gguf | head -1)}
say "nvidia-smi (before)"
nvidia-smi --query-gpu=index,uuid,name,driver_version,memory.total,memory.used --format=csv,noheader
say "NVML reader (before): python -m turnout.gpu_agent.nvml"
python3 -m turnout.gpu_agent.nvml | head -c 1500; echo
say "gpu_llama_smoke.py"
python3 scripts/gpu_llama_smoke.py --server "$SERVER" --model "$MODEL" --redis-server "$C/redis-server" "$@"
rc=$?
[[ -n "${OUT:-}" ]] && cp "$W/build.log" "$OUT/build.log" 2>/dev/null
exit $rc
