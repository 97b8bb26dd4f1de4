#!/usr/bin/env bash
# GPU proof, step 3 of 3: scripts/gpu/gpu-study.yaml, 4 trials sharing the GPU at 0.25 each and all at
# once, then the same 4 trials one after another; nvidia-smi sampled every second (study_check.py).
#   device call, after step 2 while the machine is warm (the wheels are installed already):
#     command "bash scripts/gpu/step3_shared_gpu_study.sh", timeout_s 300
#   On a fresh machine: carry set 1 with step 1 (or any call), then this call with carry [".gpu-wheels/set2"].
#   CPU rehearsal: bash scripts/gpu/step3_shared_gpu_study.sh --smoke   (2 tiny trials, 2 at once vs 1)
# Output in $OUT: gpu_study.json, nvidia-smi.csv, step3-study.log (the studies' output), step3.log.
set -uo pipefail
cd "$(dirname "$0")/../.."
STEP=step3 SMOKE=$([ "${1:-}" = "--smoke" ] && echo --smoke)
. scripts/gpu/env.sh
# The serial study runs only if it would end within the budget (on the CPU it is slower: a larger one).
BUDGET=$([ -n "$SMOKE" ] && echo 600 || echo 240)
run_limited $((BUDGET + 30)) "$PY" scripts/gpu/study_check.py $SMOKE --out "$OUT" --budget-s "$BUDGET" 2>&1 \
  | tee "$OUT/step3.log"
