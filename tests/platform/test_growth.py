"""Studies that grow, with a real local Ray and a real MLflow store: a finished grid grows by a seed and then
by a PLM (the driver killed mid-way and the growth resumed), running exactly the new points under the same
parent run and leaving every earlier run as it was; a study whose Tune state is lost continues its runs; an
Optuna search grows by num_samples in the same search; what is not growth is refused, touching nothing."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from studies import kill_study_when, nerlab, read_log, trial_progress, trial_runs, write_spec  # noqa: E402

pytestmark = pytest.mark.slow

EPOCHS = 3
RESOURCES = {"workers_per_trial": 1, "cpus_per_worker": 0.45, "max_concurrent": 2}


def grid_spec(tmp_path: Path, plms: list[str], seeds: list[int]) -> Path:
    spec = write_spec(tmp_path, "grows", search={"mode": "grid", "plm": plms, "loss": ["ce", "unified"],
                                                 "variance_penalty": [0.0], "seeds": seeds}, resources=RESOURCES)
    data = yaml.safe_load(spec.read_text())
    data["data"]["synth"]["sentences"] = 160
    data["train"]["epochs"] = EPOCHS
    spec.write_text(yaml.safe_dump(data))
    return spec


def snapshot(out: Path) -> dict[str, tuple]:
    """Trial key -> (run id, status, end time, val F1 history): what an earlier round must leave unchanged."""
    client, _, trials = trial_runs(out, "grows")
    return {r.data.tags["nerlab.trial"]: (r.info.run_id, r.info.status, r.info.end_time, [
        (m.step, m.value) for m in sorted(client.get_metric_history(r.info.run_id, "val/micro_f1"), key=lambda m: m.step)])
        for r in trials}


def check_one_run_per_point(out: Path, points: set[tuple[str, str, int]]) -> None:
    client, parents, trials = trial_runs(out, "grows")
    assert len(parents) == 1
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parents[0].info.run_id}
    assert {(r.data.tags["plm"], r.data.tags["loss"], int(r.data.tags["seed"])) for r in trials} == points
    assert len(trials) == len(points) == len({r.data.tags["nerlab.trial"] for r in trials})
    for r in trials:
        assert r.info.status == "FINISHED"
        steps = sorted(m.step for m in client.get_metric_history(r.info.run_id, "val/micro_f1"))
        assert steps == list(range(1, EPOCHS + 1)), r.data.tags  # each epoch logged once


def points(plms, seeds) -> set[tuple[str, str, int]]:
    return {(p, loss, s) for p in plms for loss in ("ce", "unified") for s in seeds}


@pytest.mark.timeout(1200)
def test_a_finished_grid_grows_by_a_seed_then_by_a_plm_running_only_the_new_points(tmp_path):
    out = tmp_path / "out"
    p = nerlab("study", "run", str(grid_spec(tmp_path, ["tiny:2x32"], [1])), "--output", str(out), cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:] + read_log(out)[-3000:]
    first = snapshot(out)
    assert len(first) == 2

    # Round 2: a seed. Its two points run, the two finished ones are kept as they are.
    p = nerlab("study", "run", str(grid_spec(tmp_path, ["tiny:2x32"], [1, 2])), "--output", str(out), cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:] + read_log(out)[-3000:]
    assert "  adds 2 trials: seed 2 × 2 losses; 2 done are kept" in p.stdout.splitlines(), p.stdout
    ended = [ln.split("]")[0] + "]" for ln in p.stdout.splitlines() if ln.startswith("[")]
    assert ended == ["[3/4]", "[4/4]"], p.stdout  # counted against the grown grid
    check_one_run_per_point(out, points(["tiny:2x32"], [1, 2]))
    second = snapshot(out)
    assert {k: second[k] for k in first} == first  # same runs, same end times, same metrics

    # Round 3: a PLM; the driver is killed while a new trial is mid-way, and the same command resumes it.
    spec3 = grid_spec(tmp_path, ["tiny:2x32", "tiny:2x48"], [1, 2])
    log = tmp_path / "round3.log"
    kill_study_when(spec3, out, log, "grows", lambda progress: any(
        status == "RUNNING" and 1 <= n < EPOCHS for status, n in progress.values()), "no new trial was mid-way")
    assert "adds 4 trials: PLM tiny:2x48 × 2 losses × 2 seeds; 4 done are kept" in log.read_text()
    p = nerlab("study", "run", str(spec3), "--output", str(out), cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:] + read_log(out)[-3000:]
    check_one_run_per_point(out, points(["tiny:2x32", "tiny:2x48"], [1, 2]))
    third = snapshot(out)
    assert {k: third[k] for k in second} == second

    # One study: the status says which trials came with which command, the leaderboard ranks all six configs.
    st = json.loads(nerlab("study", "status", str(out), "--json", cwd=tmp_path).stdout)
    assert (st["total"], st["done"], st["pending"]) == (8, 8, 0)
    assert [(r["round"], r["trials"], r["done"]) for r in st["rounds"]] == [(1, 2, 2), (2, 2, 2), (3, 4, 4)]
    assert st["rounds"][2]["what"] == "adds 4 trials: PLM tiny:2x48 × 2 losses × 2 seeds"
    board = nerlab("leaderboard", str(out), "--json", cwd=tmp_path)
    assert board.returncode == 0, board.stderr
    rows = json.loads(board.stdout)["rows"]
    assert {(r["plm"], r["loss"]) for r in rows} == {(p, loss) for p in ("tiny:2x32", "tiny:2x48")
                                                     for loss in ("ce", "unified")}
    assert all(r["seeds"] == "1,2" and r["trials"] == 2 for r in rows)  # two seeds, from two rounds, in one row

    # Not growth: a value removed and a fixed key changed, both named; nothing is touched.
    saved = (out / "study.yaml").read_text()
    bad = yaml.safe_load(grid_spec(tmp_path, ["tiny:2x32"], [1, 2]).read_text())
    bad["train"]["epochs"] = EPOCHS + 1
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    p = nerlab("study", "run", str(tmp_path / "bad.yaml"), "--output", str(out), cwd=tmp_path)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert f"train.epochs {EPOCHS} -> {EPOCHS + 1}" in p.stderr and "search.plm (removed: tiny:2x48)" in p.stderr
    assert (out / "study.yaml").read_text() == saved and snapshot(out) == third


@pytest.mark.timeout(900)
def test_a_study_whose_tune_state_is_lost_continues_its_runs(tmp_path):
    """Identity is the point, not Tune's trial id: killed mid-way, its Tune experiment then deleted (as when a
    study dies before Tune saves anything), the study reruns its points in their runs, not in new ones. Its
    saved spec deleted too, the driver reads the spec from the parent run's artifact."""
    out, log = tmp_path / "out", tmp_path / "driver.log"
    spec = grid_spec(tmp_path, ["tiny:2x32"], [1])
    kill_study_when(spec, out, log, "grows", lambda progress: any(
        status == "RUNNING" and n >= 1 for status, n in progress.values()), "no trial logged an epoch")
    before = trial_progress(out, "grows", writers_alive=False)
    shutil.rmtree(out / "tune")
    (out / "study.yaml").unlink()  # as for a driver on another machine: the spec comes from the parent run
    p = nerlab("study", "run", str(spec), "--output", str(out), cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:] + read_log(out)[-3000:]
    check_one_run_per_point(out, points(["tiny:2x32"], [1]))
    _, _, trials = trial_runs(out, "grows")
    assert set(before) <= {r.info.run_id for r in trials}  # the killed runs were continued, none was left


@pytest.mark.timeout(900)
def test_an_optuna_search_grows_in_the_same_search(tmp_path):
    spec = write_spec(tmp_path, "tpe", search={"mode": "optuna", "plm": ["tiny:2x32"], "loss": ["ce", "unified"],
                                               "variance_penalty": {"uniform": [0.0, 10.0]}, "num_samples": 3,
                                               "sampler_seed": 3}, resources=RESOURCES)
    out = tmp_path / "out"
    p = nerlab("study", "run", str(spec), "--output", str(out), cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:] + read_log(out)[-3000:]
    client, _, first = trial_runs(out, "tpe")
    firsts = {r.info.run_id: r.info.end_time for r in first}
    data = yaml.safe_load(spec.read_text())
    data["search"]["num_samples"] = 5
    spec.write_text(yaml.safe_dump(data))
    p = nerlab("study", "run", str(spec), "--output", str(out), cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:] + read_log(out)[-3000:]
    assert "  adds 2 trials to the search (num_samples 3 -> 5); 3 done are kept" in p.stdout.splitlines(), p.stdout
    client, parents, trials = trial_runs(out, "tpe")
    assert len(parents) == 1 and len(trials) == 5 and all(r.info.status == "FINISHED" for r in trials)
    assert {r.info.run_id: r.info.end_time for r in trials if r.info.run_id in firsts} == firsts
    import optuna

    # One search: the two new trials were asked of the Optuna study that holds the first three's results.
    study = optuna.load_study(study_name="tpe", storage=f"sqlite:///{out / 'optuna.db'}")
    done = sorted(study.trials, key=lambda t: t.number)
    assert [t.state.name for t in done] == ["COMPLETE"] * 5
    assert max(t.datetime_complete for t in done[:3]) <= min(t.datetime_start for t in done[3:])
    assert {round(t.params["variance_penalty"], 9) for t in done} == \
        {round(float(r.data.params["train.variance_penalty"]), 9) for r in trials}
