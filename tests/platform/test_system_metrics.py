"""System metrics of a run: logged under MLflow's names while a job runs, and never in training's way when
the tracking server is away.

No test waits for the clock: the sampling thread tells the test each time it has sampled (a subclass that
counts the real ``_sample`` calls), and a server that is away is a port that accepts and never answers, so
that a request hangs for as long as the test lasts. How long ``stop`` takes then is measured in
tests/benchmarks/bench_waits.py.
"""

from __future__ import annotations

import socket
import threading

from mlflow.tracking import MlflowClient

from nerlab.platform.training.system_metrics import SystemMetrics


class Counted(SystemMetrics):
    """The real monitor; ``sampled`` is released after each sample (logged, or kept for the next try)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sampled = threading.Semaphore(0)

    def _sample(self, client, step: int) -> int:
        step = super()._sample(client, step)
        self.sampled.release()
        return step


def run_for(monitor: Counted, samples: int) -> None:
    """Start ``monitor``, wait until it has taken ``samples`` samples, stop it (it takes one more then, and
    may have taken another before ``stop``)."""
    monitor.start()
    for _ in range(samples):
        assert monitor.sampled.acquire(timeout=300), "the monitor stopped sampling"
    monitor.stop()


def cpu_steps(client: MlflowClient, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, "system/cpu_utilization_percentage"))


def test_samples_land_in_the_run_under_mlflows_names(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("sys", artifact_location=str(tmp_path / "a")))
    run_for(Counted(uri, run.info.run_id, interval_s=0.05), 3)
    metrics = client.get_run(run.info.run_id).data.metrics
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(metrics)
    steps = cpu_steps(client, run.info.run_id)
    assert len(steps) >= 4 and steps == list(range(len(steps)))  # three samples (or more), the last stretch's
    run_for(Counted(uri, run.info.run_id, interval_s=0.05), 2)  # a resumed job: steps go on
    more = cpu_steps(client, run.info.run_id)
    assert len(more) >= len(steps) + 3 and more == list(range(len(more)))


def test_a_server_that_is_away_neither_raises_nor_holds_up_stop():
    """The tracking server's port accepts but never answers: the monitor's requests hang there. ``stop``
    returns anyway and leaves the thread behind as a daemon (it cannot keep the process alive)."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        monitor = SystemMetrics(f"http://127.0.0.1:{silent.getsockname()[1]}", "0" * 32, interval_s=0.1).start()
        thread = monitor._thread
        monitor.stop(wait_s=0.1)
        assert thread.is_alive() and thread.daemon  # stop did not wait for the hanging request
        assert monitor._thread is None
        monitor.stop()  # a second stop is a no-op
    finally:
        silent.close()


def test_zero_turns_them_off():
    monitor = SystemMetrics("http://127.0.0.1:9", "0" * 32, interval_s=0).start()
    assert monitor._thread is None
    monitor.stop()
