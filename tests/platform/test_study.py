"""Studies with a real local Ray and a real MLflow store: grids, Optuna + ASHA, resume, every spec in smoke."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from studies import (  # noqa: E402
    check_quiet_output, kill_study_when, nerlab, read_log, trial_progress, trial_runs, write_spec)

pytestmark = pytest.mark.slow

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


# learning rates: a model that learns (val F1 above 0.2 by epoch 2, batch 8), one that stays as initialised (about 0.01)
LEARNS, CANNOT_LEARN = 1.0e-2, 1.0e-9


@pytest.mark.timeout(600)
def test_optuna_with_asha_stops_a_weak_trial_early(tmp_path):
    """ASHA must stop the trials that cannot learn, whatever the order their results come in.

    Sampler seed 5 draws lr LEARNS, LEARNS, CANNOT_LEARN, LEARNS, CANNOT_LEARN (checked below). With two
    trials at a time, trial 3 starts only once trial 1 or 2 has ended, so after one that learns has passed
    the rung at epoch 2: the rung's cutoff is a learning trial's F1, above any that cannot learn. Trial 5
    starts once three of the first four have ended, two of them learning: the cutoff is again theirs."""
    spec = write_spec(tmp_path, "tpe", search={"mode": "optuna", "plm": ["tiny:2x32"], "loss": ["ce", "unified"],
                                               "variance_penalty": {"uniform": [0.0, 10.0]},
                                               "lr": [LEARNS, CANNOT_LEARN], "num_samples": 5, "sampler_seed": 5},
                      scheduler={"asha": {"grace_period": 2, "reduction_factor": 2}},
                      resources={"workers_per_trial": 1, "cpus_per_worker": 0.45, "max_concurrent": 2})
    spec_dict = yaml.safe_load(spec.read_text())
    spec_dict["train"].update(epochs=4, batch_size=8)
    spec.write_text(yaml.safe_dump(spec_dict))
    out = tmp_path / "out"
    p = nerlab("study", "run", str(spec), "--output", str(out), cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:] + read_log(out)[-3000:]
    check_quiet_output(p, out, trials=5, json_summary=False, workers="(trial_driver pid=")  # inline trials
    import optuna

    study = optuna.load_study(study_name="tpe", storage=f"sqlite:///{out / 'optuna.db'}")
    assert len(study.trials) == 5  # the search is persisted beside the MLflow store
    assert [t.params["lr"] for t in sorted(study.trials, key=lambda t: t.number)] == \
        [LEARNS, LEARNS, CANNOT_LEARN, LEARNS, CANNOT_LEARN]  # the premise: the seed's draws, in order
    client, parents, trials = trial_runs(out, "tpe")
    assert len(trials) == 5 and all(r.info.status == "FINISHED" for r in trials)
    stopped = {r.info.run_id for r in trials if r.data.tags.get("nerlab.stopped_early") == "true"}
    frozen = [r for r in trials if float(r.data.params["train.lr"]) == CANNOT_LEARN]
    f1s = {r.info.run_id: (r.data.params["train.lr"], [round(m.value, 3) for m in sorted(
        client.get_metric_history(r.info.run_id, "val/micro_f1"), key=lambda m: m.step)]) for r in trials}
    assert len(frozen) == 2 and {r.info.run_id for r in frozen} <= stopped, f1s
    for r in trials:
        if r.info.run_id in stopped:  # stopped at the rung (epoch 2), that epoch logged before the stop
            assert len(f1s[r.info.run_id][1]) == 2, f1s
        # a trial is either stopped early or finished with its test score, never both
        assert (r.info.run_id in stopped) != ("test/micro_f1" in r.data.metrics)


@pytest.mark.timeout(900)
def test_killed_driver_resumes_without_duplicate_runs(tmp_path):
    epochs = 4  # trials of several seconds: the kill lands while one is mid-way
    spec = write_spec(tmp_path, "resume", search={"mode": "grid", "plm": ["tiny:2x32"], "loss": ["ce", "unified"],
                                                  "variance_penalty": [0.0, 5.0], "seeds": [1]},
                      resources={"workers_per_trial": 1, "cpus_per_worker": 0.45, "max_concurrent": 2})
    data = yaml.safe_load(spec.read_text())
    data["train"]["epochs"] = epochs
    spec.write_text(yaml.safe_dump(data))
    out, log = tmp_path / "out", tmp_path / "driver.log"

    def finished_and_midway(progress: dict[str, tuple[str, int]]) -> tuple[set[str], set[str]]:
        return ({run for run, (status, _) in progress.items() if status == "FINISHED"},
                {run for run, (status, n) in progress.items() if status == "RUNNING" and 1 <= n < epochs})

    # one trial finished and one mid-way: kill everything
    kill_study_when(spec, out, log, "resume", lambda progress: all(finished_and_midway(progress)),
                    "no trial finished while another was mid-way")
    finished, midway = finished_and_midway(trial_progress(out, "resume", writers_alive=False))
    assert 1 <= len(finished) < 4, "the kill came after the study's end"
    assert midway, "no trial was mid-way at the kill"  # (a killed driver leaves its runs RUNNING)
    client, _, before = trial_runs(out, "resume")
    end_times = {r.info.run_id: r.info.end_time for r in before if r.info.run_id in finished}
    p = nerlab("study", "resume", str(out), "--verbose", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Trial status:" in p.stdout and "(trial_driver pid=" in p.stdout + p.stderr  # --verbose: Ray's output
    client, parents, trials = trial_runs(out, "resume")
    assert len(parents) == 1
    assert len(trials) == 4 and len({r.data.tags["nerlab.trial"] for r in trials}) == 4
    assert all(r.info.status == "FINISHED" for r in trials)
    after = {r.info.run_id: r for r in trials}
    assert finished | midway <= set(after)  # the mid-way trials went on in their runs
    for run, end_time in end_times.items():  # finished trials were not rerun
        assert after[run].info.end_time == end_time
    for r in trials:  # each epoch logged once, the resumed ones included
        assert sorted(m.step for m in client.get_metric_history(r.info.run_id, "val/micro_f1")) == \
            list(range(1, epochs + 1)), r.info.run_id


SPECS = sorted((ROOT / "experiments").glob("*.yaml"))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_every_experiment_spec_runs_in_smoke_mode(spec, tmp_path, ray_2_cpus):
    """In-process, sharing one Ray: a spec that does not run is a bug."""
    from nerlab.platform.cli import main

    data = yaml.safe_load(spec.read_text())
    verb = ["study", "run"] if "search" in data else ["train"]
    assert main([*verb, str(spec), "--smoke", "--output", str(tmp_path / "out")]) == 0
    if verb[0] == "study":
        _, _, trials = trial_runs(tmp_path / "out-smoke", data["name"] + "-smoke")
        assert len(trials) == 1 and trials[0].info.status == "FINISHED"
        if data.get("model", {}).get("normalisation") == "reference":
            check_reference_validation_loss(trials[0], tmp_path / "out-smoke", tmp_path / "model")


def check_reference_validation_loss(run, out: Path, folder: Path) -> None:
    """The reference normalisation's validation loss (the one-epoch trial's: its saved weights) is the mean over
    file-order batches of train.batch_size of the summed task losses, as the reference system computed it."""
    import torch

    from nerlab.losses import LossConfig
    from nerlab.models.encoding import collate, encode
    from nerlab.models.tagger import MultiTaskTagger
    from nerlab.models.training import task_losses
    from nerlab.models.wojood import read_file
    from nerlab.platform.tracking.stores import fetch_model

    p = run.data.params
    assert p["train.epochs"] == "1" and p["model.normalisation"] == "reference"
    model, tok = MultiTaskTagger.load(fetch_model(f"runs:/{run.info.run_id}/tagger", f"sqlite:///{out / 'mlflow.db'}",
                                                  folder))
    windows = encode(read_file(p["inputs.val"], task=p["task"]), tok, model.schema, model.config.max_length)
    size, loss = int(p["train.batch_size"]), LossConfig.preset(run.data.tags["loss"])  # the trial's loss preset
    total, batches = torch.zeros(()), list(range(0, len(windows), size))  # file order, chunked by hand
    with torch.no_grad():
        for i in batches:
            batch = collate(windows[i:i + size], tok.pad_token_id, model.schema.num_heads)
            total += task_losses(model, batch, loss, torch.device("cpu")).sum()
    assert run.data.metrics["val/loss"] == pytest.approx(float(total) / len(batches), rel=1e-5)
