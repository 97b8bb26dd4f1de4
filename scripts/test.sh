#!/usr/bin/env bash
# Set up, then run every test (unit, real Ray and MLflow integration, every experiment spec in smoke mode).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${NERLAB_SETUP_DONE:-}" ] || bash scripts/setup.sh  # .ci/run has just run it
. .venv/bin/activate
export RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=0 PYTHONUNBUFFERED=1
python -m pytest tests -q "$@"
