"""Benchmark: how long nerlab waits where the tests only check that it does not wait for good.

- ``system_metrics_stop_s``: ``SystemMetrics.stop(wait_s=1.0)`` while the tracking server is away (nothing
  listens on its port; MLflow's client retries there): at most ``wait_s`` and a little (tests/platform/
  test_system_metrics.py checks that stop leaves the hanging thread behind).
- ``dead_lease_takeover_s``: taking over the server lease of a driver that was SIGKILLed a moment ago, its
  heartbeat still fresh: seconds, well under ``ownership.STALE_S`` (tests/platform/test_ownership.py
  checks that only the holder's death frees it).

Usage: ``python tests/benchmarks/bench_waits.py [--smoke] [--json PATH]`` (``--smoke``: one round).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path


def system_metrics_stop(rounds: int) -> list[float]:
    from nerlab.platform.training.system_metrics import SystemMetrics

    out = []
    for _ in range(rounds):
        monitor = SystemMetrics("http://127.0.0.1:9", "0" * 32, interval_s=0.1).start()  # nothing listens
        time.sleep(0.5)  # let it sample and fail a write or two
        t = time.monotonic()
        monitor.stop(wait_s=1.0)
        out.append(time.monotonic() - t)
    return out


def dead_lease_takeover(rounds: int) -> list[float]:
    from mlflow.tracking import MlflowClient

    from nerlab.platform.studies import ownership
    from nerlab.platform.tracking import server as mlflow_server

    out = []
    with tempfile.TemporaryDirectory() as d:
        proc, url = mlflow_server.start(f"sqlite:///{Path(d) / 'mlflow.db'}", Path(d).as_uri())
        try:
            for i in range(rounds):
                code = textwrap.dedent(f"""
                    import time
                    from mlflow.tracking import MlflowClient
                    from nerlab.platform.studies.ownership import ServerLease
                    with ServerLease(MlflowClient({url!r}), "bench/{i}", "bench"):
                        print("held", flush=True)
                        time.sleep(600)
                """)
                holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
                assert holder.stdout.readline().strip() == "held"
                holder.kill()
                holder.wait()
                t = time.monotonic()
                with ownership.ServerLease(MlflowClient(url), f"bench/{i}", "bench"):
                    out.append(time.monotonic() - t)
        finally:
            mlflow_server.stop(proc)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rounds = 1 if args.smoke else 5
    from nerlab.platform.studies import ownership

    figures = {"system_metrics_stop_s": system_metrics_stop(rounds), "dead_lease_takeover_s": dead_lease_takeover(rounds),
               "stale_s": ownership.STALE_S}
    for name in ("system_metrics_stop_s", "dead_lease_takeover_s"):
        v = figures[name]
        print(f"{name}: median {statistics.median(v):.2f} s, max {max(v):.2f} s over {len(v)}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
