"""Benchmark: sentences/s of the tagger served over HTTP by ``mlflow models serve``, at 1 and 8 concurrent clients.

The same tagger as ``bench_predict.py`` (a randomly initialised 2 x 768 encoder, vocabulary from the Wojood
sample's train split) is saved twice, identical but for its recorded precision, and each copy is logged as
nerlab's MLflow Model (``log_tagger``: the pyfunc that ``nerlab select`` registers) in a local SQLite store.
Each is served in turn by a real ``mlflow models serve --env-manager local -w 1`` process on 127.0.0.1, and
clients (threads, one keep-alive connection each) post the sample's test sentences as ``{"inputs": [...]}``,
one sentence per request (online tagging) and 32 per request (bulk), for ``--seconds`` each after a warm-up.
Printed and kept: sentences/s and the median and p95 latency of a request, per precision, clients and
sentences per request, all from one run on one machine; each with the CPU's token budget per prediction batch
as it is (``budget: default``) and without one (``$NERLAB_CPU_BATCH_TOKENS=0``: one batch per request of up to
32 sentences, as before the budget).

Usage: ``python tests/benchmarks/bench_serve.py [--json PATH] [--seconds 20] [--clients 1 8] [--budgets default 0]``;
``--smoke``: a 2 x 64 encoder, 3 s per setting.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import torch

from nerlab.models.predict import CPU_BATCH_TOKENS, CPU_BATCH_TOKENS_ENV

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict import SAMPLE, build_models  # noqa: E402  (the same tagger, fp32- and bf16-trained)


def log_models(folders: dict[str, Path], uri: str, example: list[str]) -> dict[str, str]:
    """Each folder logged as nerlab's MLflow Model under a run of its own; precision -> ``models:/<id>``."""
    import mlflow

    from nerlab.platform.tracking.logged_model import log_tagger

    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("bench-serve")
    out = {}
    for precision, folder in folders.items():
        run = client.create_run(exp, run_name=precision)
        out[precision] = log_tagger(folder, run.info.run_id, uri, example).model_uri
        client.set_terminated(run.info.run_id)
    return out


def load(url: str, batches: list[list[str]], clients: int, seconds: float) -> dict:
    """``clients`` threads post ``batches`` round-robin for ``seconds``; sentences/s and request latencies."""
    host = urlparse(url)
    stop = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(clients)]
    sentences = [0] * clients
    errors: list[str] = []

    def client(i: int) -> None:
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=120)
        k = i
        while not stop.is_set():
            batch = batches[k % len(batches)]
            k += clients
            body = json.dumps({"inputs": batch})
            t = time.perf_counter()
            try:
                conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
                r = conn.getresponse()
                answer = r.read()
            except (OSError, http.client.HTTPException) as e:
                errors.append(repr(e))
                conn.close()
                conn = http.client.HTTPConnection(host.hostname, host.port, timeout=120)
                continue
            if r.status != 200 or len(json.loads(answer)["predictions"]) != len(batch):
                errors.append(f"HTTP {r.status}: {answer[:200]!r}")
                continue
            if not stop.is_set():  # a request still in flight at the bell is not counted
                latencies[i].append(time.perf_counter() - t)
                sentences[i] += len(batch)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    wall = time.perf_counter() - t0
    for t in threads:
        t.join()
    lat = sorted(x for per in latencies for x in per)
    return {"clients": clients, "sentences_per_request": len(batches[0]), "seconds": wall, "requests": len(lat),
            "sentences": sum(sentences), "sentences_per_s": sum(sentences) / wall,
            "latency_median_s": statistics.median(lat) if lat else None,
            "latency_p95_s": lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else None, "errors": len(errors),
            "first_errors": errors[:3]}


def serve(model_uri: str, tracking_uri: str, tmp: Path, budget: str):
    """``mlflow models serve`` of ``model_uri`` on a free port, up once /ping answers; (process, url)."""
    from nerlab.platform.tracking import server as mlflow_server

    # the serving command runs `uvicorn` from PATH: make it this interpreter's
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "uvicorn").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m uvicorn "$@"\n')
    (bin_dir / "uvicorn").chmod(0o755)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop(CPU_BATCH_TOKENS_ENV, None)
    if budget != "default":
        env[CPU_BATCH_TOKENS_ENV] = budget

    def cmd(port: int) -> list[str]:
        return [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
                "-h", "127.0.0.1", "-p", str(port), "-w", "1"]

    return mlflow_server.start_command(cmd, health="/ping", log_file=tmp / "serve.log", env=env, timeout=300)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--json", type=Path)
    p.add_argument("--seconds", type=float, default=20.0, help="load time per setting")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 32], help="sentences per request")
    p.add_argument("--budgets", nargs="+", default=["default", "0"],
                   help=f"{CPU_BATCH_TOKENS_ENV} of the server: default (as shipped) or sub-words (0: none)")
    args = p.parse_args(argv)
    from nerlab.models.precision import cpu_bf16_supported
    from nerlab.models.wojood import read_file
    from nerlab.platform.tracking import server as mlflow_server

    hidden, seconds = (64, 3.0) if args.smoke else (768, args.seconds)
    tmp = Path(tempfile.mkdtemp(prefix="bench_serve."))
    test = [" ".join(s.tokens) for s in read_file(SAMPLE / "test.txt")]
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    models = log_models(build_models(tmp, hidden), uri, test[0].split())
    rows = []
    for budget in args.budgets:
        for precision, model_uri in models.items():
            proc, url = serve(model_uri, uri, tmp, budget)
            try:
                for size in args.batch:
                    batches = [test[i:i + size] for i in range(0, len(test) - size + 1, size)]
                    load(url, batches, 1, min(3.0, seconds))  # warm-up: first calls, allocator, lazy imports
                    for clients in args.clients:
                        r = {"precision": precision, "budget": budget, **load(url, batches, clients, seconds)}
                        rows.append(r)
                        print(f"{precision} budget {budget} {size:>2} sentence(s)/request, {clients} client(s): "
                              f"{r['sentences_per_s']:.1f} sentences/s, latency median {r['latency_median_s']:.3f} s "
                              f"p95 {r['latency_p95_s']:.3f} s, {r['errors']} errors", flush=True)
            finally:
                mlflow_server.stop(proc)
    results = {"cpu_batch_tokens": CPU_BATCH_TOKENS, "encoder": f"2x{hidden}", "cpu_bf16_supported": cpu_bf16_supported(), "cpus": os.cpu_count(),
               "serve_workers": 1, "seconds_per_setting": seconds, "test_sentences": len(test),
               "test_tokens": sum(len(t.split()) for t in test), "torch": torch.__version__, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
