"""One small real study for every results test: a 2-loss x 2-seed grid (4 trials) under a real local Ray,
tracked in a real MLflow store; leaderboard, report, select, predict and the browser tests all read it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

STUDY = "dash"
SPEC = {
    "name": STUDY,
    "task": "nested",
    "data": {"synth": {"sentences": 240, "seed": 0}},
    "model": {"max_length": 64},
    # lr 1e-2 and 3 epochs: a tiny encoder leaves the all-O start (F1 0.15-0.30), and the two losses
    # differ clearly, so champion, bootstrap and scores are not all zeros
    "train": {"epochs": 3, "batch_size": 16, "lr": 1.0e-2, "patience": 5},
    "search": {"mode": "grid", "plm": ["tiny:2x32"], "loss": ["ce", "unified"], "variance_penalty": [5.0],
               "seeds": [1, 2]},
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 0.9, "trial_cpus": 0.1, "max_concurrent": 2},
}


@dataclass(frozen=True)
class Study:
    out: Path  # the study's output folder (study.yaml, mlflow.db, report/ ...)
    uri: str  # its MLflow store
    experiment_id: str
    parent_run_id: str

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def trial_runs(self) -> list:
        return self.client().search_runs([self.experiment_id], f"tags.`mlflow.parentRunId` = '{self.parent_run_id}'",
                                         max_results=100)


@pytest.fixture(scope="session")
def study(tmp_path_factory, local_ray) -> Study:
    """Runs the study in-process, once per session (two trials at a time; about 1.5 minutes on 2 cores)."""
    from mlflow.tracking import MlflowClient

    from nerlab.platform.cli import main

    root = tmp_path_factory.mktemp("results-study")
    spec = root / "study.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    out = root / "out"
    with local_ray(num_cpus=2):  # shut down after the study (nothing after it needs Ray), unless it ran before
        assert main(["study", "run", str(spec), "--output", str(out)]) == 0
    uri = f"sqlite:///{out / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(STUDY)
    (parent,) = client.search_runs([exp.experiment_id], f"tags.`nerlab.study_run` = '{STUDY}'")
    return Study(out, uri, exp.experiment_id, parent.info.run_id)


@pytest.fixture(scope="session")
def champion(study):
    """``nerlab select`` run once: (its JSON answer, the registered model name)."""
    import contextlib
    import io
    import json

    from nerlab.platform.cli import main

    name = "dash-tagger"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["select", str(study.out), "--name", name, "--json"]) == 0
    return json.loads(buf.getvalue()), name


@pytest.fixture(scope="session")
def ensemble(study):
    """``nerlab select --ensemble 2`` run once: (its JSON answer, the registered model name)."""
    import contextlib
    import io
    import json

    from nerlab.platform.cli import main

    name = "dash-ensemble"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["select", str(study.out), "--name", name, "--ensemble", "2", "--json"]) == 0
    return json.loads(buf.getvalue()), name
