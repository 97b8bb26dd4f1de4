"""Benchmark: does a trial cost the same at the end of a long study as at its start?

Runs one grid study of ``--trials`` one-epoch tiny trials (one PLM and loss, the seeds 1..N) as a user
runs it (``nerlab study run SPEC --json``, local Ray, SQLite MLflow store behind a local server), two at
a time. Per trial, from the MLflow store: its run's duration, its training steps and validation scoring
(``train/epoch_seconds``), and the rest, its fixed cost. Trials are ordered by start; the benchmark prints
the median of each figure over the first and the last eighth of the trials, their ratio, and the
least-squares slope of the fixed cost over the trial's index (seconds per 100 trials). Flat means a
ratio near 1 and a slope near 0.

Usage: ``python tests/benchmarks/bench_many_trials.py [--smoke] [--trials N] [--json PATH] [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_study import base_spec, run_study, trials  # noqa: E402


def slope(xs: list[float], ys: list[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="8 trials on a tiny corpus: checks the script works")
    ap.add_argument("--trials", type=int, help="trials in the study (default 64; smoke 8)")
    ap.add_argument("--mode", default="inline", choices=("inline", "ray_train"), help="resources.single_worker")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--out", help="keep the study here (default: a temporary folder)")
    args = ap.parse_args(argv)
    n = args.trials or (8 if args.smoke else 64)
    sentences = 200 if args.smoke else 600
    root = Path(args.out or tempfile.mkdtemp(prefix="bench-many-"))
    root.mkdir(parents=True, exist_ok=True)
    name = f"many-{n}-{args.mode}"
    spec = {**base_spec(name, sentences, 1),
            "search": {"mode": "grid", "plm": ["tiny:2x32"], "loss": ["ce"], "variance_penalty": [0.0],
                       "seeds": list(range(1, n + 1))}}
    spec["resources"] = {**spec["resources"], "single_worker": args.mode}
    wall, out = run_study(spec, root)
    rows = sorted(trials(out, name), key=lambda t: t["start"])
    for t in rows:
        t["fixed_s"] = t["run_s"] - t["train_s"]  # train/epoch_seconds holds the steps and val scoring
    k = max(1, n // 8)
    first, last = rows[:k], rows[-k:]
    med = lambda part, key: statistics.median(t[key] for t in part)  # noqa: E731
    fig = {"smoke": args.smoke, "mode": args.mode, "trials": len(rows), "wall_s": wall, "sentences": sentences,
           "wall_per_trial_s": wall / len(rows),
           "first": {key: med(first, key) for key in ("run_s", "train_s", "fixed_s")},
           "last": {key: med(last, key) for key in ("run_s", "train_s", "fixed_s")},
           "fixed_slope_s_per_100": 100 * slope(list(range(len(rows))), [t["fixed_s"] for t in rows]),
           "fixed_s": [round(t["fixed_s"], 3) for t in rows]}
    fig["last_over_first_run"] = fig["last"]["run_s"] / fig["first"]["run_s"]
    fig["last_over_first_fixed"] = fig["last"]["fixed_s"] / fig["first"]["fixed_s"]
    print(f"{len(rows)} trials ({args.mode}) in {wall:.1f} s ({fig['wall_per_trial_s']:.2f} s per trial, 2 at a time)")
    print(f"{'median over':24}{'run s':>8}{'train s':>9}{'fixed s':>9}")
    for label, part in (("first " + str(k), "first"), ("last " + str(k), "last")):
        f = fig[part]
        print(f"{label:24}{f['run_s']:8.2f}{f['train_s']:9.2f}{f['fixed_s']:9.2f}")
    print(f"last / first: run {fig['last_over_first_run']:.2f}x, fixed {fig['last_over_first_fixed']:.2f}x; "
          f"fixed cost slope {fig['fixed_slope_s_per_100']:+.2f} s per 100 trials")
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
