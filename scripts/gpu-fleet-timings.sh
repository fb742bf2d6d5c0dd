#!/usr/bin/env bash
# Issue 17, item 5 on the device machine (H100), offline: three CUDA llama.cpp servers with
# random-weight GGUFs of different sizes (1B, 3B, 8B q4_0, written there in about a minute), their load
# and unload times, memory and speed measured through the gpu-agent (NVML), alone and all three
# at once: bench/llama_timings.py with --server-bin. The timings come back as $OUT/timings.json;
# the fleet bench then runs here with them (it is a simulation in virtual time, no GPU needed):
#   .venv/bin/python bench/fleet.py --timings <files_at>/timings.json
# Carried: .run/gpucarry (llama.cpp's source, SmolLM2's tokenizer alone, redis-server) and .whl/
# (wheels for the device's python3), both made by scripts/gpu-fleet-timings-bundle.sh (~48 MiB). Call:
#   run(carry=[".run/gpucarry", ".whl"], command="bash scripts/gpu-fleet-timings.sh")
# Like gpu-llama-smoke.sh it exits 75 while the CUDA build runs: call again.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/llama-cuda-build.sh  # C, W, say(); SERVER built (or exit 75)
if [[ ! -d /tmp/site/numpy ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
fi
export PYTHONPATH=/tmp/site:libs/common/src:services/gpu-agent/src:services/scorer/src:tools/llamafleet/src
say "nvidia-smi"
nvidia-smi --query-gpu=index,name,driver_version,memory.total,memory.used --format=csv,noheader
say "bench/llama_timings.py"
python3 bench/llama_timings.py --server-bin "$SERVER" --ngl 99 --threads 8 --ctx 4096 \
  --sizes "${SIZES:-1b,3b,8b}" --repeats "${REPEATS:-2}" --tokens 128 --prompt-words 1000 \
  --tokenizer "$C/tokenizer.gguf" --redis-server "$C/redis-server" --out "${OUT:-$W}/timings.json" "$@"
