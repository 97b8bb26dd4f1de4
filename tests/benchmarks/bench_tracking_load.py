"""Benchmark: a tracking server under the load of a study's trials, SQLite-backed vs PostgreSQL-backed.

16 trial loggers (processes, as Tune's trials are) each open a run and log ``--batches`` batches of
per-epoch-like metrics (``log_batch`` of 20 metrics) as fast as the server answers, against:
- ``sqlite``: the server a study starts by default (``platform/mlflow_server.py``: a SQLite store under the
  study's folder, local artifacts, 1 worker);
- ``postgres``: README's team server (``mlflow server`` on PostgreSQL with S3 artifacts in SeaweedFS, started
  by tests/lab.py) with 1 worker, and with ``--workers`` (default 2).
Same machine, one run, servers measured one after another. Printed per server: requests/s over the whole
load, p50/p95 latency of ``log_batch``, errors (MLflow's client retries are off, so a failure counts).
Figures only, no assertion on time.

Usage: ``python tests/benchmarks/bench_tracking_load.py [--loggers 16] [--batches 40] [--workers 2] [--json PATH]``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import lab as L  # noqa: E402  (tests/lab.py)


def logger(url: str, experiment_id: str, batches: int, start, results) -> None:
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # a failed request is an error, not a retry
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    c = MlflowClient(url)
    run = c.create_run(experiment_id)
    start.wait()
    lat, errors = [], 0
    for step in range(batches):
        ts = int(time.time() * 1000)
        metrics = [Metric(f"val/f1_type_{k}", 0.01 * k + step, ts, step) for k in range(20)]
        t0 = time.perf_counter()
        try:
            c.log_batch(run.info.run_id, metrics=metrics)
            lat.append(time.perf_counter() - t0)
        except Exception:
            errors += 1
    results.put((lat, errors))


def load(url: str, loggers: int, batches: int) -> dict:
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(url).create_experiment(f"load-{time.time_ns()}")
    ctx = mp.get_context("spawn")
    start, results = ctx.Barrier(loggers + 1), ctx.Queue()
    procs = [ctx.Process(target=logger, args=(url, exp, batches, start, results)) for _ in range(loggers)]
    for p in procs:
        p.start()
    start.wait()  # every logger has its run: the timed part is log_batch only
    t0 = time.perf_counter()
    got = [results.get() for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    lat = sorted(x for g in got for x in g[0])
    errors = sum(g[1] for g in got)
    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else [lat[0]] * 99
    return {"requests": len(lat) + errors, "errors": errors, "wall_s": wall, "req_per_s": len(lat) / wall,
            "p50_ms": 1000 * q[49], "p95_ms": 1000 * q[94]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--loggers", type=int, default=16)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    reason = L.missing()
    if reason:
        sys.exit(f"cannot start the lab here: {reason}")
    from nerlab.platform.tracking import server as mlflow_server
    from nerlab.platform.tracking.runs import create_store, default_store

    out = {"loggers": args.loggers, "batches": args.batches, "metrics_per_batch": 20}
    with tempfile.TemporaryDirectory() as d:
        uri, artifacts = default_store(d)
        create_store(uri)
        proc, url = mlflow_server.start(uri, artifacts, log_file=Path(d) / "server.log")
        try:
            out["sqlite"] = load(url, args.loggers, args.batches)
        finally:
            mlflow_server.stop(proc)
    lab = L.start_lab()
    try:
        out[f"postgres_{args.workers}w"] = load(lab.server.url, args.loggers, args.batches)
        lab.server.stop()
        lab.server = L.start_mlflow(lab.backend, f"s3://{lab.bucket}/artifacts", lab.root / "mlflow1.log",
                                    lab.s3.env(), workers=1)
        out["postgres_1w"] = load(lab.server.url, args.loggers, args.batches)
    finally:
        lab.stop()
    for name in ("sqlite", "postgres_1w", f"postgres_{args.workers}w"):
        r = out[name]
        print(f"{name:12s} {r['req_per_s']:7.1f} req/s  p50 {r['p50_ms']:6.1f} ms  p95 {r['p95_ms']:6.1f} ms  "
              f"errors {r['errors']}/{r['requests']}")
    base = out["sqlite"]
    for name in ("postgres_1w", f"postgres_{args.workers}w"):
        print(f"{name} vs sqlite: {out[name]['req_per_s'] / base['req_per_s']:.2f}x req/s, "
              f"p95 {out[name]['p95_ms'] / base['p95_ms']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
