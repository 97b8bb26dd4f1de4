#!/usr/bin/env bash
# GPU proof, step 1 of 3: bench_gpu.py as written (bf16 vs fp32 TF32 off, MFU, batch 16 and 64), each
# speed-up setting's effect, and peak memory per trial + the largest bf16 batch. Needs no wheels; it
# keeps the carried wheel set 1 on the machine for step 2.
#   device call: command "bash scripts/gpu/step1_bench.sh", carry [".gpu-wheels/set1"], timeout_s 360
#   (each part stops starting measurements at its deadline and is killed at its limit, 330 s in all;
#   about 4 min expected). A part cut short keeps what it measured; rerun one part alone with its line.
#   CPU rehearsal: bash scripts/gpu/step1_bench.sh --smoke   (tiny configs; OUT=runs/gpu-proof-smoke/step1)
# Output in $OUT: gpu.json (README's table reads it as tests/benchmarks/results/gpu.json),
# gpu_variants.json, gpu_memory.json, step1.log. Then, here: copy the JSON files of all three steps into
# tests/benchmarks/results/ and run tests/benchmarks/table.py (README's table).
set -uo pipefail
cd "$(dirname "$0")/../.."
STEP=step1 SMOKE=$([ "${1:-}" = "--smoke" ] && echo --smoke)
NERLAB_WHEELS=stash
. scripts/gpu/env.sh
B=tests/benchmarks
{
  rc=0
  echo "== as written: bf16 vs fp32, batch 16 and 64"
  run_limited 90 "$PY" $B/bench_gpu.py $SMOKE --json "$OUT/gpu.json" --deadline-s 60 || rc=1
  echo "== peak memory per trial (batch 16 x 512) and the largest bf16 batch"
  run_limited 100 "$PY" $B/bench_gpu_memory.py $SMOKE --json "$OUT/gpu_memory.json" --deadline-s 60 || rc=1
  echo "== speed-ups, bf16 (each against as-written; compile last: it compiles for about a minute)"
  run_limited 140 "$PY" $B/bench_gpu.py $SMOKE --json "$OUT/gpu_variants.json" --deadline-s 80 \
    --variants as-written fused-adamw pinned-prefetch fast eager-attention random-batches compile fast-compile \
    || rc=1
  exit $rc
} 2>&1 | tee "$OUT/step1.log. Then, here: cp the JSON files into tests/benchmarks/results/ and run tests/benchmarks/table.py.
