#!/usr/bin/env bash
# Set up, then run the tests.
#   bash scripts/test.sh           every test: unit, real Ray and MLflow integration, every experiment spec in
#                                  smoke mode (about 16 minutes on 2 cores)
#   bash scripts/test.sh --fast    only what starts no Ray and trains no model (tests not marked slow; about a
#                                  minute): run it after every change, the full set before a merge
# Further arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
marker=()
if [ "${1:-}" = "--fast" ]; then
  marker=(-m "not slow")
  shift
fi
[ -n "${NERLAB_SETUP_DONE:-}" ] || bash scripts/setup.sh  # .ci/run has just run it
. .venv/bin/activate
export RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=0 PYTHONUNBUFFERED=1
python -m pytest tests -q --durations=30 "${marker[@]}" "$@"
