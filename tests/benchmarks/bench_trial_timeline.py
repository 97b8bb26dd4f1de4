"""Benchmark: where a trial's seconds go, from its study's start to its last MLflow write.

Runs a 1-trial, 1-epoch study as a user runs it (``nerlab study run SPEC --json`` in a subprocess, local
Ray, SQLite MLflow store behind a local server, the synthetic corpus and tiny BERT of ``bench_study.py``)
with ``NERLAB_TIMELINE`` set: the study driver, the trial's driver and the Train worker each append a
timestamp per phase (``nerlab/platform/timeline.py``). The breakdown joins them with the trial's MLflow run
(start and end time) and the study's wall time, and prints seconds per phase; ``trial_fixed_s`` is the
trial's MLflow run duration less its training steps and validation scoring, the cost that
``bench_study.py`` calls a trial's overhead.

Usage: ``python tests/benchmarks/bench_trial_timeline.py [--smoke] [--json PATH] [--out DIR] [--repeats N]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_study import base_spec  # noqa: E402

# (phase, from event, to event, what happens there); events: timeline marks, plus "wall.start",
# "run.start", "run.end" (the trial's MLflow run) and "wall.end" (the CLI process exits)
PHASES = [
    ("study set-up", "wall.start", "study.start", "CLI start: Python, nerlab, Ray, MLflow and torch imports, spec checks"),
    ("data + PLM", "study.start", "study.prepared", "folder lock, synthetic corpus, tiny PLM built (once per study)"),
    ("MLflow server + parent run", "study.prepared", "study.server_and_parent_run", "mlflow server start, study run, gold artifact"),
    ("Ray start", "study.server_and_parent_run", "study.ray_started", "ray.init with dashboard"),
    ("Tune: schedule + trial actor", "study.ray_started", "trial.start", "Tuner built, trial created, actor process started, trainable unpickled"),
    ("trial MLflow run opened", "trial.start", "trial.run_opened", "find run, create run, params, tags (through the server)"),
    ("trainer built", "trial.run_opened", "job.fit_start", "TorchTrainer, configs"),
    ("Train controller + worker process up", "job.fit_start", "worker.imported", "controller actor, placement group, worker actor process, its imports (torch, transformers, Ray Train)"),
    ("process group + train fn start", "worker.imported", "worker.start", "torch process group, train fn unpickled and called"),
    ("tokenizer", "worker.start", "worker.tokenizer_loaded", "load_tokenizer"),
    ("data read + encoded", "worker.tokenizer_loaded", "worker.data_encoded", "train + val read and tokenised"),
    ("model + optimiser", "worker.data_encoded", "worker.model_built", "MultiTaskTagger.from_plm, optimiser, schedule"),
    ("worker MLflow set-up", "worker.model_built", "worker.setup_done", "TensorBoard writer, logged steps, worker tags"),
    ("training steps", "worker.epoch_start", "worker.epoch_trained", "the epoch's forward/backward/step"),
    ("validation scoring", "worker.epoch_trained", "worker.epoch_scored", "predict + score val"),
    ("checkpoint + epoch report", "worker.epoch_scored", "worker.epoch_reported", "safetensors + optimiser state, Ray checkpoint persisted, report"),
    ("epoch MLflow metrics", "worker.epoch_reported", "worker.epoch_logged", "TensorBoard + log_batch"),
    ("final val scoring", "worker.epoch_logged", "worker.final_val_scored", "best weights, val again"),
    ("final test scoring", "worker.final_val_scored", "worker.final_test_scored", "test read, encoded, predicted, scored"),
    ("model folder + outputs", "worker.final_test_scored", "worker.outputs_written", "model saved, reports, predictions"),
    ("MLflow artifacts", "worker.outputs_written", "worker.artifacts_logged", "final metrics, 5 artifact folders uploaded"),
    ("final checkpoint + report", "worker.artifacts_logged", "worker.final_reported", "final checkpoint persisted, report"),
    ("Train shutdown", "worker.final_reported", "trial.fit_returned", "worker group and controller stop, fit returns"),
    ("trial run closed", "trial.fit_returned", "trial.end", "finish_job: set_terminated"),
    ("Tune wind-down", "trial.end", "study.tune_done", "trial actor stops, Tune's last results and state"),
    ("study finish", "study.tune_done", "study.finished", "leaderboard, parent run closed"),
    ("exit", "study.finished", "wall.end", "server stop, ray.shutdown, process exit"),
]
# what bench_study.py's "fixed cost per trial" covers: the trial's MLflow run, less its steps and scoring
TRAINING = ("training steps", "validation scoring")


def run_once(root: Path, sentences: int, tag: str) -> dict[str, float]:
    name = f"timeline-{tag}"
    spec = {**base_spec(name, sentences, 1),
            "search": {"mode": "grid", "plm": ["tiny:2x32"], "loss": ["ce"], "variance_penalty": [0.0], "seeds": [3407]}}
    path, out, marks = root / f"{name}.yaml", root / name, root / f"{name}.jsonl"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {**os.environ, "NERLAB_TIMELINE": str(marks)}
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "nerlab.platform.cli", "study", "run", str(path), "--output", str(out),
                        "--json"], capture_output=True, text=True, env=env)
    t1 = time.time()
    if p.returncode != 0:
        sys.exit(f"study failed ({p.returncode}):\n{p.stderr[-3000:]}")
    ev: dict[str, float] = {"wall.start": t0, "wall.end": t1}
    lines = [json.loads(line) for line in marks.read_text().splitlines()]
    for r in lines:
        ev.setdefault(r["event"], r["t"])  # the first time each phase is reached (one epoch, one trial)
    worker = next(r["pid"] for r in lines if r["event"] == "worker.start")
    ev.update({"worker.imported": r["t"] for r in lines if r["event"] == "train_loop.imported" and r["pid"] == worker})
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    (run,) = client.search_runs([exp.experiment_id], "tags.`nerlab.trial` != ''")
    ev["run.start"], ev["run.end"] = run.info.start_time / 1000, run.info.end_time / 1000
    return ev


def breakdown(ev: dict[str, float]) -> dict:
    phases = {name: ev[b] - ev[a] for name, a, b, _ in PHASES if a in ev and b in ev}
    run_s = ev["run.end"] - ev["run.start"]
    return {"phases": phases, "wall_s": ev["wall.end"] - ev["wall.start"], "trial_run_s": run_s,
            "trial_fixed_s": run_s - sum(phases.get(k, 0.0) for k in TRAINING),
            "trial_start_to_first_step_s": ev["worker.epoch_start"] - ev["trial.start"],
            "run_open_to_first_step_s": ev["worker.epoch_start"] - ev["run.start"],
            "after_last_epoch_s": ev["run.end"] - ev["worker.epoch_logged"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="a tiny corpus: checks the script works")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--out", help="keep the studies here (default: a temporary folder)")
    ap.add_argument("--repeats", type=int, help="studies to run; each phase is the median (default 2; smoke 1)")
    args = ap.parse_args(argv)
    sentences = 200 if args.smoke else 600
    repeats = args.repeats or (1 if args.smoke else 2)
    root = Path(args.out or tempfile.mkdtemp(prefix="bench-timeline-"))
    root.mkdir(parents=True, exist_ok=True)
    runs = [breakdown(run_once(root, sentences, str(i))) for i in range(repeats)]
    med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    phases = {name: statistics.median(r["phases"][name] for r in runs if name in r["phases"])
              for name, *_ in PHASES if any(name in r["phases"] for r in runs)}
    fig = {"smoke": args.smoke, "sentences": sentences, "repeats": repeats, "phases": phases,
           "wall_s": med("wall_s"), "trial_run_s": med("trial_run_s"), "trial_fixed_s": med("trial_fixed_s"),
           "trial_start_to_first_step_s": med("trial_start_to_first_step_s"),
           "run_open_to_first_step_s": med("run_open_to_first_step_s"), "after_last_epoch_s": med("after_last_epoch_s"),
           "runs": runs}
    print(f"{'phase':34} {'s':>6}  what")
    for name, a, b, what in PHASES:
        if name in phases:
            print(f"{name:34} {phases[name]:6.2f}  {what}")
    print(f"study wall {fig['wall_s']:.1f} s; trial's MLflow run {fig['trial_run_s']:.1f} s, of which fixed "
          f"{fig['trial_fixed_s']:.1f} s; trial start -> first step {fig['trial_start_to_first_step_s']:.1f} s; "
          f"last epoch logged -> run closed {fig['after_last_epoch_s']:.1f} s (median of {repeats})")
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
