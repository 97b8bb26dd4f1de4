"""dashboards/runs.py: the SQL read of a study's runs returns what MLflow's search_runs does."""

import math
import os

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from nerlab.dashboards import runs as R
from nerlab.models import names as N


def _store(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("s", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp, tags={N.STUDY_RUN_TAG: "s"})
    pid = parent.info.run_id
    kids = []
    for i in range(3):
        r = client.create_run(exp, run_name=f"t{i}", tags={N.PARENT_RUN_TAG: pid, N.TRIAL_TAG: f"t{i}", "plm": "p"},
                              start_time=1000 + i)
        rid = r.info.run_id
        client.log_batch(rid, metrics=[Metric(N.VAL_F1, v, 5, e) for e, v in enumerate([0.2, 0.5 + i / 10, 0.4], 1)],
                         params=[])
        client.log_param(rid, "trial.seed", str(i))
        client.log_metric(rid, "odd", math.nan)
        kids.append(rid)
    client.set_terminated(kids[0], "FINISHED")
    client.delete_run(kids[2])  # deleted runs are not a study's trials
    client.create_run(exp, tags={N.PARENT_RUN_TAG: "another"})  # nor are another parent's children
    return client, exp, pid, kids


def test_sql_read_matches_search_runs(tmp_path, monkeypatch):
    client, exp, pid, kids = _store(tmp_path)
    fast = R.study_runs(client, exp, pid)
    assert all(isinstance(r, R.StoredRun) for r in fast)
    monkeypatch.setattr(R, "_sql_store", lambda c: None)
    slow = R.study_runs(client, exp, pid)
    assert [r.info.run_id for r in fast] == [r.info.run_id for r in slow] == [kids[1], kids[0]]
    for a, b in zip(fast, slow):
        assert a.data.tags == b.data.tags and a.data.params == b.data.params
        assert a.data.metrics.keys() == b.data.metrics.keys()
        assert all(a.data.metrics[k] == b.data.metrics[k] or (math.isnan(a.data.metrics[k]) and math.isnan(b.data.metrics[k]))
                   for k in a.data.metrics)
        for k in ("status", "start_time", "end_time", "experiment_id", "artifact_uri", "run_name", "lifecycle_stage"):
            assert getattr(a.info, k) == getattr(b.info, k), k
    assert [r.best_val_f1_so_far for r in fast] == [0.6, 0.5]  # the best epoch so far, not the last


def test_run_file_reads_local_artifacts_in_place(tmp_path):
    client, exp, pid, kids = _store(tmp_path)
    (tmp_path / "f.txt").write_text("x")
    client.log_artifact(kids[0], str(tmp_path / "f.txt"), "d")
    uri = client.get_run(kids[0]).info.artifact_uri
    local = R.run_file(client, kids[0], "d/f.txt", str(tmp_path / "dl"), uri)
    assert local.startswith(str(tmp_path / "art")) and open(local).read() == "x"
    assert open(R.run_file(client, kids[0], "d/f.txt", str(tmp_path / "dl"))).read() == "x"  # no URI: downloaded


@pytest.mark.parametrize("before", [None, "sqlite:////elsewhere/mlflow.db"])
def test_process_tracking_uri_puts_back_the_uri_and_the_environment(before, monkeypatch):
    import mlflow

    from nerlab.dashboards.runs import process_tracking_uri

    if before is None:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", before)
    with process_tracking_uri("sqlite:////study/mlflow.db"):
        assert mlflow.get_tracking_uri() == "sqlite:////study/mlflow.db"
    assert os.environ.get("MLFLOW_TRACKING_URI") == before


def test_trial_frame_through_a_tracking_server_matches_the_sql_read(tmp_path):
    """Through a real ``mlflow server`` (REST only: histories fetched concurrently) a study's trial frame holds
    what the SQL read gives, the best epoch so far of a trial without final metrics included."""
    from nerlab.dashboards.leaderboard import trial_frame
    from nerlab.platform.tracking.server import serving

    client, exp, pid, kids = _store(tmp_path)
    extra = [client.create_run(exp, tags={N.PARENT_RUN_TAG: pid, N.TRIAL_TAG: f"x{i}"}).info.run_id for i in range(5)]
    for i, rid in enumerate(extra):  # stopped early: per-epoch F1 only, best not last
        client.log_batch(rid, metrics=[Metric(N.VAL_F1, v, 5, e) for e, v in enumerate([0.1 * i, 0.3 + 0.1 * i, 0.2], 1)])
    client.log_metric(kids[0], N.BEST_VAL_F1, 0.55)  # a finished trial: its selected epoch, not its best so far
    local = trial_frame(client, exp, pid).set_index("run_id")["val_f1"]
    with serving(f"sqlite:///{tmp_path / 'mlflow.db'}", None, tmp_path / "server.log") as url:
        remote_client = MlflowClient(url)
        assert R._sql_store(remote_client) is None
        remote = trial_frame(remote_client, exp, pid).set_index("run_id")["val_f1"]
    expected = {kids[0]: 0.55, kids[1]: 0.6, **{rid: pytest.approx(0.3 + 0.1 * i) for i, rid in enumerate(extra)}}
    assert local.to_dict() == expected and remote.to_dict() == expected
