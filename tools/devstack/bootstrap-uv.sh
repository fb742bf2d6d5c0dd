#!/usr/bin/env bash
# Make `uv` available for `make install` on a machine that has only python3.
# Prints the path of the uv binary to use on stdout; progress goes to stderr.
set -euo pipefail

python="${PYTHON:-python3}"
tools_dir="${UV_TOOLS_DIR:-.run/tools}"

if command -v uv >/dev/null 2>&1; then
  command -v uv
  exit 0
fi
if [ -x "$tools_dir/bin/uv" ]; then
  echo "$tools_dir/bin/uv"
  exit 0
fi
if ! command -v "$python" >/dev/null 2>&1; then
  echo "bootstrap: $python not found; install Python 3.11 or newer" >&2
  exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "bootstrap: $python is $("$python" -V 2>&1); Turnout needs Python 3.11 or newer" >&2
  exit 1
fi

echo "bootstrap: installing uv into $tools_dir ..." >&2
mkdir -p "$(dirname "$tools_dir")"
if ! "$python" -m venv "$tools_dir" >/dev/null 2>&1; then
  # Debian's python3 ships without ensurepip until python3-venv is installed.
  rm -rf "$tools_dir"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    ver="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    echo "bootstrap: installing python3-venv with apt-get ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "python${ver}-venv" >&2 \
      || apt-get install -y -qq --no-install-recommends python3-venv >&2
    "$python" -m venv "$tools_dir" >&2
  else
    echo "bootstrap: '$python -m venv' does not work here (on Debian/Ubuntu: apt-get install python3-venv)," >&2
    echo "           or install uv yourself: https://docs.astral.sh/uv/getting-started/installation/" >&2
    exit 1
  fi
fi
"$tools_dir/bin/python" -m pip install --quiet --disable-pip-version-check uv >&2
echo "$tools_dir/bin/uv"
