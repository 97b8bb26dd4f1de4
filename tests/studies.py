"""What the tests of studies share: a small study spec, the CLI in a subprocess, a study's trial runs as its
MLflow store holds them (also read straight from SQLite while the study runs), and the live view's checks."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import yaml
from lab import kill_tree
from mlflow.tracking import MlflowClient

BASE = {
    "task": "nested",
    "data": {"synth": {"sentences": 240, "seed": 0}},
    "model": {"max_length": 64},
    "train": {"epochs": 2, "batch_size": 16, "lr": 3.0e-3, "patience": 5},
}


def write_spec(tmp_path: Path, name: str, **extra) -> Path:
    spec = {"name": name, **BASE, **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def nerlab(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nerlab.platform.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def trial_runs(out: Path, experiment: str):
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("nerlab.study_run")]
    trials = [r for r in runs if r.data.tags.get("nerlab.trial")]
    return client, parents, trials


# Tune's tables, the workers' logs as Ray relays them (Train workers, inline trials), Ray's own lines
RAY_OUTPUT = ("Trial status:", "╭", "RayTrainWorker", "TrainController", "(trial_driver pid=", "INFO worker.py")


def read_log(out: Path) -> str:
    log = out / "logs" / "study.log"
    return log.read_text(errors="replace") if log.exists() else ""


def check_quiet_output(p: subprocess.CompletedProcess, out: Path, trials: int, json_summary: bool,
                       workers: str) -> None:
    """The live view: a header, one line per trial and status lines, then the summary; Ray's tables and
    the workers' logs only in the study's log file. With --json the view is on stderr, stdout the summary."""
    view = (p.stderr if json_summary else p.stdout).splitlines()
    assert view[0].startswith("study ") and "logs/study.log" in view[1]
    ended = [ln for ln in view if ln.startswith("[")]
    assert len(ended) == trials and all(f"/{trials}] " in ln for ln in ended), view
    assert all(ln.startswith(("study ", "Ray's", "[", "  ", "best:", "report:", "browse it:")) for ln in view), view
    for text in (p.stdout, p.stderr):
        assert not any(marker in text for marker in RAY_OUTPUT), text[-3000:]
    if json_summary:
        assert json.loads(p.stdout)["trials"] == trials  # stdout holds the summary and nothing else
    log = read_log(out)
    assert "Trial status:" in log and workers in log  # Tune's tables and the workers' logs went to the log


TRIAL_PROGRESS = """
    SELECT r.run_uuid, r.status, (SELECT COUNT(DISTINCT m.step) FROM metrics m
                                  WHERE m.run_uuid = r.run_uuid AND m.key = 'val/micro_f1')
    FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id
    WHERE e.name = ? AND EXISTS (SELECT 1 FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = 'nerlab.trial')
"""


def trial_progress(out: Path, experiment: str, writers_alive: bool = True) -> dict[str, tuple[str, int]]:
    """A study's trial runs, read from its SQLite store: run id -> (status, epochs logged).

    With SQLite alone: an MLflow client would create or migrate the schema of a store that the study's MLflow
    server may be creating at that moment. Empty until the server has made its tables. While the study runs
    the store is opened read-only; once its writers are killed it is opened read-write, because a writer
    killed mid-transaction leaves a hot journal that only a connection allowed to write can roll back."""
    db = out / "mlflow.db"
    if not db.exists():
        return {}
    con = sqlite3.connect(f"{db.as_uri()}?mode={'ro' if writers_alive else 'rw'}", uri=True, timeout=60)
    try:
        return {run: (status, epochs) for run, status, epochs in con.execute(TRIAL_PROGRESS, (experiment,))}
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):  # the server has not made its schema yet
            return {}
        raise
    finally:
        con.close()


def kill_study_when(spec: Path, out: Path, log: Path, experiment: str,
                    ready: Callable[[dict[str, tuple[str, int]]], bool], waiting_for: str, timeout_s: float = 400) -> None:
    """Run ``nerlab study run SPEC --output OUT`` (its output to ``log``), poll its store (``trial_progress``)
    until ``ready`` holds, then SIGKILL it and everything it started. Fails if the study ends first, or with
    ``waiting_for`` if the time runs out."""
    with open(log, "wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "nerlab.platform.cli", "study", "run", str(spec), "--output",
                                 str(out)], cwd=spec.parent, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"the study ended before the kill:\n{log.read_text()[-3000:]}"
            if ready(trial_progress(out, experiment)):
                return
            time.sleep(0.3)
        pytest.fail(f"{waiting_for} in time:\n{log.read_text()[-3000:]}")
    finally:
        kill_tree(proc)
