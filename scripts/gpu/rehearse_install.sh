#!/usr/bin/env bash
# Rehearse here, with a Python 3.12 (default: pyenv's), what the GPU machine does with the wheel sets:
# call 1 keeps set 1 (NERLAB_WHEELS=stash), call 2 brings set 2, joins ray's parts, installs everything
# offline into a fresh folder, and preflight.py imports ray/mlflow/optuna/seqeval and boots a local Ray
# with its dashboard and an `mlflow server`. The image's own packages (numpy, pandas, pyarrow, ...) are
# stood in for by the cache's wheels of them; torch is absent, so nerlab's torch modules are not imported.
# Needs .gpu-wheels/ from pack_wheels.py. About a minute. Usage: bash scripts/gpu/rehearse_install.sh [PY312]
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${1:-$(ls -d /root/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null | head -1)}
[ -x "$PY" ] || { echo "rehearse_install: give a Python 3.12 interpreter" >&2; exit 2; }
R=$(mktemp -d /tmp/nerlab-rehearse-XXXX)
image=$("$PY" - <<'PYEOF'
import re, pathlib
names = {re.sub(r"[-_.]+", "-", l.split("#")[0].split("==")[0].strip().lower())
         for l in open("scripts/gpu/image_packages.txt") if l.split("#")[0].strip()}
print(" ".join(str(w) for w in sorted(pathlib.Path(".gpu-wheels/cache").glob("*.whl"))
               if re.sub(r"[-_.]+", "-", w.name.split("-")[0].lower()) in names))
PYEOF
)
"$PY" -m pip install -q --isolated --no-index --no-deps --target "$R/image" $image
export NERLAB_PY=$PY NERLAB_SITE=$R/site NERLAB_WHEEL_STORE=$R/store PYTHONPATH=$R/image OUT=$R
echo "== call 1: stash set 1"
(NERLAB_WHEELS=stash NERLAB_CARRIED=.gpu-wheels/set1; . scripts/gpu/install_wheels.sh)
echo "== call 2: set 2, join, install, preflight --boot"
(NERLAB_CARRIED=.gpu-wheels/set2 NERLAB_PREFLIGHT_ARGS=--boot; . scripts/gpu/install_wheels.sh)
echo "rehearse_install: ok ($R)"
