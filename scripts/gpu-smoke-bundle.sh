#!/usr/bin/env bash
# Build .run/carry for scripts/gpu-smoke.sh on a machine that cannot download anything: the
# packages the agent imports, copied from this checkout's .venv (CPython 3.11, x86_64 glibc),
# and redis-server with its non-libc shared libraries. About 30 MB; pass `.run/carry` in the
# device tool's `carry`. The target needs the same Python minor version (3.11) for the compiled
# wheels (pydantic-core, orjson, aiohttp, multidict, yarl, frozenlist, propcache, pyyaml).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SITE_SRC="$(ls -d "$REPO"/.venv/lib/python3*/site-packages | head -1)"
OUT="$REPO/.run/carry"
rm -rf "$OUT"; mkdir -p "$OUT/site" "$OUT/redis/bin" "$OUT/redis/lib"
PKGS=(pynvml.py redis pydantic pydantic_core pydantic_settings dotenv orjson aiohttp multidict yarl frozenlist
      aiosignal propcache attr attrs aiohappyeyeballs prometheus_client typing_extensions.py annotated_types
      typing_inspection yaml _yaml idna jwt)
for p in "${PKGS[@]}"; do
  if [[ -e "$SITE_SRC/$p" ]]; then cp -a "$SITE_SRC/$p" "$OUT/site/"; else echo "bundle: $p not in $SITE_SRC (skipped)"; fi
done
# redis-py needs async-timeout on Python < 3.11.3 (Debian 12's python3 is 3.11.2); our venv is newer
# and lacks it: fetch that one pure-Python wheel with pip (once, cached in .run/wheels).
WHEELS="$REPO/.run/wheels"
if ! ls "$WHEELS"/async_timeout-*.whl >/dev/null 2>&1; then
  python3 -m pip download --no-deps --only-binary=:all: "async-timeout>=4.0.3" -d "$WHEELS" >/dev/null
fi
python3 -m zipfile -e "$(ls "$WHEELS"/async_timeout-*.whl | head -1)" "$OUT/site"
find "$OUT/site" -name '__pycache__' -prune -exec rm -rf {} +
RS="$(readlink -f "$(command -v redis-server)")"
cp "$RS" "$OUT/redis/bin/redis-server"
ldd "$RS" | awk '/=> \// {print $3}' | grep -vE '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*)\.so' | while read -r lib; do
  cp -L "$lib" "$OUT/redis/lib/"
done
du -sh "$OUT"
