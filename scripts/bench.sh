#!/usr/bin/env bash
# Run every benchmark (figures into tests/benchmarks/results/*.json), then regenerate README's table.
# On a machine with a CUDA GPU the GPU benchmark runs too. `--smoke` checks the scripts in a few minutes
# (its figures go to a temporary folder and README is left alone).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
B=tests/benchmarks
if [ "${1:-}" = "--smoke" ]; then
  R=$(mktemp -d)
  python $B/bench_batching.py --smoke --json "$R/batching.json"
  python $B/bench_train_loop.py --smoke --json "$R/train_loop.json"
  python $B/bench_cpu.py --smoke --json "$R/cpu.json"
  python $B/bench_predict.py --smoke --json "$R/predict.json"
  python $B/bench_serve.py --smoke --json "$R/serve.json"
  python $B/bench_epoch_breakdown.py --smoke --json "$R/epoch_breakdown.json"
  python $B/bench_precision_quality.py --smoke --seeds 1 --tasks nested --json "$R/precision_quality.json"
  python $B/bench_study.py --smoke --json "$R/study.json"
  python $B/bench_trial_timeline.py --smoke --json "$R/trial_timeline.json"
  python $B/bench_many_trials.py --smoke --json "$R/many_trials.json"
  python $B/bench_search_growth.py --smoke --json "$R/search_growth.json"
  python $B/bench_results_scale.py --smoke --json "$R/results_scale.json"
  python $B/bench_seed_recipe.py --smoke --json "$R/seed_recipe.json"
  python $B/bench_waits.py --smoke --json "$R/waits.json"
  python $B/bench_tracking_load.py --loggers 4 --batches 5 --json "$R/tracking_load.json"
  python $B/bench_gpu.py --smoke --json "$R/gpu-smoke.json"
  python $B/bench_gpu_memory.py --smoke --json "$R/gpu-memory-smoke.json"
  python $B/table.py --results "$R" --print
  exit 0
fi
R=$B/results
mkdir -p "$R"
python $B/bench_batching.py --json "$R/batching.json"
python $B/bench_train_loop.py --json "$R/train_loop.json"
python $B/bench_cpu.py --json "$R/cpu.json"
python $B/bench_predict.py --json "$R/predict.json"
python $B/bench_serve.py --json "$R/serve.json"
python $B/bench_epoch_breakdown.py --json "$R/epoch_breakdown.json"
python $B/bench_precision_quality.py --seeds 3407 1 2 3 4 --json "$R/precision_quality.json"
python $B/bench_study.py --json "$R/study.json"
python $B/bench_trial_timeline.py --json "$R/trial_timeline.json"
python $B/bench_many_trials.py --json "$R/many_trials.json"
python $B/bench_search_growth.py --seeds 1 2 3 4 5 6 7 8 --json "$R/search_growth.json"
# before/after figures: add --compare DIR, DIR/nerlab holding `git archive` of the commit to compare with
python $B/bench_results_scale.py --json "$R/results_scale.json"
python $B/bench_seed_recipe.py --json "$R/seed_recipe.json"
python $B/bench_waits.py --json "$R/waits.json"
python $B/bench_tracking_load.py --json "$R/tracking_load.json"
if python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  python $B/bench_gpu.py --json "$R/gpu.json"
  python $B/bench_gpu.py --variants as-written fused-adamw pinned-prefetch fast eager-attention random-batches \
    compile fast-compile --json "$R/gpu_variants.json"
  python $B/bench_gpu_memory.py --json "$R/gpu_memory.json"
fi
python $B/table.py
