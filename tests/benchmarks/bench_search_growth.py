"""Benchmark: does a grown Optuna search continue the search, or start a new one?

For each of several sampler seeds, three ways to spend 2N tiny trials (``nerlab study run`` in subprocesses,
local Ray, SQLite MLflow store, inline one-worker trials, Optuna TPE over lr x λ x loss):

- ``at_once``: one study with ``num_samples: 2N``;
- ``grown``: the same study with ``num_samples: N``, then its spec raised to ``2N`` and run again (the
  second command's TPE proposes its points knowing the first N results, through ``optuna.db``);
- ``independent``: two studies of N trials with different sampler seeds, the best of both.

TPE draws its first ``--startup`` points at random (``search.startup_trials``). Each figure is the best
validation micro-F1 a way reached, read from the studies' MLflow stores; the JSON holds every seed's value and
the means and standard deviations, and how many seeds each way beat ``independent`` in. A continued search
should match ``at_once`` (within its seed-to-seed spread) and beat ``independent``. Also kept, for the second
half of the trials, where the history pays: their mean val F1, and the trials TPE spent in the region that
cannot learn (lr < 3e-4).

Usage: ``python tests/benchmarks/bench_search_growth.py [--smoke] [--json PATH] [--seeds 1 2 3 4 5] [--n 8]
[--startup 4]``
(about 25 minutes with the defaults on 2 cores; ``--smoke``: 2 seeds of 2 + 2 trials).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from nerlab.models import names as N

SLOW_LR = 3.0e-4  # below this, a tiny BERT learns almost nothing in two epochs


def spec(name: str, samples: int, sampler_seed: int, startup: int) -> dict:
    return {
        "name": name, "task": "nested",
        "data": {"synth": {"sentences": 240, "seed": 0}},
        "model": {"max_length": 64},
        # batch 8 and 240 sentences: at lr 1e-2 a tiny BERT passes val F1 0.2 by epoch 2 (test_study's ASHA
        # drill); 120 sentences at batch 16 learned nothing at any lr, so every search tied at about 0.016
        "train": {"epochs": 2, "batch_size": 8, "lr": 3.0e-3, "patience": 2, "seed": 3407},
        "search": {"mode": "optuna", "plm": ["tiny:2x32"], "loss": ["ce", "unified"],
                   "variance_penalty": {"uniform": [0.0, 10.0]}, "lr": {"log_uniform": [1.0e-5, 3.0e-2]},
                   "num_samples": samples, "sampler_seed": sampler_seed, "startup_trials": startup},
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 0.9, "trial_cpus": 0.1, "max_concurrent": 2},
    }


def run(s: dict, root: Path) -> Path:
    path = root / f"{s['name']}.yaml"
    path.write_text(yaml.safe_dump(s, sort_keys=False))
    out = root / s["name"]
    p = subprocess.run([sys.executable, "-m", "nerlab.platform.cli", "study", "run", str(path), "--output", str(out),
                        "--json"], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"study {s['name']} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return out


def trials(out: Path, name: str) -> list[tuple[int, float, float]]:
    """(start time, lr, best val F1) of each trial run of a study, in start order."""
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    runs = [r for r in client.search_runs([exp.experiment_id], max_results=1000) if r.data.tags.get(N.TRIAL_TAG)]
    return sorted((r.info.start_time, float(r.data.params["train.lr"]), r.data.metrics.get(N.BEST_VAL_F1, 0.0))
                  for r in runs)


def summary(values: list[float]) -> dict:
    return {"per_seed": values, "mean": statistics.mean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--n", type=int, default=8, help="trials per half")
    ap.add_argument("--startup", type=int, default=4,
                    help="search.startup_trials: TPE's random first points (Optuna's default 10 would leave a half "
                         "of 8 all random, and independent halves nothing to lose)")
    args = ap.parse_args()
    seeds, n, k = (args.seeds[:2], 2, 1) if args.smoke else (args.seeds, args.n, args.startup)
    ways = ("at_once", "grown", "independent")
    best: dict[str, list[float]] = {w: [] for w in ways}
    second_mean: dict[str, list[float]] = {w: [] for w in ways}  # mean val F1 of the second half's trials
    slow_second_half: dict[str, list[int]] = {w: [] for w in ways}
    done: list[int] = []

    def result() -> dict:
        return {"seeds": done, "trials_per_half": n, "startup_trials": k,
                **{w: {**summary(best[w]), "second_half_mean_f1": summary(second_mean[w]),
                       "second_half_slow_lr_trials": slow_second_half[w]} for w in ways},
                "grown_beats_independent": sum(g > i for g, i in zip(best["grown"], best["independent"])),
                "at_once_beats_independent": sum(g > i for g, i in zip(best["at_once"], best["independent"]))}

    with tempfile.TemporaryDirectory(prefix="nerlab-bench-growth-") as d:
        root = Path(d)
        for seed in seeds:
            whole = trials(run(spec(f"once{seed}", 2 * n, seed, k), root), f"once{seed}")
            run(spec(f"grown{seed}", n, seed, k), root)
            grown = trials(run(spec(f"grown{seed}", 2 * n, seed, k), root), f"grown{seed}")
            a = trials(run(spec(f"half{seed}a", n, seed, k), root), f"half{seed}a")
            b = trials(run(spec(f"half{seed}b", n, seed + 1000, k), root), f"half{seed}b")
            for way, ts, second in (("at_once", whole, whole[n:]), ("grown", grown, grown[n:]),
                                    ("independent", a + b, b)):
                assert len(ts) == 2 * n, (way, len(ts))
                best[way].append(max(f1 for _, _, f1 in ts))
                second_mean[way].append(statistics.mean(f1 for _, _, f1 in second))
                slow_second_half[way].append(sum(lr < SLOW_LR for _, lr, _ in second))
            done.append(seed)
            print(f"seed {seed}: best val F1 at once {best['at_once'][-1]:.4f}, grown {best['grown'][-1]:.4f}, "
                  f"independent {best['independent'][-1]:.4f}; second half's mean "
                  + ", ".join(f"{second_mean[w][-1]:.4f}" for w in ways), flush=True)
            if args.json:  # after every seed: a long run stopped early keeps what it measured
                args.json.write_text(json.dumps(result(), indent=2))
    r = result()
    for way in ways:
        print(f"{way:12s} best val F1 {r[way]['mean']:.4f} ± {r[way]['std']:.4f}; second half's mean val F1 "
              f"{r[way]['second_half_mean_f1']['mean']:.4f}; trials with lr < {SLOW_LR:g} in the second half: "
              f"{sum(r[way]['second_half_slow_lr_trials'])} of {n * len(seeds)}")
    print(f"grown beats independent in {r['grown_beats_independent']} of {len(done)} seeds, at once in "
          f"{r['at_once_beats_independent']}")

if __name__ == "__main__":
    main()
