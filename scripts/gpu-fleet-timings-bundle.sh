#!/usr/bin/env bash
# Build, on this machine, what scripts/gpu-fleet-timings.sh needs on a device machine that cannot
# download anything (issue 17, item 5):
#   .run/gpucarry/llama-src.tar.xz  llama.cpp's source, from the llama-cpp-python sdist the CPU
#                                   wheel is built from (models, docs, tests, benches pruned)
#   .run/gpucarry/tokenizer.gguf    SmolLM2's tokenizer alone (bench/llama_timings.py --write-tokenizer)
#   .run/gpucarry/redis-server      a wrapper running redis/bin/redis-server with its libraries (redis/lib)
#   .whl/                           wheels for the device's Python (PY_VERSION, default 3.12: the
#                                   version the device's python3 had), at this venv's versions: what
#                                   the gpu-agent and bench/llama_timings.py import
# Then: run(carry=[".run/gpucarry", ".whl"], command="bash scripts/gpu-fleet-timings.sh").
# The device tool carries at most 64 MiB: the total is printed.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
C=.run/gpucarry
PY_VERSION=${PY_VERSION:-3.12}
LLAMA_CPP_PYTHON=${LLAMA_CPP_PYTHON:-0.3.36}
mkdir -p "$C" .run/wheels
rm -rf .whl "$C/redis" && mkdir -p .whl "$C/redis/bin" "$C/redis/lib"

sdist=$(ls .run/wheels/llama_cpp_python-"$LLAMA_CPP_PYTHON".tar.gz 2>/dev/null || true)
if [[ -z "$sdist" ]]; then
  python3 -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$LLAMA_CPP_PYTHON" -d .run/wheels
  sdist=.run/wheels/llama_cpp_python-"$LLAMA_CPP_PYTHON".tar.gz
fi
top="llama_cpp_python-$LLAMA_CPP_PYTHON/vendor/llama.cpp"
tmp=$(mktemp -d)
tar -xzf "$sdist" -C "$tmp" "$top"
tar -C "$tmp/$top" -cJf "$C/llama-src.tar.xz" --exclude=./models --exclude=./docs --exclude=./tests \
  --exclude=./benches --exclude=./media --exclude=./build .
rm -rf "$tmp"

.venv/bin/python bench/llama_timings.py --write-tokenizer "$C/tokenizer.gguf"

RS="$(readlink -f "$(command -v redis-server)")"
cp "$RS" "$C/redis/bin/redis-server"
ldd "$RS" | awk '/=> \// {print $3}' | grep -vE '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*)\.so' | while read -r lib; do
  cp -L "$lib" "$C/redis/lib/"
done
cat > "$C/redis-server" <<'SH'
#!/bin/sh
d=$(cd "$(dirname "$0")" && pwd)
LD_LIBRARY_PATH="$d/redis/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$d/redis/bin/redis-server" "$@"
SH
chmod +x "$C/redis-server"

pins=$(.venv/bin/python - <<'PY'
import importlib.metadata as m
top = ["pydantic", "pydantic-settings", "orjson", "redis", "hiredis", "aiohttp", "prometheus-client", "pyyaml",
       "nvidia-ml-py", "numpy", "gguf", "httpx"]
print(" ".join(f"{p}=={m.version(p)}" for p in top))
PY
)
# shellcheck disable=SC2086
python3 -m pip download -q --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d .whl $pins
du -sh "$C" .whl
du -cb "$C"/* "$C"/redis/*/* .whl/* | tail -1 | awk '{printf "carry: %.1f MiB (limit 64)\n", $1 / 1048576}'
