"""``nerlab train --from-run RUN_ID``: a trial (or a ``nerlab train`` job) trained again from its MLflow run.

The run spec is the one rank 0 logged (``config/resolved_spec.yaml``, at the start of the run, so a trial
that ASHA stopped has it too); the data are the files the run logged as its MLflow datasets, each checked
against the digest logged with it. The PLM is the spec's: a hub name, a model folder, or a tiny PLM built
again from the same training file. Everything is checked before anything is written: an unknown run, a run
that is not a training run, a data file missing or changed is a one-line error (exit code 2).
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from nerlab.models import names as N
from nerlab.platform.errors import UsageError, redact
from nerlab.platform.specs.run import DataSpec, RunSpec, resolve_paths
from nerlab.platform.tracking import runs as T
from nerlab.platform.tracking.storage import local


def run_id_of(ref: str) -> str:
    """The run id of ``RUN_ID`` or ``runs:/RUN_ID``."""
    run_id = ref[len("runs:/"):].strip("/") if ref.startswith("runs:/") else ref
    if not run_id or "/" in run_id:
        raise UsageError(f"--from-run {ref}: give a run id, or runs:/RUN_ID")
    return run_id


def rerun_spec(ref: str, study: str | None, tracking_uri: str | None, output: str | None) -> tuple[RunSpec, str]:
    """The run spec that trains run ``ref`` again into ``output`` (default ``runs/<name>-rerun-<id>``), and the
    run's id. The store is found as ``nerlab predict`` finds a run's: ``--study``, ``--tracking-uri`` or
    ``MLFLOW_TRACKING_URI``."""
    import yaml
    from mlflow.exceptions import MlflowException

    from nerlab.dashboards.runs import quiet_downloads
    from nerlab.platform.specs.loader import from_dict
    from nerlab.platform.tracking.stores import client, registry_uri

    run_id = run_id_of(ref)
    uri = registry_uri(ref, study, tracking_uri)
    c = client(uri)
    try:
        run = c.get_run(run_id)
    except MlflowException:
        raise UsageError(f"--from-run {ref}: no such run in the MLflow store {redact(uri)}") from None
    tags = run.data.tags
    if N.STUDY_RUN_TAG in tags:
        raise UsageError(f"--from-run {ref}: the parent run of study {tags[N.STUDY_RUN_TAG]!r}, not a trial; give "
                         f"one of its trials' runs (nerlab leaderboard lists them)")
    if N.JOB_TAG not in tags:
        kind = f" (a {tags[N.KIND_TAG]} run)" if N.KIND_TAG in tags else ""
        raise UsageError(f"--from-run {ref}: not a trial or a nerlab train run{kind}: it has no {N.JOB_TAG} tag")
    with tempfile.TemporaryDirectory() as d, quiet_downloads():
        try:
            text = Path(c.download_artifacts(run_id, N.RESOLVED_SPEC, d)).read_text(encoding="utf-8")
        except (MlflowException, OSError):
            raise UsageError(f"--from-run {ref}: the run logged no run spec ({N.RESOLVED_SPEC}; runs of an older "
                             f"nerlab log it only when they finish)") from None
    where = f"--from-run {ref}: {N.RESOLVED_SPEC}"
    spec = from_dict(RunSpec, yaml.safe_load(text), where)
    spec = replace(spec, data=_logged_data(run, ref),
                   output=output or str(Path(N.RUNS_DIR) / f"{spec.name}-rerun-{run_id[:8]}"))
    return resolve_paths(spec, Path.cwd(), where), run_id


def _logged_data(run, ref: str) -> DataSpec:
    """The data files the run read, each there and with the digest it had then."""
    files = T.logged_datasets(run)
    if "train" not in files or "val" not in files:
        raise UsageError(f"--from-run {ref}: the run logged no training and validation files (MLflow datasets): "
                         f"its data cannot be checked")
    for split, (path, digest) in files.items():
        try:
            copy = local(path)  # an s3:// file: this node's copy of the objects there now
        except OSError:
            copy = None
        if copy is None or not Path(copy).is_file():
            raise UsageError(f"--from-run {ref}: its {split} file {path} is missing")
        now = T.file_digest(copy)
        if now != digest:
            raise UsageError(f"--from-run {ref}: its {split} file {path} changed since the run read it "
                             f"(digest {now}, logged {digest})")
    return DataSpec(train=files["train"][0], val=files["val"][0], test=files.get("test", (None,))[0])
