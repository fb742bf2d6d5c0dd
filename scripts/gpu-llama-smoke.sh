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
source scripts/llama-cuda-build.sh  # C, W, say(); SERVER built (or exit 75)
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
