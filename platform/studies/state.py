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



def parent_run(store_uri: str, spec: StudySpec, client=None):
    """The study's parent run in its store (read with ``client`` if given), or None (a store that does not
    exist yet is not created)."""
    db = T.sqlite_file(store_uri)
    if db is not None and not db.is_file():
        return None
    client = client or T.MlflowClient(store_uri)
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


def saved_spec(out: Path, parent, store_uri: str) -> StudySpec | None:
    """The spec a study runs as its driver last saved it: the output folder's copy, else (a folder on another
    machine) its parent run's ``config/study.yaml``; None for a study that has not started."""
    import tempfile

    saved = out / N.STUDY_FILE
    if not saved.is_file():
        if parent is None:
            return None
        folder = Path(tempfile.mkdtemp(prefix="nerlab-study-"))
        saved = Path(T.MlflowClient(store_uri).download_artifacts(parent.info.run_id, f"{N.CONFIG_DIR}/{N.STUDY_FILE}",
                                                                  str(folder)))
    return from_dict(StudySpec, yaml.safe_load(saved.read_text(encoding="utf-8")), str(saved))


def study_status(spec: StudySpec) -> dict:
    """Trials done, running, pending and failed, and the best so far, read from MLflow: one run per trial
    (the children of the study's parent run), so no count exceeds the study's trials."""
    from nerlab.platform.tracking.stores import client

    out = Path(spec.output)
    uri, _ = T.resolve_tracking(spec.tracking.tracking_uri, out)
    c = client(uri)  # a study whose store is missing is no study: read, never created
    parent = parent_run(uri, spec, c)
    runs = {}
    if parent is not None:
        for r in sorted(trial_runs(c, parent), key=lambda r: r.info.start_time):
            runs[r.data.tags.get(N.TRIAL_TAG, r.info.run_id)] = r  # a trial's latest run speaks for it
    counts = {"FINISHED": 0, "RUNNING": 0, "FAILED": 0, "KILLED": 0}
    rounds: dict[int, dict] = {}  # the command (round) that added each trial, and where its trials stand
    for n in range(1, int(parent.data.tags.get(N.ROUNDS_TAG, "1")) + 1 if parent is not None else 1):
        note = "the study's first command" if n == 1 else parent.data.tags.get(N.ROUND_NOTE_TAG.format(n), "")
        rounds[n] = {"round": n, "what": note, "trials": 0, "done": 0}
    best = None
    for r in runs.values():
        counts[r.info.status] = counts.get(r.info.status, 0) + 1
        n = int(r.data.tags.get(N.ROUND_TAG, "1"))
        rounds.setdefault(n, {"round": n, "what": "", "trials": 0, "done": 0})
        rounds[n]["trials"] += 1
        rounds[n]["done"] += r.info.status == "FINISHED"
        f1 = r.data.metrics.get(N.BEST_VAL_F1, r.data.metrics.get(N.VAL_F1))
        if f1 is not None and (best is None or f1 > best[0]):
            t = r.data.tags
            point = t.get(N.PLM_TAG), t.get(N.LOSS_TAG), t.get(N.PENALTY_TAG)
            best = (f1, t.get(N.TRIAL_TAG), *point, f"{point[0]} | {point[1]} | λ={point[2]}")
    total = grid_size(spec)
    return {"study": spec.name, "total": total, "done": counts["FINISHED"], "running": counts["RUNNING"],
            "interrupted": counts["KILLED"], "failed": counts["FAILED"], "pending": max(0, total - len(runs)),
            "rounds": [rounds[n] for n in sorted(rounds)],
            "best": None if best is None else dict(zip(("val_f1", "trial", "plm", "loss", "penalty", "config"), best))}
