"""Benchmark: what a study costs beyond its training, and how much of a grid Optuna + ASHA needs.

Every study runs as a user runs it (``nerlab study run SPEC --json`` in a subprocess, local Ray, SQLite
MLflow store behind a local server) on a synthetic corpus with tiny BERTs built on the fly. Figures come
from the studies' MLflow stores, never from Tune's files:

- ``trial_overhead_s``: the fixed cost of one trial (Train worker group, model load, encoding, final
  scoring, checkpoints, artifacts, MLflow run). Two single-trial studies differ only in their epochs
  (1 and 5); the trial's MLflow run duration is a + b * epochs, and a is the overhead.
- ``study_overhead_s``: the 1-epoch study's wall time minus its trial's run duration (Ray and MLflow
  server start, data and PLM preparation, Tune, the leaderboard).
- ``grid_efficiency``: for a full grid (PLM x loss x penalty), the sum of its trials' training time
  (``train/epoch_seconds`` over every epoch) over the study's wall time; ``grid_concurrency`` is the sum
  of the trials' run durations over the wall time.
- ``search_share``: the epochs Optuna (TPE) + ASHA trains, in trial completion order, until a trial
  comes within 1 F1 point of the grid's best validation F1, over the grid's epochs; the median over
  several sampler seeds (``--search-seeds``), a search that never gets there counting all its epochs.
  Target <= 0.40.

Usage: ``python tests/benchmarks/bench_study.py [--smoke] [--json PATH] [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

TARGET_SHARE = 0.40


def base_spec(name: str, sentences: int, epochs: int) -> dict:
    return {
        "name": name, "task": "nested",
        "data": {"synth": {"sentences": sentences, "seed": 0}},
        "model": {"max_length": 64},
        "train": {"epochs": epochs, "batch_size": 16, "lr": 3.0e-3, "patience": epochs, "seed": 3407},
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 0.9, "trial_cpus": 0.1, "max_concurrent": 2},
    }


def run_study(spec: dict, root: Path, smoke: bool = False) -> tuple[float, Path]:
    """``nerlab study run`` on ``spec`` in a subprocess: its wall time and output folder, whose name is the
    study's (with ``smoke``, the smoke study beside it: ``NAME-smoke``)."""
    path = root / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    out = root / spec["name"]
    start = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "nerlab.platform.cli", "study", "run", str(path), "--output", str(out),
                        "--json", *(["--smoke"] if smoke else [])], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if p.returncode != 0:
        sys.exit(f"study {spec['name']} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return wall, out.parent / f"{out.name}-smoke" if smoke else out


def trials(out: Path, name: str) -> list[dict]:
    """Per trial, from MLflow: epochs trained, training seconds, run duration, best val F1, end time."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    rows = []
    for r in client.search_runs([exp.experiment_id], "tags.`nerlab.trial` != ''", max_results=10000):
        f1 = [m.value for m in client.get_metric_history(r.info.run_id, "val/micro_f1")]
        secs = [m.value for m in client.get_metric_history(r.info.run_id, "train/epoch_seconds")]
        rows.append({"trial": r.data.tags["nerlab.trial"], "plm": r.data.tags.get("plm"),
                     "loss": r.data.tags.get("loss"), "penalty": r.data.tags.get("penalty"),
                     "epochs": len(f1), "best_f1": max(f1, default=0.0), "train_s": sum(secs),
                     "run_s": (r.info.end_time - r.info.start_time) / 1000, "end": r.info.end_time,
                     "start": r.info.start_time,
                     "stopped_early": r.data.tags.get("nerlab.stopped_early") == "true"})
    return rows


MODES = ("inline", "ray_train")  # resources.single_worker


def costs(root: Path, mode: str, sentences: int, epochs: int, plms, losses, penalties) -> dict:
    """Fixed costs (1) and the full grid (2) with one-worker trials run ``mode``."""
    fig: dict = {}
    # 1. Fixed costs: the same one-trial study with 1 and with 5 epochs (a wide spread, so that a second of
    # noise in either run moves the per-epoch slope by a quarter second at most).
    one = {"mode": "grid", "plm": ["tiny:2x32"], "loss": ["ce"], "variance_penalty": [0.0], "seeds": [3407]}
    walls, runs = {}, {}
    for e in (1, 5):
        spec = with_mode({**base_spec(f"overhead-{e}-{mode}", sentences, e), "search": one}, mode)
        walls[e], out = run_study(spec, root)
        (t,) = trials(out, spec["name"])
        runs[e] = t
    per_epoch = (runs[5]["run_s"] - runs[1]["run_s"]) / 4
    fig.update(trial_overhead_s=runs[1]["run_s"] - per_epoch, trial_epoch_s=per_epoch,
               trial_train_epoch_s=runs[5]["train_s"] / runs[5]["epochs"],
               study_overhead_s=walls[1] - runs[1]["run_s"], one_trial_study_wall_s=walls[1])

    # 2. The full grid. Its trials' phase: from the first trial run's start to the last one's end.
    name = f"grid-{mode}"
    grid = with_mode({**base_spec(name, sentences, epochs),
                      "search": {"mode": "grid", "plm": plms, "loss": losses, "variance_penalty": penalties,
                                 "seeds": [3407]}}, mode)
    grid_wall, out = run_study(grid, root)
    g = trials(out, name)
    train_s = sum(t["train_s"] for t in g)
    trials_wall = (max(t["end"] for t in g) - min(t["start"] for t in g)) / 1000
    fig.update(grid_trials=len(g), grid_wall_s=grid_wall, grid_train_s=train_s, grid_efficiency=train_s / grid_wall,
               grid_wall_over_train=grid_wall / train_s, grid_trials_wall_s=trials_wall,
               grid_trials_wall_over_train=trials_wall / train_s,
               grid_concurrency=sum(t["run_s"] for t in g) / grid_wall, grid_epochs=sum(t["epochs"] for t in g),
               grid_best_f1=max(t["best_f1"] for t in g))
    return fig


def with_mode(spec: dict, mode: str) -> dict:
    return {**spec, "resources": {**spec["resources"], "single_worker": mode}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="a small grid and few samples: checks the script works")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--out", help="keep the studies here (default: a temporary folder)")
    ap.add_argument("--search-seeds", type=int, help="Optuna searches, one per sampler seed (default 3; smoke 1; "
                    "0: fixed costs and grid only)")
    args = ap.parse_args(argv)

    sentences, epochs = (200, 2) if args.smoke else (600, 6)
    plms = ["tiny:2x32"] if args.smoke else ["tiny:2x32", "tiny:2x64"]
    losses, penalties = ["ce", "unified"], [0.0, 5.0]
    samples = 2 if args.smoke else 8
    if args.search_seeds is None:
        args.search_seeds = 1 if args.smoke else 3
    root = Path(args.out or tempfile.mkdtemp(prefix="bench-study-"))
    root.mkdir(parents=True, exist_ok=True)
    fig: dict = {"smoke": args.smoke, "sentences": sentences}

    # 1 and 2, once per way a one-worker trial runs (inline first: the default; then a Ray Train job per
    # trial, as before), side by side in this one invocation.
    for mode in MODES:
        fig[mode] = costs(root, mode, sentences, epochs, plms, losses, penalties)
    fig.update(fig[MODES[0]])  # the default's figures at the top level, as before
    g_best = fig["grid_best_f1"]
    # 3. Optuna (TPE) + ASHA over the same choices, once per sampler seed: one search can be lucky.
    shares, searches = [], []
    for sampler_seed in range(args.search_seeds):
        name = f"search-{sampler_seed}"
        search = {**base_spec(name, sentences, epochs),
                  "search": {"mode": "optuna", "plm": plms, "loss": losses, "variance_penalty": penalties,
                             "seeds": [3407], "num_samples": samples, "sampler_seed": sampler_seed},
                  "scheduler": {"asha": {"grace_period": 1, "reduction_factor": 2}}}
        search_wall, out = run_study(search, root)
        s = sorted(trials(out, name), key=lambda t: t["end"])
        spent, reached = 0, None
        for t in s:
            spent += t["epochs"]
            if reached is None and t["best_f1"] >= g_best - 0.01:
                reached = spent
        share = None if reached is None else reached / fig["grid_epochs"]
        shares.append(share)
        searches.append({"sampler_seed": sampler_seed, "trials": len(s), "wall_s": search_wall, "epochs": spent,
                         "stopped_early": sum(t["stopped_early"] for t in s),
                         "best_f1": max(t["best_f1"] for t in s), "epochs_to_reach": reached, "share": share})
    # A search that never came within 1 point counts as having used all of its epochs (and more).
    worst_case = [x if x is not None else max(r["epochs"] for r in searches) / fig["grid_epochs"] for x in shares]
    if searches:
            fig.update(searches=searches, search_trials=samples, search_share=statistics.median(worst_case),
                   search_share_max=max(worst_case), search_reached=sum(x is not None for x in shares),
                   search_stopped_early=sum(r["stopped_early"] for r in searches))

    for mode in MODES:
        f = fig[mode]
        print(f"[{mode}] trial overhead {f['trial_overhead_s']:.1f} s fixed + {f['trial_epoch_s']:.1f} s per epoch "
              f"(of which training steps {f['trial_train_epoch_s']:.1f} s) (1-trial study: "
              f"{f['one_trial_study_wall_s']:.1f} s wall, {f['study_overhead_s']:.1f} s outside the trial)")
        print(f"[{mode}] grid ({f['grid_trials']} trials) wall {f['grid_wall_s']:.1f} s, trials' phase "
              f"{f['grid_trials_wall_s']:.1f} s; training {f['grid_train_s']:.1f} s; wall / training "
              f"{f['grid_wall_over_train']:.2f} (trials' phase {f['grid_trials_wall_over_train']:.2f}); "
              f"best F1 {f['grid_best_f1']:.4f}")
    a, b = fig["ray_train"], fig["inline"]
    print(f"ray_train / inline: trial overhead {a['trial_overhead_s'] / b['trial_overhead_s']:.1f}x, grid wall "
          f"{a['grid_wall_s'] / b['grid_wall_s']:.2f}x, grid trials' phase {a['grid_trials_wall_s'] / b['grid_trials_wall_s']:.2f}x")
    for r in searches:
        share = "not reached" if r["share"] is None else f"{r['epochs_to_reach']}/{fig['grid_epochs']} epochs = {r['share']:.2f}"
        print(f"optuna+asha seed {r['sampler_seed']}  {r['epochs']} epochs, {r['stopped_early']} stopped early, "
              f"best F1 {r['best_f1']:.4f}; within 1 point of the grid's best after {share}")
    if searches:
        print(f"search share: median {fig['search_share']:.2f}, worst {fig['search_share_max']:.2f} over "
              f"{len(searches)} sampler seeds (target <= {TARGET_SHARE})")
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
