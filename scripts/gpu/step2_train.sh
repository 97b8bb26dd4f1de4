#!/usr/bin/env bash
# GPU proof, step 2 of 3: install the carried wheels (ray, mlflow, optuna, seqeval), then `nerlab train`
# of scripts/gpu/gpu-train.yaml on one GPU worker (Ray Train, nccl, bf16) and its checks (train_check.py):
# the MLflow run complete, the saved model scoring the logged test F1, tokens/s of the Ray loop vs the
# plain loop on the same model.
#   device call, right after step 1 (the machine keeps set 1 for 30 s after a call):
#     command "bash scripts/gpu/step2_train.sh", carry [".gpu-wheels/set2"], timeout_s 240
#   If the machine was given back in between, this exits 3 within seconds, naming the set to carry first.
#   CPU rehearsal: bash scripts/gpu/step2_train.sh --smoke
# Output in $OUT: gpu_train.json, step2-train.log (the train command's output), step2.log, preflight.json.
set -uo pipefail
cd "$(dirname "$0")/../.."
STEP=step2 SMOKE=$([ "${1:-}" = "--smoke" ] && echo --smoke)
. scripts/gpu/env.sh
run_limited 200 "$PY" scripts/gpu/train_check.py $SMOKE --out "$OUT" 2>&1 | tee "$OUT/step2.log"
