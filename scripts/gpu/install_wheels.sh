# Source me (bash), from the repository root: make ray, mlflow, optuna, seqeval and nerlab importable.
#
# On the GPU machine: joins the carried wheel sets (scripts/gpu/join_wheels.py), installs them with pip,
# offline and without dependency resolution, into $NERLAB_SITE (default /tmp/site), maps nerlab's folders
# into it as the package `nerlab` (symbolic links: no build step; the image has no nerlab), exports
# PYTHONPATH and runs preflight.py. Idempotent: a second call in the same machine reinstalls nothing.
# Sets: NERLAB_PY (the interpreter, default python3), NERLAB_SITE, NERLAB_WHEEL_STORE (/tmp/nerlab-wheels).
# Returns 3 if wheel sets are missing (the message names which to carry).

NERLAB_PY=${NERLAB_PY:-python3}
NERLAB_SITE=${NERLAB_SITE:-/tmp/site}
NERLAB_WHEEL_STORE=${NERLAB_WHEEL_STORE:-/tmp/nerlab-wheels}

nerlab_install_wheels() {
  local joined
  joined=$("$NERLAB_PY" scripts/gpu/join_wheels.py "$NERLAB_WHEEL_STORE" .gpu-wheels/set*) || return 3
  local stamp="$NERLAB_SITE/.nerlab-wheels-$(sha256sum "$NERLAB_WHEEL_STORE/parts/MANIFEST.json" | cut -c1-12)"
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

nerlab_install_wheels || return $?
nerlab_link_package
export PYTHONPATH="$NERLAB_SITE${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$NERLAB_SITE/bin:$PATH"
"$NERLAB_PY" scripts/gpu/preflight.py ${NERLAB_PREFLIGHT_ARGS:-} || return $?
