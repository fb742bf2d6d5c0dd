#!/usr/bin/env bash
# GPU smoke test on a machine with an NVIDIA GPU: the gpu-agent (NVML) publishes a known
# allocation to Redis and /metrics. Works offline: what it needs can be carried in .run/carry
# (built here by scripts/gpu-smoke-bundle.sh):
#   .run/carry/site/           pure-Python + cp311 wheels unpacked (nvidia-ml-py, redis, pydantic,
#                              pydantic-core, pydantic-settings, python-dotenv, orjson, aiohttp + deps,
#                              prometheus-client, typing-extensions, annotated-types, typing-inspection, pyyaml, pyjwt)
#   .run/carry/redis/bin/redis-server + .run/carry/redis/lib/*.so*   (its non-libc shared libraries)
# Usage: scripts/gpu-smoke.sh [--alloc-mib 4096] [--tolerance-mib 256] [--device 0] …
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CARRY="$REPO/.run/carry"

if [[ -n "${PYTHON:-}" ]]; then
  PY="$PYTHON"
elif [[ -x "$REPO/.venv/bin/python" ]] && "$REPO/.venv/bin/python" -c 'import pynvml, redis, pydantic' 2>/dev/null; then
  PY="$REPO/.venv/bin/python"
else
  PY=python3
fi
SRC="$REPO/libs/common/src:$REPO/services/gpu-agent/src"
export PYTHONPATH="$SRC${CARRY:+:$CARRY/site}${PYTHONPATH:+:$PYTHONPATH}"

if [[ -z "${REDIS_SERVER:-}" ]]; then
  if command -v redis-server >/dev/null 2>&1; then
    REDIS_SERVER="$(command -v redis-server)"
  elif [[ -x "$CARRY/redis/bin/redis-server" ]]; then
    REDIS_SERVER="$CARRY/redis/bin/redis-server"
    export LD_LIBRARY_PATH="$CARRY/redis/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  else
    echo "gpu-smoke: no redis-server on PATH and none carried in $CARRY/redis (run scripts/gpu-smoke-bundle.sh)" >&2
    exit 2
  fi
fi
export REDIS_SERVER

echo "gpu-smoke: python $("$PY" -c 'import sys; print(sys.version.split()[0])') ($PY), redis-server $REDIS_SERVER"
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used --format=csv,noheader || true
if ! "$PY" -c 'import pynvml, redis, pydantic, pydantic_settings, orjson, aiohttp, prometheus_client' 2>/tmp/gpu-smoke-imports.txt; then
  echo "gpu-smoke: missing Python packages (carry them in $CARRY/site):" >&2
  cat /tmp/gpu-smoke-imports.txt >&2
  exit 2
fi
exec "$PY" "$REPO/scripts/gpu_smoke.py" "$@"
