"""One-worker trials trained in their Tune trial's own process (``resources.single_worker: inline``).

They must train exactly as the same trial run as a Ray Train job, and keep what the drills prove: a trial
whose process dies resumes from its last checkpoint into its one MLflow run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

SPEC = {
    "task": "nested",
    "data": {"synth": {"sentences": 300, "seed": 0}},
    "model": {"max_length": 64},
    "train": {"epochs": 3, "batch_size": 16, "lr": 5.0e-3, "patience": 5, "seed": 3407},
    "search": {"mode": "grid", "plm": ["tiny:2x32"], "loss": ["unified"], "variance_penalty": [1.0], "seeds": [1]},
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 0.9, "trial_cpus": 0.1, "max_concurrent": 1},
}


def write_spec(folder: Path, name: str, **resources) -> Path:
    spec = {"name": name, **SPEC, "resources": {**SPEC["resources"], **resources}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def the_trial(out: Path, name: str):
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("nerlab.trial")]
    assert len(runs) == 1, f"{len(runs)} runs for one trial"
    return client, runs[0]


def history(client, run, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))


@pytest.mark.timeout(600)
def test_inline_trial_trains_exactly_as_its_ray_train_job(tmp_path, ray_2_cpus):
    from nerlab.platform.cli import main

    seen = {}
    for mode in ("inline", "ray_train"):
        out = tmp_path / mode
        assert main(["study", "run", str(write_spec(tmp_path, mode, single_worker=mode)), "--output", str(out)]) == 0
        client, run = the_trial(out, mode)
        assert run.info.status == "FINISHED"
        seen[mode] = {k: history(client, run, k) for k in ("train/loss", "val/micro_f1", "test/micro_f1")}
        seen[mode]["best_epoch"] = run.data.metrics["best_epoch"]
        seen[mode]["ray_train_runs"] = sorted(p.name for p in (out / "ray-train").glob("*")) if (
            out / "ray-train").is_dir() else []
        seen[mode]["tune_checkpoints"] = sorted(p.name for p in (out / "tune" / mode).glob("*/checkpoint_*"))
    inline, train = seen["inline"], seen["ray_train"]
    assert [s for s, _ in inline["train/loss"]] == [s for s, _ in train["train/loss"]] == [1, 2, 3]
    # same data order, same dropout, same steps: the same losses
    assert [v for _, v in inline["train/loss"]] == pytest.approx([v for _, v in train["train/loss"]], rel=1e-6)
    assert inline["val/micro_f1"] == train["val/micro_f1"] and inline["test/micro_f1"] == train["test/micro_f1"]
    assert inline["best_epoch"] == train["best_epoch"]
    assert max(v for _, v in inline["val/micro_f1"]) > 0.0  # the comparison is between models that learned
    # inline: no Ray Train run, its checkpoints are the Tune trial's (the last two kept)
    assert inline["ray_train_runs"] == [] and 1 <= len(inline["tune_checkpoints"]) <= 2
    assert train["ray_train_runs"] and train["tune_checkpoints"] == []


@pytest.mark.timeout(600)
def test_killed_inline_trial_resumes_from_its_checkpoint_into_its_one_run(tmp_path):
    spec = write_spec(tmp_path, "killed", single_worker="inline")
    data = yaml.safe_load(spec.read_text())
    data["train"]["epochs"] = 5
    spec.write_text(yaml.safe_dump(data))
    out, timeline = tmp_path / "out", tmp_path / "timeline.jsonl"
    env = {**os.environ, "NERLAB_TIMELINE": str(timeline)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    driver = subprocess.Popen([sys.executable, "-m", "nerlab.platform.cli", "study", "run", str(spec), "--output",
                               str(out), "--json"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    victim = None
    try:
        deadline = time.monotonic() + 400
        while victim is None and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.5)
            starts = [json.loads(x) for x in timeline.read_text().splitlines()] if timeline.exists() else []
            epochs = [e for e in starts if e["event"] == "worker.epoch_reported"]
            if epochs and epochs[-1]["epoch"] >= 2:  # two epochs checkpointed and logged: kill the trial
                victim = epochs[-1]["pid"]
                # the Tune trial itself: Ray titles an actor's process ray::CLASS.METHOD, a trial's is .train
                assert psutil.Process(victim).cmdline()[0].endswith(".train"), psutil.Process(victim).cmdline()
                assert victim in {p.pid for p in psutil.Process(driver.pid).children(recursive=True)}
                os.kill(victim, 9)
        assert victim is not None, "the trial never reached its second epoch"
        log, _ = driver.communicate(timeout=400)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, 9)
    assert driver.returncode == 0, log[-4000:]
    client, run = the_trial(out, "killed")
    assert run.info.status == "FINISHED" and run.data.tags.get("nerlab.stopped_early") is None
    assert [s for s, _ in history(client, run, "val/micro_f1")] == [1, 2, 3, 4, 5]  # every epoch, once
    assert "test/micro_f1" in run.data.metrics
    events = [json.loads(x) for x in timeline.read_text().splitlines()]
    after = [e for e in events if e["event"] == "worker.epoch_start" and e["pid"] != victim]
    assert after and after[0]["epoch"] >= 3, "the new attempt did not resume from the last checkpoint"
