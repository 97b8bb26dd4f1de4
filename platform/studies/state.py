"""What a study's store says about it (its saved spec, parent run, trial runs, status), without Ray.

``nerlab study status`` and the results verbs read a study here; importing ``study.py`` (Ray Tune, Ray
Train, the trial driver) would cost seconds for nothing.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from nerlab.models import names as N
from nerlab.platform.tracking import runs as T
from nerlab.platform.specs.search import grid_size
from nerlab.platform.specs.study import StudySpec
from nerlab.platform.errors import SpecError
from nerlab.platform.specs.loader import from_dict



def parent_run(store_uri: str, spec: StudySpec):
    """The study's parent run in its store, or None (a store that does not exist yet is not created)."""
    db = T.sqlite_file(store_uri)
    if db is not None and not db.is_file():
        return None
    client = T.MlflowClient(store_uri)
    exp = client.get_experiment_by_name(spec.tracking.experiment or spec.name)
    return None if exp is None else T.find_run(client, exp.experiment_id, N.STUDY_RUN_TAG, spec.name)


def trial_runs(client, parent) -> list:
    """The trial runs of a study: the children of its parent run (one query per table on a SQL store)."""
    from nerlab.dashboards.runs import study_runs

    return study_runs(client, parent.info.experiment_id, parent.info.run_id)


def load_saved_study(name_or_path: str) -> StudySpec:
    """A study by output folder, or by name under ./runs; its spec as saved when it started."""
    from nerlab.platform.tracking.stores import study_folder

    saved = study_folder(name_or_path) / N.STUDY_FILE
    if not saved.is_file():
        raise SpecError(f"{name_or_path}: no study found (looked for {saved.resolve()})")
    return from_dict(StudySpec, yaml.safe_load(saved.read_text(encoding="utf-8")), str(saved))


def study_status(spec: StudySpec) -> dict:
    """Trials done, running, pending and failed, and the best so far, read from MLflow: one run per trial
    (the children of the study's parent run), so no count exceeds the study's trials."""
    from nerlab.platform.tracking.stores import client

    out = Path(spec.output)
    uri, _ = T.resolve_tracking(spec.tracking.tracking_uri, out)
    c = client(uri)  # a study whose store is missing is no study: read, never created
    parent = parent_run(uri, spec)
    runs = {}
    if parent is not None:
        for r in sorted(trial_runs(c, parent), key=lambda r: r.info.start_time):
            runs[r.data.tags.get(N.TRIAL_TAG, r.info.run_id)] = r  # a trial's latest run speaks for it
    counts = {"FINISHED": 0, "RUNNING": 0, "FAILED": 0, "KILLED": 0}
    best = None
    for r in runs.values():
        counts[r.info.status] = counts.get(r.info.status, 0) + 1
        f1 = r.data.metrics.get(N.BEST_VAL_F1, r.data.metrics.get(N.VAL_F1))
        if f1 is not None and (best is None or f1 > best[0]):
            t = r.data.tags
            point = t.get(N.PLM_TAG), t.get(N.LOSS_TAG), t.get(N.PENALTY_TAG)
            best = (f1, t.get(N.TRIAL_TAG), *point, f"{point[0]} | {point[1]} | λ={point[2]}")
    total = grid_size(spec)
    return {"study": spec.name, "total": total, "done": counts["FINISHED"], "running": counts["RUNNING"],
            "interrupted": counts["KILLED"], "failed": counts["FAILED"], "pending": max(0, total - len(runs)),
            "best": None if best is None else dict(zip(("val_f1", "trial", "plm", "loss", "penalty", "config"), best))}
