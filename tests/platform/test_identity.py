"""A study (or a job) is one thing: the same command twice, or from two shells, never duplicates a trial,
and no process a command started outlives it. Real Ray, real MLflow, the real CLI in subprocesses."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

# 1,200 sentences: epochs of 0.6 to 0.9 s here (160 took 0.13 s, and the whole window in which a trial is mid-way
# was shorter than the test's poll: the study finished unseen)
STUDY = {
    "name": "twice", "task": "nested", "data": {"synth": {"sentences": 1200, "seed": 0}},
    "model": {"max_length": 64}, "train": {"epochs": 8, "batch_size": 16, "lr": 3.0e-3},
    "search": {"mode": "grid", "plm": ["tiny:2x32"], "loss": ["ce", "unified"], "variance_penalty": [0.0],
               "seeds": [1]},
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 0.45, "max_concurrent": 2},
}
RUN = {
    "name": "job", "task": "nested", "data": {"synth": {"sentences": 160, "seed": 0}},
    "model": {"plm": "tiny:2x32", "max_length": 64}, "train": {"epochs": 2, "batch_size": 16, "lr": 3.0e-3},
    "resources": {"workers": 1, "cpus_per_worker": 0.5},
}


# Processes a study (a job) starts, by a piece of their command line: its local Ray, the study's MLflow server
STUDY_PROCESSES = ("gcs_server", "raylet", "-m mlflow server")
JOB_PROCESSES = ("gcs_server", "raylet")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "nerlab.platform.cli", *args]


class Watched:
    """A command in a subprocess, with every process it starts recorded while it runs."""

    def __init__(self, args: list[str], cwd: Path):
        self.proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # pid -> (start time, every command line it was seen with): a process seen between its fork and its
        # exec still shows its parent's command line, so a later look must add the one it runs under
        self.seen: dict[int, tuple[float, list[str]]] = {}

    def poll_children(self) -> None:
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:  # the command has ended: nothing more to see
            return
        for c in children:
            try:
                created, cmd = c.create_time(), " ".join(c.cmdline())
            except psutil.Error:  # ended meanwhile (or a zombie); the others are still recorded
                continue
            known, cmds = self.seen.get(c.pid, (created, []))
            if abs(known - created) >= 1:  # the pid was reused by a new process
                cmds = []
            if cmd and cmd not in cmds:
                cmds = [*cmds, cmd]
            self.seen[c.pid] = (created, cmds)

    def saw(self, *markers: str) -> bool:
        """Whether it started, for each marker, a process whose command line holds it."""
        return all(any(m in cmd for _, cmds in self.seen.values() for cmd in cmds) for m in markers)

    def wait(self, timeout: float) -> tuple[int, str, str]:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.poll_children()
            time.sleep(0.3)
        out, err = self.proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        return self.proc.returncode, out, err

    def survivors(self, grace: float = 30.0) -> list[str]:
        """Processes it started that are still alive ``grace`` seconds after it ended."""
        deadline = time.monotonic() + grace
        while True:
            alive = []
            for pid, (created, _) in self.seen.items():
                try:
                    p = psutil.Process(pid)
                    if abs(p.create_time() - created) < 1 and p.status() != psutil.STATUS_ZOMBIE:
                        alive.append(f"{pid} {' '.join(p.cmdline()[:3])}")
                except psutil.NoSuchProcess:  # ended (a zombie counts as ended too)
                    pass
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.5)


def wait_all(commands: list[Watched], timeout: float) -> list[tuple[int, str, str]]:
    deadline = time.monotonic() + timeout
    while any(c.proc.poll() is None for c in commands) and time.monotonic() < deadline:
        for c in commands:
            c.poll_children()
        time.sleep(0.3)
    return [c.wait(max(1.0, deadline - time.monotonic())) for c in commands]


def runs(out: Path, experiment: str):
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    if exp is None:  # the server is up, the study's experiment not made yet
        return []
    return client.search_runs([exp.experiment_id], max_results=1000)


def trial_runs(out: Path, experiment: str):
    return [r for r in runs(out, experiment) if r.data.tags.get("nerlab.trial")]


def mid_way(out: Path, run, epochs_left: int) -> bool:
    """A RUNNING trial run with at least one epoch logged and ``epochs_left`` or more still to train."""
    if run.info.status != "RUNNING":
        return False
    logged = len(MlflowClient(f"sqlite:///{out / 'mlflow.db'}").get_metric_history(run.info.run_id, "val/micro_f1"))
    return 1 <= logged <= STUDY["train"]["epochs"] - epochs_left


def write(tmp: Path, name: str, spec: dict) -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.timeout(900)
def test_one_run_per_trial_however_often_from_however_many_shells_and_after_sigterm(tmp_path):
    spec, out = write(tmp_path, "s.yaml", STUDY), tmp_path / "out"
    # Two drivers started together: one runs the study, the other is refused and names it.
    a = Watched(cli("study", "run", str(spec), "--output", str(out)), tmp_path)
    b = Watched(cli("study", "run", str(spec), "--output", str(out)), tmp_path)
    deadline = time.monotonic() + 120
    while a.proc.poll() is None and b.proc.poll() is None and time.monotonic() < deadline:
        a.poll_children(), b.poll_children()
        time.sleep(0.3)
    loser = a if a.proc.poll() is not None else b
    winner = b if loser is a else a
    code, _, refusal = loser.wait(10)
    assert code == 2 and len(refusal.strip().splitlines()) == 1, refusal[-2000:]
    assert f"study twice ({out}) is already running: pid {winner.proc.pid} on " in refusal
    # SIGTERM the running driver while a trial is mid-way: every process it started ends with it.
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        winner.poll_children()
        if winner.proc.poll() is not None:
            pytest.fail(f"the driver ended early: {winner.wait(5)[2][-3000:]}")
        # Query the store once the study's server has set it up (a client would create it otherwise).
        if (out / "mlflow-server.url").exists() and any(mid_way(out, r, epochs_left=3) for r in trial_runs(out, "twice")):
            break  # a trial is running with an epoch logged and three or more to go: the SIGTERM cuts it
        time.sleep(0.3)
    else:
        pytest.fail("no trial logged an epoch in time")
    winner.poll_children()
    assert winner.saw(*STUDY_PROCESSES), winner.seen  # what must not outlive it was seen
    winner.proc.send_signal(signal.SIGTERM)
    code, _, err = winner.wait(120)
    assert code != 0
    assert winner.survivors() == [], err[-2000:]
    interrupted = trial_runs(out, "twice")
    assert all(r.info.status in ("KILLED", "FINISHED") for r in interrupted)
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    cut = [r for r in interrupted if r.info.status == "KILLED"
           and 1 <= len(client.get_metric_history(r.info.run_id, "val/micro_f1")) < STUDY["train"]["epochs"]]
    assert cut, "the SIGTERM came when no trial was mid-way"
    # The same command finishes the study in the same runs, and ends everything it started.
    again = Watched(cli("study", "run", str(spec), "--output", str(out)), tmp_path)
    code, _, err = again.wait(600)
    assert code == 0, err[-3000:]
    assert again.saw(*STUDY_PROCESSES) and again.survivors() == [], again.seen
    trials = trial_runs(out, "twice")
    assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
    assert {r.info.run_id for r in interrupted} <= {r.info.run_id for r in trials}  # continued, not redone
    for r in trials:  # every epoch logged once
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val/micro_f1")]
        assert steps == list(range(1, STUDY["train"]["epochs"] + 1))
    # Twice more: nothing to run, still one run per trial; status counts 2 of 2.
    for _ in range(2):
        p = subprocess.run(cli("study", "run", str(spec), "--output", str(out)), cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0 and "had finished: nothing to run" in p.stdout, p.stderr[-2000:]
    assert {r.info.run_id for r in trial_runs(out, "twice")} == {r.info.run_id for r in trials}
    status = subprocess.run(cli("study", "status", str(out), "--json"), cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert '"done": 2' in status.stdout and '"pending": 0' in status.stdout
    # A changed spec is refused, naming what changed and the way out; nothing is touched.
    changed = write(tmp_path, "changed.yaml", {**STUDY, "train": {**STUDY["train"], "epochs": 4}})
    p = subprocess.run(cli("study", "run", str(changed), "--output", str(out)), cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "train.epochs 8 -> 4" in p.stderr and "--replace" in p.stderr and len(p.stderr.splitlines()) == 1
    assert len(runs(out, "twice")) == 3


@pytest.mark.timeout(600)
def test_a_training_job_runs_once_per_output_folder(tmp_path):
    spec, out = write(tmp_path, "run.yaml", RUN), tmp_path / "out"
    a = Watched(cli("train", str(spec), "--output", str(out)), tmp_path)
    b = Watched(cli("train", str(spec), "--output", str(out)), tmp_path)
    results = wait_all([a, b], 400)
    assert sorted(r[0] for r in results) == [0, 2], [r[2][-2000:] for r in results]
    refusal = next(r[2] for r in results if r[0] == 2)
    assert "training job job" in refusal and "is already running: pid" in refusal
    winner = a if results[0][0] == 0 else b
    assert winner.saw(*JOB_PROCESSES) and winner.survivors() == [], winner.seen
    again = subprocess.run(cli("train", str(spec), "--output", str(out), "--json"), cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and '"finished_before": true' in again.stdout, again.stderr[-2000:]
    assert len(runs(out, "job")) == 1
    changed = write(tmp_path, "changed.yaml", {**RUN, "train": {**RUN["train"], "lr": 0.01}})
    p = subprocess.run(cli("train", str(changed), "--output", str(out)), cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and "train.lr 0.003 -> 0.01" in p.stderr and "--replace" in p.stderr, p.stderr


@pytest.mark.timeout(300)
def test_ui_stops_its_server_on_sigterm(tmp_path):
    db = tmp_path / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").create_experiment("e")
    ui = Watched(cli("ui", "--store", str(db)), tmp_path)
    line = ""
    deadline = time.monotonic() + 120
    while "MLflow UI on" not in line and time.monotonic() < deadline:
        line = ui.proc.stdout.readline()
        ui.poll_children()
    assert "MLflow UI on" in line
    ui.poll_children()
    assert len(ui.seen) >= 3  # supervisor, mlflow server, uvicorn
    ui.proc.send_signal(signal.SIGTERM)
    ui.wait(60)
    assert ui.survivors() == []
