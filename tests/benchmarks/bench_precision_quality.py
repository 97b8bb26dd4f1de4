"""Benchmark: does bf16 autocast on the CPU train taggers as good as fp32? (run by hand, not a test)

    python tests/benchmarks/bench_precision_quality.py [--smoke] [--json PATH] [--seeds 3407 1 2] [--epochs 8]

For each task (nested, flat) and each precision (fp32, bf16), one grid study over the seeds, run as a user
runs it (``nerlab study run SPEC --json``: local Ray, the study's MLflow store), on the public Wojood sample
with the same recipe otherwise: a tiny BERT (2 layers x 128) built from the sample's training split, the
unified loss, λ = 5, lr 2e-3 with 5% warm-up, every epoch scored, the best epoch by validation F1. The figures are read back from
each study's MLflow runs: per seed the selected epoch's validation and test micro-F1, the precision tag the
run carries (so a run that silently fell back to fp32 shows), and seconds per epoch.

Goal (issue 24): mean test micro-F1 of bf16 within 0.01 of fp32's and within the seed-to-seed spread
(the larger of the two precisions' standard deviations over seeds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from mlflow import MlflowClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_study import run_study  # noqa: E402

from nerlab.models import names

ROOT = Path(__file__).resolve().parents[2]
DATA = {"nested": ROOT / "tests" / "data" / "wojood-sample", "flat": ROOT / "tests" / "data" / "wojood-sample-flat"}
TOLERANCE = 0.01


def spec(task: str, precision: str, args) -> dict:
    data = DATA[task]
    return {
        "name": f"quality-{task}-{precision}", "task": task, "precision": precision,
        "data": {s: str(data / f"{s}.txt") for s in ("train", "val", "test")},
        "model": {"max_length": 512},
        "train": {"epochs": args.epochs, "batch_size": 16, "lr": args.lr, "warmup_ratio": 0.05, "patience": args.epochs},
        "search": {"mode": "grid", "plm": [f"tiny:{args.plm}"], "loss": ["unified"], "variance_penalty": [5.0],
                   "seeds": args.seeds},
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 0.9, "trial_cpus": 0.1, "max_concurrent": 2},
    }


def trials(out: Path, name: str) -> list[dict]:
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    rows = []
    for r in client.search_runs([exp.experiment_id], max_results=1000):
        if not r.data.tags.get(names.TRIAL_TAG):
            continue
        m = r.data.metrics
        seconds = [x.value for x in client.get_metric_history(r.info.run_id, names.EPOCH_SECONDS)]
        rows.append({"seed": int(r.data.tags[names.SEED_TAG]), "precision": r.data.tags.get(names.PRECISION_TAG),
                     "status": r.info.status, "best_epoch": m.get(names.BEST_EPOCH),
                     "val_f1": m.get(names.BEST_VAL_F1), "test_f1": m.get(names.TEST_F1),
                     "epoch_s": statistics.median(seconds) if seconds else None})
    return sorted(rows, key=lambda r: r["seed"])


def summary(rows: list[dict]) -> dict:
    def stats(key):
        vals = [r[key] for r in rows if r[key] is not None]
        return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0}
    return {"val_f1": stats("val_f1"), "test_f1": stats("test_f1"), "epoch_s": stats("epoch_s"),
            "precisions_logged": sorted({r["precision"] for r in rows})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="each study in smoke mode (seconds; figures meaningless)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--out", type=Path, help="keep the studies here (default: a temporary folder)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[3407, 1, 2])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2.0e-3, help="bench_seed_recipe's: 3e-3 left 2 of 3 seeds at F1 0")
    ap.add_argument("--plm", default="2x128", help="the tiny BERT's layers x hidden")
    ap.add_argument("--tasks", nargs="+", default=["nested", "flat"], choices=list(DATA))
    args = ap.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="bench-precision-"))
    root.mkdir(parents=True, exist_ok=True)
    result = {"setup": {"seeds": args.seeds, "epochs": args.epochs, "lr": args.lr, "plm": f"tiny:{args.plm}",
                        "loss": "unified", "variance_penalty": 5.0, "smoke": args.smoke}, "tasks": {}}
    for task in args.tasks:
        by_precision = {}
        for precision in ("fp32", "bf16"):
            s = spec(task, precision, args)
            wall, out = run_study(s, root, args.smoke)
            rows = trials(out, out.name)  # the study's name is its folder's (NAME-smoke for a smoke study)
            by_precision[precision] = {"wall_s": wall, "trials": rows, **summary(rows)}
            print(f"{task:6s} {precision}: test F1 {by_precision[precision]['test_f1']['mean']:.4f} "
                  f"± {by_precision[precision]['test_f1']['std']:.4f}, val F1 {by_precision[precision]['val_f1']['mean']:.4f}, "
                  f"{by_precision[precision]['epoch_s']['mean']:.1f} s/epoch, logged {by_precision[precision]['precisions_logged']}",
                  flush=True)
        fp32, bf16 = by_precision["fp32"], by_precision["bf16"]
        gap = bf16["test_f1"]["mean"] - fp32["test_f1"]["mean"]
        spread = max(fp32["test_f1"]["std"], bf16["test_f1"]["std"])
        by_precision["test_f1_gap"] = gap
        by_precision["seed_spread"] = spread
        by_precision["within_goal"] = abs(gap) <= TOLERANCE and abs(gap) <= spread
        by_precision["epoch_speedup"] = fp32["epoch_s"]["mean"] / bf16["epoch_s"]["mean"]
        result["tasks"][task] = by_precision
        print(f"{task:6s} bf16 - fp32 test F1 {gap:+.4f} (seed spread {spread:.4f}, goal |gap| <= {TOLERANCE} and <= "
              f"spread: {'met' if by_precision['within_goal'] else 'NOT met'}); epoch time fp32/bf16 "
              f"{by_precision['epoch_speedup']:.2f}x", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
