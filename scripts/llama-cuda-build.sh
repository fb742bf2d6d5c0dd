# Sourced by scripts/gpu-llama-smoke.sh and scripts/gpu-fleet-timings.sh on the device machine:
# unpacks .run/gpucarry/llama-src.tar.xz and builds llama.cpp's llama-server with CUDA (sm_90) in
# the background (setsid: it survives between calls while the machine stays warm), waiting up to
# BUILD_WAIT seconds. Sets SERVER; exits 75 while the build is still running (call again).
# Sets C (the carried folder, GPUCARRY), W (the work folder, LLAMA_GPU_WORK) and say() for the caller.
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
