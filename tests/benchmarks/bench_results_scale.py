"""Benchmark: how the results verbs grow with a study's trials (time and peak memory), on SQLite and PostgreSQL.

Builds, per size N, a study folder and its MLflow store holding a grid study's parent run and N trial
child runs, logged synthetically through the MLflow client as a study writes them (``platform/training/job.py``
``open_run``, ``platform/studies/driver.py``): tags plm/loss/penalty/seed/task, ``nerlab.trial``, ``nerlab.study``,
``mlflow.parentRunId``; params ``trial.*``, ``resources.*``; per-epoch metrics for 5 epochs; and, for a
finished trial, the final best/val/micro_f1, test/micro_f1, best_epoch, its val report and val predictions
(a third of the trials are stopped early by "ASHA": epochs 1-2 only, no final metrics, no artifacts). The
grid is 5 PLMs x 2 losses x 5 λ (50 configurations) x N/50 seeds.

The store (``--backend``): ``sqlite``, the study's own ``mlflow.db`` with its artifacts in the study folder;
``postgresql``, a database of its own per size in a fresh PostgreSQL cluster (tests/lab.py's
``start_postgres``), the runs written straight to it, and an ``mlflow server`` over it (``start_mlflow``,
``--artifacts-destination`` a local folder: the runs' artifacts are ``mlflow-artifacts:/`` URIs, as on a
lab's server; the bucket behind it is left out). ``--backends sqlite postgresql`` measures both, verb by verb
interleaved, and prints PostgreSQL / SQLite ratios per verb and size.

Then runs each verb as a user does, in its own process (``nerlab leaderboard``, ``nerlab report --no-log``,
``nerlab select --dry-run``, ``nerlab study status``), and records its wall time and peak RSS
(``ru_maxrss`` of the child). Goal: each <= 5 s at 2,000 runs, and linear or better from 200 to 2,000.
On PostgreSQL (``ROUTES``): ``leaderboard`` runs with ``--tracking-uri postgresql://...`` (the database read
directly, one query per table); ``report`` and ``select`` with ``--tracking-uri http://SERVER``, since they read
artifacts (each finished trial's val predictions, the gold file) that only the server serves; ``study
status`` has no ``--tracking-uri``: it reads the store its study.yaml names, the ``postgresql://`` URI. The
verb's CPU seconds are its own process's: the database's and the server's work shows in its wall time only.

Usage: ``python tests/benchmarks/bench_results_scale.py [--smoke] [--sizes 200 2000] [--backends sqlite postgresql]
[--json PATH] [--out DIR]``; the comparison's figures go to ``--json tests/benchmarks/results/results_scale_pg.json``
(table.py's PostgreSQL vs SQLite rows), beside the SQLite-only ``results_scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_study import base_spec  # noqa: E402
import lab as L  # noqa: E402  (tests/lab.py)

PLMS = ["tiny:2x32", "tiny:2x64", "tiny:4x32", "tiny:4x64", "tiny:2x128"]
LOSSES = ["ce", "unified"]
PENALTIES = [0.0, 1.0, 2.0, 5.0, 10.0]
EPOCHS = 5
TYPES = ["PERS", "ORG", "GPE", "LOC", "DATE", "NORP", "OCC", "FAC"]
VERBS = {
    "leaderboard": ["leaderboard", "{folder}"],
    "report": ["report", "{folder}", "--no-log", "--out", "{folder}/report"],
    "select": ["select", "{folder}", "--dry-run", "--name", "bench"],
    "study status": ["study", "status", "{folder}"],
}
# How each verb reaches a PostgreSQL store (on SQLite each reads the study's own store): ``database``: with
# ``--tracking-uri postgresql://...`` (one query per table); ``server``: with ``--tracking-uri http://...`` of an
# mlflow server over the database, since the verb reads artifacts (val predictions, gold), which a lab's
# runs have as ``mlflow-artifacts:/`` URIs that only the server resolves; ``spec``: the verb has no
# --tracking-uri and reads the store study.yaml names.
ROUTES = {"leaderboard": "database", "report": "server", "select": "server", "study status": "spec"}
BACKENDS = ("sqlite", "postgresql")


def build_store(folder: Path, n: int, uri: str, served: Path | None = None, seed: int = 0) -> float:
    """The study folder with ``n`` trial runs in the store ``uri`` (its study.yaml names it); returns the
    seconds it took to log them. ``served``: the ``--artifacts-destination`` folder of the tracking server that
    will serve the store (the runs' artifact URIs are then ``mlflow-artifacts:/NAME/...``, as a lab server
    gives them); else the artifacts are the study folder's own ``mlartifacts``, as a study's SQLite store has
    them. Artifact files are written where the store's artifact URIs put them, not uploaded."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from nerlab.models import names as N
    from nerlab.models.synth import write_corpus
    from nerlab.platform.tracking import runs as T
    from nerlab.platform.specs.study import StudySpec
    from nerlab.platform.specs.loader import from_dict

    seeds = list(range(3407, 3407 + max(1, n // (len(PLMS) * len(LOSSES) * len(PENALTIES)))))
    name = folder.name
    spec_dict = {**base_spec(name, 200, EPOCHS), "output": str(folder), "tracking": {"tracking_uri": uri},
                 "search": {"mode": "grid", "plm": PLMS, "loss": LOSSES, "variance_penalty": PENALTIES, "seeds": seeds}}
    spec = from_dict(StudySpec, spec_dict, "bench")
    folder.mkdir(parents=True)
    (folder / N.STUDY_FILE).write_text(yaml.safe_dump(spec.to_dict(), allow_unicode=True, sort_keys=False))
    corpus = write_corpus(folder / "prepared", 200, 0)
    gold = Path(corpus["val"]).read_text(encoding="utf-8")
    if served is None:
        location, artifacts = (folder / "mlartifacts").as_uri(), folder / "mlartifacts"
    else:
        location, artifacts = f"mlflow-artifacts:/{name}", served / name

    def write_artifact(run_id: str, path: str, text: str) -> None:
        f = artifacts / run_id / "artifacts" / path
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text, encoding="utf-8")

    start = time.perf_counter()
    client = MlflowClient(uri)
    exp = client.create_experiment(name, artifact_location=location)
    parent = client.create_run(exp, run_name=name, tags={N.STUDY_RUN_TAG: name, N.KIND_TAG: "study"})
    T.log_params(client, parent.info.run_id, T.spec_params(spec), {})
    write_artifact(parent.info.run_id, N.gold_file("val"), gold)
    base_params = T.flatten(T.spec_params(spec.base_run()))
    rng = random.Random(seed)
    t0 = 1_700_000_000_000
    i = 0
    for s in seeds:
        for plm in PLMS:
            for loss in LOSSES:
                for lam in PENALTIES:
                    i += 1
                    trial = f"{i:05d}"
                    quality = 0.4 + 0.05 * PLMS.index(plm) + 0.02 * LOSSES.index(loss) - 0.005 * lam
                    stopped = rng.random() < 1 / 3
                    tags = {N.JOB_TAG: f"{name}/{trial}", N.TRIAL_TAG: trial, N.STUDY_TAG: name, "study": name,
                            "trial": trial, "plm": plm, "loss": loss, "penalty": str(lam), "seed": str(s),
                            "task": "nested", "git_commit": "bench", N.PARENT_RUN_TAG: parent.info.run_id,
                            N.DEVICE_TAG: "cpu", N.PRECISION_TAG: "fp32"}
                    if stopped:
                        tags[N.STOPPED_EARLY_TAG] = "true"
                    run = client.create_run(exp, run_name=trial, tags=tags, start_time=t0 + i * 1000)
                    rid = run.info.run_id
                    params = {**base_params, "trial.plm": plm, "trial.loss": loss, "trial.variance_penalty": str(lam),
                              "trial.seed": str(s), "inputs.val": "/nonexistent/val.txt"}
                    ps = [Param(k, v) for k, v in params.items()]
                    metrics = []
                    epochs = 2 if stopped else EPOCHS
                    best = 0.0
                    for e in range(1, epochs + 1):
                        f1 = min(0.99, quality * (1 - 0.5 ** e) + rng.gauss(0, 0.01))
                        best = max(best, f1)
                        ts = t0 + i * 1000 + e * 100
                        vals = {N.VAL_F1: f1, N.TRAIN_LOSS: 1.0 / e, N.EPOCH_SECONDS: 5.0, N.LR: 3e-3,
                                N.TOKENS_PER_S: 2000.0, N.VAL_P: f1, N.VAL_R: f1, N.TRAIN_PENALTY: 0.0}
                        vals.update({N.VAL_TYPE_F1.format(t): f1 for t in TYPES})
                        metrics += [Metric(k, float(v), ts, e) for k, v in vals.items()]
                    if not stopped:
                        final = {N.BEST_EPOCH: epochs, N.BEST_VAL_F1: best, N.TEST_F1: best - 0.01}
                        final.update({N.TEST_TYPE_F1.format(t): best for t in TYPES})
                        metrics += [Metric(k, float(v), t0 + i * 1000 + 900, epochs) for k, v in final.items()]
                    for j in range(0, len(ps), 100):
                        client.log_batch(rid, params=ps[j:j + 100])
                    for j in range(0, len(metrics), 1000):
                        client.log_batch(rid, metrics=metrics[j:j + 1000])
                    if not stopped:
                        rep = {"micro": {"f1": best}, "per_type": {t: {"f1": best, "precision": best, "recall": best,
                                                                      "support": 10} for t in TYPES}}
                        write_artifact(rid, N.report_file("val"), json.dumps(rep))
                        write_artifact(rid, N.predictions_file("val"), gold)
                    client.set_terminated(rid, "FINISHED", end_time=t0 + i * 1000 + 950)
    client.set_terminated(parent.info.run_id, "FINISHED")
    return time.perf_counter() - start


def run_verb(folder: Path, argv: list[str], code: str | None = None) -> dict:
    """Wall time, CPU time and peak RSS of ``nerlab ARGV`` in a fresh process (``getrusage`` via a wrapper);
    ``code``: a folder holding another ``nerlab`` package to run instead (an earlier commit)."""
    args = [a.format(folder=folder) for a in argv]
    wrapper = ("import resource, runpy, sys, time\n"
            "sys.argv = ['nerlab'] + sys.argv[1:]\n"
            "t = time.perf_counter()\n"
            "try:\n"
            "    runpy.run_module('nerlab.platform.cli', run_name='__main__')\n"
            "except SystemExit as e:\n"
            "    rc = e.code or 0\n"
            "else:\n"
            "    rc = 0\n"
            "u = resource.getrusage(resource.RUSAGE_SELF)\n"
            "sys.stderr.write('\\nBENCH %f %d %d %f\\n' % (time.perf_counter() - t, u.ru_maxrss, rc, "
            "u.ru_utime + u.ru_stime))\n")
    env = {**os.environ, **({"PYTHONPATH": code} if code else {})}
    start = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", wrapper, *args], capture_output=True, text=True, env=env,
                       cwd=code or None)
    wall = time.perf_counter() - start
    line = [x for x in p.stderr.splitlines() if x.startswith("BENCH ")]
    if p.returncode != 0 or not line or line[-1].split()[3] != "0":
        sys.exit(f"nerlab {' '.join(args)} failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    _, inner, rss, _, cpu = line[-1].split()
    return {"wall_s": wall, "verb_s": float(inner), "cpu_s": float(cpu), "peak_rss_mib": int(rss) / 1024}


def postgres_store(pg, root: Path, n: int, served: Path) -> tuple[Path, str]:
    """The study of ``n`` trial runs in a database of its own on ``pg``, built in a child process (see main);
    returns its folder and its ``postgresql://`` URI (driven by psycopg 3)."""
    folder = root / f"pg-scale-{n}"
    shutil.rmtree(folder, ignore_errors=True)  # its database is new: so is its folder
    uri = pg.createdb(f"scale{n}")
    subprocess.run([sys.executable, __file__, "--build", str(folder), str(n), uri, str(served)], check=True)
    return folder, uri


def sqlite_store(root: Path, n: int) -> Path:
    """The study of ``n`` trial runs in its own SQLite store, kept (and reused) under ``root``."""
    folder = root / f"scale-{n}"
    if not (folder / "mlflow.db").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        subprocess.run([sys.executable, __file__, "--build", str(folder), str(n),
                        f"sqlite:///{folder / 'mlflow.db'}"], check=True)
    return folder


def show(verb: str, n: int, backend: str, r: dict, before: bool = False) -> None:
    print(f"{verb:14} N={n:5} {backend:10} {'before ' if before else ''}{r['wall_s']:6.2f} s wall, "
          f"{r['cpu_s']:6.2f} s CPU (verb {r['verb_s']:.2f} s), peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="50 and 100 runs: checks the script works")
    ap.add_argument("--sizes", type=int, nargs="+", help="trial runs per store (default 200 2000)")
    ap.add_argument("--backend", "--backends", dest="backends", nargs="+", choices=BACKENDS, default=["sqlite"],
                    help="the store(s) to measure: sqlite (the study's own), postgresql (a fresh PostgreSQL "
                         "cluster and an mlflow server over it, as tests/lab.py starts them), or both side by side")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--out", help="keep the stores here (default: a temporary folder); an existing SQLite store "
                    "is reused (PostgreSQL ones are built anew in a temporary cluster)")
    ap.add_argument("--verbs", nargs="+", choices=list(VERBS), default=list(VERBS))
    ap.add_argument("--compare", help="a folder holding an earlier nerlab (e.g. `git archive COMMIT` under "
                    "DIR/nerlab): each verb runs with it, then with this checkout, interleaved")
    ap.add_argument("--build", nargs="+", metavar="ARG", help=argparse.SUPPRESS)  # FOLDER N URI [SERVED]
    args = ap.parse_args(argv)
    if args.build:
        folder, n, uri, *served = args.build
        build_store(Path(folder), int(n), uri, Path(served[0]) if served else None)
        return 0
    backends = list(dict.fromkeys(args.backends))
    if "postgresql" in backends and L.missing():
        sys.exit(f"--backend postgresql: cannot start PostgreSQL here: {L.missing()}")
    sizes = args.sizes or ([50, 100] if args.smoke else [200, 2000])
    root = Path(args.out or tempfile.mkdtemp(prefix="bench-results-"))
    root.mkdir(parents=True, exist_ok=True)
    fig: dict = {"smoke": args.smoke, "sizes": sizes, "epochs": EPOCHS, "backends": backends, "verbs": {},
                 "build_s": {}}
    # the SQLite figures stay at the top level (tests/benchmarks/table.py reads them there)
    slots = {"sqlite": fig, "postgresql": fig.setdefault("postgresql", {"verbs": {}, "build_s": {}, "routes": {
        verb: ROUTES[verb] for verb in args.verbs}}) if "postgresql" in backends else None}
    pg = pg_root = server = None
    if "postgresql" in backends:
        pg_root = Path(tempfile.mkdtemp(prefix="bench-results-pg-"))  # not under --out: the postgres user reads it
        os.chmod(pg_root, 0o755)
        pg = L.start_postgres(pg_root)
    try:
        for n in sizes:
            uris: dict[str, dict] = {}  # backend: the --tracking-uri of each route (none: the study's own store)
            folders: dict[str, Path] = {}
            for backend in backends:
                # Each store is built in a child process: Linux keeps a process's peak RSS across exec, so a bench
                # process grown by building the store would set a floor under every verb's figure it starts afterwards.
                t = time.perf_counter()
                if backend == "sqlite":
                    folders[backend], uris[backend] = sqlite_store(root, n), {}
                else:
                    folders[backend], db = postgres_store(pg, root, n, pg_root / "artifacts")
                    uris[backend] = {"database": db, "spec": None}
                    if "server" in {ROUTES[v] for v in args.verbs}:
                        server = L.start_mlflow(db, str(pg_root / "artifacts"), pg_root / f"mlflow-{n}.log")
                        uris[backend]["server"] = server.url
                slots[backend]["build_s"][str(n)] = time.perf_counter() - t
                print(f"{backend} store of {n} trial runs ready in {slots[backend]['build_s'][str(n)]:.0f} s", flush=True)
            for verb in args.verbs:
                for backend in backends:  # interleaved, so that a busy machine weighs on both alike
                    uri = uris[backend].get(ROUTES[verb])
                    argv = VERBS[verb] + (["--tracking-uri", uri] if uri else [])
                    if args.compare:
                        b = run_verb(folders[backend], argv, args.compare)
                        slots[backend].setdefault("before", {}).setdefault(verb, {})[str(n)] = b
                        show(verb, n, backend, b, before=True)
                    r = run_verb(folders[backend], argv)
                    slots[backend]["verbs"].setdefault(verb, {})[str(n)] = r
                    show(verb, n, backend, r)
            if server is not None:
                server.stop()
                server = None
    finally:
        if server is not None:
            server.stop()
        if pg is not None:
            pg.stop("immediate")
            shutil.rmtree(pg_root, ignore_errors=True)
    lo, hi = str(min(sizes)), str(max(sizes))
    fig["n_ratio"] = int(hi) / int(lo)
    for backend in backends:
        for verb, by in slots[backend]["verbs"].items():
            # growth of the CPU seconds (start-up and imports included), hi over lo, against N's ratio
            by["growth"] = by[hi]["cpu_s"] / max(by[lo]["cpu_s"], 1e-9)
        print(f"{backend}: growth of each verb's CPU time from N={lo} to N={hi} (N grows {fig['n_ratio']:.0f}x): "
              + ", ".join(f"{v} {by['growth']:.1f}x" for v, by in slots[backend]["verbs"].items()))
    if len(backends) == 2:
        # wall time is the figure to compare: on PostgreSQL part of the work is done by the database (and the
        # tracking server), whose CPU seconds are not the verb's
        ratios = fig["pg_over_sqlite"] = {verb: {str(n): {k: fig["postgresql"]["verbs"][verb][str(n)][k] / max(
            fig["verbs"][verb][str(n)][k], 1e-9) for k in ("wall_s", "cpu_s", "peak_rss_mib")} for n in sizes}
            for verb in args.verbs}
        print("PostgreSQL / SQLite, wall time (the verb's own CPU) per verb and size:")
        for verb, by in ratios.items():
            print(f"  {verb:14} ({ROUTES[verb]:8}) " + ", ".join(
                f"N={n}: {r['wall_s']:.2f}x ({r['cpu_s']:.2f}x)" for n, r in by.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
