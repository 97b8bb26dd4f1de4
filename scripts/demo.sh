#!/usr/bin/env bash
# Set up, then run the main job: the demo study (local Ray, SQLite MLflow store, built-in demo data).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
nerlab study run experiments/demo.yaml "$@"
echo "Browse the study: .venv/bin/nerlab ui runs/demo   (MLflow UI on http://127.0.0.1:5000)"
