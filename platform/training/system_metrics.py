"""A trial's system metrics (CPU, memory, disk, network; GPU where pynvml is installed) in its MLflow run.

MLflow's own ``SystemMetricsMonitor`` samples them, under MLflow's names (``system/cpu_utilization_percentage``,
``system/system_memory_usage_megabytes``, ...), and the MLflow UI shows them on the run's System metrics
tab. Its thread, though, stops for good at the first request that fails, and its ``finish`` waits for the
thread, which waits out the HTTP client's retries while a tracking server is away. Training must neither
wait nor stop for a chart, so MLflow's monitor only samples here: this thread logs with its own client,
keeps what a failed write did not send (a bounded backlog) for the next try, and ``stop`` waits a few
seconds at most before leaving the thread (a daemon) behind.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("nerlab")

PREFIX = "system/"
BACKLOG = 2000  # metric values kept while the tracking server is away (about 10 minutes at 2 s)


class SystemMetrics:
    """Samples every ``interval_s`` seconds and logs each sample at steps 0, 1, 2, ... (a resumed run's
    next step after the ones it holds), as MLflow's own system metrics do."""

    def __init__(self, tracking_uri: str, run_id: str, interval_s: float = 2.0):
        self.uri, self.run_id, self.interval_s = tracking_uri, run_id, interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: list = []
        self._warned = False

    def start(self) -> "SystemMetrics":
        if self.interval_s <= 0:
            return self
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            # Only its monitors are used (chosen by what the machine has): nothing here talks to MLflow.
            self._monitor = SystemMetricsMonitor(self.run_id, sampling_interval=self.interval_s,
                                                 tracking_uri=self.uri)
            self._monitor.collect_metrics()  # psutil's first CPU reading is a baseline
            self._thread = threading.Thread(target=self._run, name="nerlab-system-metrics", daemon=True)
            self._thread.start()
        except Exception as e:  # noqa: BLE001 - no psutil, a monitor that fails: train without the charts
            log.warning("system metrics are off for run %s (%s: %s)", self.run_id, type(e).__name__, e)
        return self

    def stop(self, wait_s: float = 5.0) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(wait_s)
        self._thread = None

    def _run(self) -> None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.uri)
        step = self._next_step(client)
        while not self._stop.wait(self.interval_s):
            step = self._sample(client, step)
        self._sample(client, step)  # the last stretch, then one more try at anything left

    def _sample(self, client, step: int) -> int:
        from mlflow.entities import Metric

        m = self._monitor
        try:
            m.collect_metrics()
            values = m.aggregate_metrics()
            for monitor in m.monitors:
                monitor.clear_metrics()
        except Exception:  # noqa: BLE001
            return step
        now = int(time.time() * 1000)
        self._pending += [Metric(PREFIX + k, float(v), now, step) for k, v in values.items()]
        self._pending = self._pending[-BACKLOG:]
        try:
            for i in range(0, len(self._pending), 500):
                client.log_batch(self.run_id, metrics=self._pending[i:i + 500])
            self._pending = []
        except Exception as e:  # noqa: BLE001 - the server is away: keep the values, try at the next sample
            if not self._warned:
                self._warned = True
                log.warning("system metrics of run %s not logged yet (%s); retrying", self.run_id,
                            type(e).__name__)
        return step + 1

    def _next_step(self, client) -> int:
        try:
            steps = [mt.step for mt in client.get_metric_history(self.run_id, PREFIX + "cpu_utilization_percentage")]
        except Exception:  # noqa: BLE001
            return 0
        return max(steps) + 1 if steps else 0
