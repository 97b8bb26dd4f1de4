"""Studies with a real local Ray and a real MLflow store: grids, Optuna + ASHA, resume, every spec in smoke."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from lab import kill_tree  # noqa: E402  (tests/lab.py)
pytestmark = pytest.mark.slow

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


# The three drills start whole studies in subprocesses (about two minutes each on 2 cores).


@pytest.mark.timeout(600)
def test_grid_of_two_worker_trials_gives_one_child_run_per_trial(tmp_path):
    spec = write_spec(tmp_path, "grid", search={"mode": "grid", "plm": ["tiny:2x32"], "loss": ["ce", "unified"],
                                                "variance_penalty": [0.0, 5.0], "seeds": [1]},
                      resources={"workers_per_trial": 2, "cpus_per_worker": 0.45, "trial_cpus": 0.1,
                                 "max_concurrent": 2})
    out = tmp_path / "out"
    p = nerlab("study", "run", str(spec), "--output", str(out), "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:] + read_log(out)[-3000:]
    check_quiet_output(p, out, trials=4, json_summary=True, workers="RayTrainWorker")  # 2-worker Train jobs
    client, parents, trials = trial_runs(out, "grid")
    assert len(parents) == 1 and len(trials) == 4
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parents[0].info.run_id}
    assert len({r.data.tags["nerlab.trial"] for r in trials}) == 4
    combos = {(r.data.tags["loss"], float(r.data.tags["penalty"])) for r in trials}
    assert combos == {("ce", 0.0), ("ce", 5.0), ("unified", 0.0), ("unified", 5.0)}
    for r in trials:
        assert r.info.status == "FINISHED"
        assert r.data.params["resources.workers"] == "2"
        assert [m.step for m in client.get_metric_history(r.info.run_id, "val/micro_f1")] == [1, 2]
        # MLflow's system metrics of rank 0's machine, sampled while the trial trained
        assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(r.data.metrics)
    arts = {a.path for a in client.list_artifacts(parents[0].info.run_id, "leaderboard")}
    assert "leaderboard/leaderboard.csv" in arts
    status = nerlab("study", "status", str(out), "--json", cwd=tmp_path)
    assert status.returncode == 0 and '"done": 4' in status.stdout and '"pending": 0' in status.stdout


@pytest.mark.timeout(600)
def test_optuna_with_asha_stops_a_weak_trial_early(tmp_path):
    spec = write_spec(tmp_path, "tpe", search={"mode": "optuna", "plm": ["tiny:2x32"], "loss": ["ce", "unified"],
                                               "variance_penalty": {"uniform": [0.0, 10.0]},
                                               "lr": {"log_uniform": [1.0e-6, 1.0e-2]},
                                               "num_samples": 5, "sampler_seed": 3},
                      scheduler={"asha": {"grace_period": 1, "reduction_factor": 2}},
                      resources={"workers_per_trial": 1, "cpus_per_worker": 0.45, "max_concurrent": 2})
    spec_dict = yaml.safe_load(spec.read_text())
    spec_dict["train"]["epochs"] = 4
    spec.write_text(yaml.safe_dump(spec_dict))
    out = tmp_path / "out"
    p = nerlab("study", "run", str(spec), "--output", str(out), cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:] + read_log(out)[-3000:]
    check_quiet_output(p, out, trials=5, json_summary=False, workers="(trial_driver pid=")  # inline trials
    client, parents, trials = trial_runs(out, "tpe")
    assert len(trials) == 5 and all(r.info.status == "FINISHED" for r in trials)
    stopped = [r for r in trials if r.data.tags.get("nerlab.stopped_early") == "true"]
    assert stopped, "ASHA stopped no trial"
    for r in stopped:  # stopped before the last epoch: fewer epochs logged than the full 4
        assert len(client.get_metric_history(r.info.run_id, "val/micro_f1")) < 4
    for r in trials:  # a trial is either stopped early or finished with its test score, never both
        assert (r.data.tags.get("nerlab.stopped_early") == "true") != ("test/micro_f1" in r.data.metrics)
    import optuna

    study = optuna.load_study(study_name="tpe", storage=f"sqlite:///{out / 'optuna.db'}")
    assert len(study.trials) == 5  # the search is persisted beside the MLflow store


@pytest.mark.timeout(900)
def test_killed_driver_resumes_without_duplicate_runs(tmp_path):
    spec = write_spec(tmp_path, "resume", search={"mode": "grid", "plm": ["tiny:2x32"], "loss": ["ce", "unified"],
                                                  "variance_penalty": [0.0, 5.0], "seeds": [1]},
                      resources={"workers_per_trial": 1, "cpus_per_worker": 0.45, "max_concurrent": 2})
    data = yaml.safe_load(spec.read_text())
    data["train"]["epochs"] = 4  # trials of several seconds: the kill lands while some are mid-way
    spec.write_text(yaml.safe_dump(data))
    out, log = tmp_path / "out", tmp_path / "driver.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "nerlab.platform.cli", "study", "run", str(spec), "--output",
                                 str(out)], cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:  # wait for one finished trial, then kill everything
            assert proc.poll() is None, f"the study ended before the kill:\n{log.read_text()[-3000:]}"
            if (out / "mlflow.db").exists():
                try:
                    _, _, trials = trial_runs(out, "resume")
                    if any(r.info.status == "FINISHED" for r in trials):
                        break
                except Exception:
                    pass
            time.sleep(0.3)
        else:
            pytest.fail(f"no trial finished in time:\n{log.read_text()[-3000:]}")
    finally:
        kill_tree(proc)
    _, _, before = trial_runs(out, "resume")
    assert 1 <= sum(r.info.status == "FINISHED" for r in before) < 4, "the kill came after the study's end"
    p = nerlab("study", "resume", str(out), "--verbose", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Trial status:" in p.stdout and "(trial_driver pid=" in p.stdout + p.stderr  # --verbose: Ray's output
    _, parents, trials = trial_runs(out, "resume")
    assert len(parents) == 1
    assert len(trials) == 4 and len({r.data.tags["nerlab.trial"] for r in trials}) == 4
    assert all(r.info.status == "FINISHED" for r in trials)
    finished_before = {r.info.run_id: r.info.end_time for r in before if r.info.status == "FINISHED"}
    for r in trials:  # finished trials were not rerun
        if r.info.run_id in finished_before:
            assert r.info.end_time == finished_before[r.info.run_id]


SPECS = sorted((ROOT / "experiments").glob("*.yaml"))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_every_experiment_spec_runs_in_smoke_mode(spec, tmp_path, ray_2_cpus):
    """In-process, sharing one Ray: a spec that does not run is a bug."""
    from nerlab.platform.cli import main

    verb = ["study", "run"] if "search" in yaml.safe_load(spec.read_text()) else ["train"]
    assert main([*verb, str(spec), "--smoke", "--output", str(tmp_path / "out")]) == 0
    if verb[0] == "study":
        name = yaml.safe_load(spec.read_text())["name"] + "-smoke"
        _, _, trials = trial_runs(tmp_path / "out-smoke", name)
        assert len(trials) == 1 and trials[0].info.status == "FINISHED"
