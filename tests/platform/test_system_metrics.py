"""System metrics of a run: logged under MLflow's names while a job runs, and never in training's way when
the tracking server is away."""

from __future__ import annotations

import time

from mlflow.tracking import MlflowClient

from nerlab.platform.system_metrics import SystemMetrics


def test_samples_land_in_the_run_under_mlflows_names(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("sys", artifact_location=str(tmp_path / "a")))
    monitor = SystemMetrics(uri, run.info.run_id, interval_s=0.2).start()
    time.sleep(1.5)
    monitor.stop()
    metrics = client.get_run(run.info.run_id).data.metrics
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(metrics)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")]
    assert len(steps) >= 3 and steps == list(range(len(steps)))
    again = SystemMetrics(uri, run.info.run_id, interval_s=0.2).start()  # a resumed job: steps go on
    time.sleep(0.5)
    again.stop()
    more = [m.step for m in client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")]
    assert sorted(more)[:len(steps)] == steps and len(set(more)) == len(more) > len(steps)


def test_a_server_that_is_away_neither_raises_nor_holds_up_stop():
    monitor = SystemMetrics("http://127.0.0.1:9", "0" * 32, interval_s=0.1).start()  # nothing listens
    time.sleep(0.5)
    t = time.monotonic()
    monitor.stop(wait_s=1.0)
    assert time.monotonic() - t < 2.0


def test_zero_turns_them_off():
    monitor = SystemMetrics("http://127.0.0.1:9", "0" * 32, interval_s=0).start()
    assert monitor._thread is None
    monitor.stop()
