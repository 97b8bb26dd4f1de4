"""``nerlab train --from-run``: a trial of a real grid study trained again from its MLflow run reproduces its
logged per-epoch validation F1 exactly (CPU, same seed); runs that cannot be trained again are refused in one
line, exit code 2, nothing written."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from nerlab.models.synth import write_corpus

pytestmark = pytest.mark.slow


def nerlab(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nerlab.platform.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def val_f1(store: Path, run_id: str) -> list[tuple[int, float]]:
    history = MlflowClient(f"sqlite:///{store}").get_metric_history(run_id, "val/micro_f1")
    return sorted((m.step, m.value) for m in history)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    """A grid study of one trial (tiny PLM, 2 epochs) on data files, run by ``nerlab study run``."""
    tmp = tmp_path_factory.mktemp("from-run")
    data = write_corpus(tmp / "data", 240, seed=3)
    spec = {"name": "grid", "task": "nested",
            "data": {split: str(data[split]) for split in ("train", "val", "test")},
            "model": {"max_length": 64}, "train": {"epochs": 2, "batch_size": 8, "lr": 1.0e-2, "patience": 5},
            "search": {"mode": "grid", "plm": ["tiny:2x32"], "loss": ["ce"], "variance_penalty": [0.0],
                       "seeds": [7]},
            "resources": {"workers_per_trial": 1, "cpus_per_worker": 0.45, "max_concurrent": 1}}
    (tmp / "grid.yaml").write_text(yaml.safe_dump(spec))
    out = tmp / "study"
    p = nerlab("study", "run", "grid.yaml", "--output", str(out), cwd=tmp)
    assert p.returncode == 0, p.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("grid").experiment_id])
    (trial,) = [r for r in runs if "nerlab.trial" in r.data.tags]
    (parent,) = [r for r in runs if "nerlab.study_run" in r.data.tags]
    return {"tmp": tmp, "out": out, "data": data, "trial": trial.info.run_id, "parent": parent.info.run_id}


@pytest.mark.timeout(600)
def test_a_trial_trained_again_from_its_run_reproduces_its_val_f1(study):
    tmp, trial = study["tmp"], study["trial"]
    logged = val_f1(study["out"] / "mlflow.db", trial)
    assert [step for step, _ in logged] == [1, 2]
    assert max(f1 for _, f1 in logged) > 0.1  # a model that learns: its F1 depends on every step
    new = tmp / "rerun"
    p = nerlab("train", "--from-run", f"runs:/{trial}", "--study", str(study["out"]), "--output", str(new),
               cwd=tmp)
    assert p.returncode == 0, p.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{new / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.data.tags["nerlab.rerun_of"] == trial and run.info.status == "FINISHED"
    assert val_f1(new / "mlflow.db", run.info.run_id) == logged  # exactly, epoch by epoch
    assert (new / "model").is_dir()
    # the new run is a `nerlab train` job's: it can be trained again too (its store: the job's folder)
    again = tmp / "rerun-of-rerun"
    p = nerlab("train", "--from-run", run.info.run_id, "--study", str(new), "--output", str(again), cwd=tmp)
    assert p.returncode == 0, p.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{again / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert val_f1(again / "mlflow.db", run.info.run_id) == logged


@pytest.mark.timeout(300)
def test_runs_that_cannot_be_trained_again_are_refused(study):
    tmp, out, train = study["tmp"], study["out"], study["data"]["train"]
    new = tmp / "refused"

    def refused(run: str, *extra: str) -> str:
        p = nerlab("train", "--from-run", run, "--output", str(new), *extra, cwd=tmp)
        assert p.returncode == 2, p.stderr[-3000:]
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("nerlab: error: --from-run "), p.stderr
        assert not new.exists()
        return lines[0]

    assert "no such run" in refused("0123456789abcdef0123456789abcdef", "--study", str(out))
    assert "parent run of study 'grid', not a trial" in refused(study["parent"], "--study", str(out))
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    other = client.create_run(client.create_experiment("another tool")).info.run_id  # no nerlab tags
    assert "not a trial or a nerlab train run" in refused(other, "--study", str(out))
    original = train.read_bytes()
    try:
        train.write_bytes(original + b"\n")  # one more blank line at the end: the same sentences
        message = refused(study["trial"], "--study", str(out))
        assert f"its train file {train} changed since the run read it" in message
        shutil.move(train, tmp / "moved.txt")
        assert f"its train file {train} is missing" in refused(study["trial"], "--study", str(out))
    finally:
        train.write_bytes(original)
    # the store must be named: there is none in the current folder
    p = nerlab("train", "--from-run", study["trial"], "--output", str(new), cwd=tmp)
    assert p.returncode == 2 and "--study STUDY or --tracking-uri" in p.stderr and not new.exists()
