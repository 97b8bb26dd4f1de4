# Source me (bash) at the top of a GPU step: sets PY, OUT and the import path.
#   On the GPU machine: python3, with what install_wheels.sh provides (NERLAB_WHEELS: install | stash).
#   With SMOKE=--smoke (a CPU rehearsal here): the project's .venv, nothing installed, OUT under runs/.
# Also: run_limited SECONDS CMD... runs CMD under `timeout` so one hung part cannot eat the call's limit.
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if [ -n "${SMOKE:-}" ]; then
  PY=${NERLAB_PY:-$PWD/.venv/bin/python}
  OUT=${OUT:-runs/gpu-proof-smoke/$STEP}
else
  PY=${NERLAB_PY:-python3}
  NERLAB_PY=$PY
  OUT=${OUT:-runs/gpu-proof/$STEP}
  . scripts/gpu/install_wheels.sh || { rc=$?; echo "$STEP: the wheels are not ready (exit $rc)" >&2; exit $rc; }
  nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu,clocks.sm --format=csv || true
fi
export OUT PY
mkdir -p "$OUT"

run_limited() {
  local limit=$1; shift
  timeout --kill-after=15 "$limit" "$@"
  local rc=$?
  [ $rc -eq 124 ] && echo "$STEP: '$*' stopped at its ${limit} s limit" >&2
  return $rc
}
