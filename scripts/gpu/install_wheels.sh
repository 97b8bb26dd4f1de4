# Source me (bash), from the repository root: make ray, mlflow, optuna, seqeval and nerlab importable on
# the GPU machine, whose image has torch and transformers but none of these (and no network).
#
# NERLAB_WHEELS=install (default): join the carried wheel sets (scripts/gpu/join_wheels.py; the sets of
#   earlier calls wait in $NERLAB_WHEEL_STORE while the machine stays warm), install them with pip, offline
#   and without resolving, into $NERLAB_SITE, and run preflight.py. Idempotent. Returns 3 if a set is
#   missing: the message names the set(s) to carry, one call each, back to back.
# NERLAB_WHEELS=stash: only keep this call's set for a later call (step 1 carries set 1 for step 2).
# Both: nerlab's folders are linked into $NERLAB_SITE as the package `nerlab` (no build step) and
# PYTHONPATH points there. NERLAB_PY: the interpreter (python3). NERLAB_CARRIED: the set folders this
# call brought (default: every .gpu-wheels/set*; rehearse_install.sh names one per simulated call).

NERLAB_PY=${NERLAB_PY:-python3}
NERLAB_SITE=${NERLAB_SITE:-/tmp/site}
NERLAB_WHEEL_STORE=${NERLAB_WHEEL_STORE:-/tmp/nerlab-wheels}
export NERLAB_WHEEL_STORE

nerlab_install_wheels() {
  local joined
  joined=$("$NERLAB_PY" scripts/gpu/join_wheels.py "$NERLAB_WHEEL_STORE" ${NERLAB_CARRIED:-.gpu-wheels/set*}) || return 3
  local stamp
  stamp="$NERLAB_SITE/.nerlab-wheels-$(sha256sum "$NERLAB_WHEEL_STORE/parts/MANIFEST.json" | cut -c1-12)"
  if [ ! -e "$stamp" ]; then
    "$NERLAB_PY" -m pip install -q --isolated --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$NERLAB_SITE" "$joined"/*.whl || return 1
    touch "$stamp"
  fi
}

nerlab_link_package() {
  mkdir -p "$NERLAB_SITE/nerlab"
  local d
  for d in models losses platform dashboards; do
    ln -sfn "$PWD/$d" "$NERLAB_SITE/nerlab/$d"
  done
}

if [ "${NERLAB_WHEELS:-install}" = stash ]; then
  "$NERLAB_PY" scripts/gpu/join_wheels.py "$NERLAB_WHEEL_STORE" ${NERLAB_CARRIED:-.gpu-wheels/set*} >/dev/null 2>&1 || true
  echo "install_wheels: sets kept in $NERLAB_WHEEL_STORE: $(ls "$NERLAB_WHEEL_STORE/parts" 2>/dev/null | wc -l) files"
else
  nerlab_install_wheels || return $?
fi
nerlab_link_package
export PYTHONPATH="$NERLAB_SITE${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$NERLAB_SITE/bin:$PATH"
if [ "${NERLAB_WHEELS:-install}" != stash ]; then
  "$NERLAB_PY" scripts/gpu/preflight.py ${NERLAB_PREFLIGHT_ARGS:-} || return $?
fi
