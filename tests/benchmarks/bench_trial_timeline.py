"""Benchmark: where a trial's seconds go, inline (the trial is its job's worker) vs a Ray Train job per trial.

Runs, for each way a one-worker trial can run (``resources.single_worker``: ``inline`` and ``ray_train``),
one grid study of ``--trials`` 1-epoch trials one at a time, as a user runs it (``nerlab study run SPEC
--json`` in a subprocess, local Ray, SQLite MLflow store behind a local server, the synthetic corpus and
tiny BERT of ``bench_study.py``) with ``NERLAB_TIMELINE`` set: the study driver, each trial and the Train
workers append a timestamp per phase (``nerlab/platform/training/timeline.py``). Trials run one after another, so
the marks split into trials at each ``trial.start``. Per mode it prints the phases of the first trial
(cold: a new process) and the median of the later ones (warm: inline trials reuse their process), and
the issue's two fixed costs: trial start -> first training step, and last epoch logged -> Tune holding
the trial's final result. The modes run side by side in one invocation, so their ratio is the figure.

Usage: ``python tests/benchmarks/bench_trial_timeline.py [--smoke] [--json PATH] [--out DIR] [--trials N]``
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

# (phase, from event, to event, what happens there) within one trial; events are timeline marks, and
# "worker.imported" is a Train worker's process up with its imports
PHASES = [
    ("trial MLflow run opened", "trial.start", "trial.run_opened", "find run, create run, params, tags (through the server)"),
    ("inline: loop start", "trial.run_opened", "worker.start", "inline only: the trial calls the worker loop"),
    ("trainer built", "trial.run_opened", "job.fit_start", "TorchTrainer, configs"),
    ("Train controller + worker process up", "job.fit_start", "worker.imported", "controller actor, placement group, worker actor process, its imports (torch, transformers, Ray Train)"),
    ("process group + train fn start", "worker.imported", "worker.start", "torch process group, train fn unpickled and called"),
    ("tokenizer", "worker.start", "worker.tokenizer_loaded", "load_tokenizer"),
    ("data read + encoded", "worker.tokenizer_loaded", "worker.data_encoded", "train + val read and tokenised"),
    ("model + optimiser", "worker.data_encoded", "worker.model_built", "MultiTaskTagger.from_plm, optimiser, schedule"),
    ("worker MLflow set-up", "worker.model_built", "worker.setup_done", "TensorBoard writer, logged steps, worker tags"),
    ("training steps", "worker.epoch_start", "worker.epoch_trained", "the epoch's forward/backward/step"),
    ("validation scoring", "worker.epoch_trained", "worker.epoch_scored", "predict + score val"),
    ("epoch MLflow metrics", "worker.epoch_scored", "worker.epoch_logged", "TensorBoard + log_batch"),
    ("checkpoint + epoch report", "worker.epoch_logged", "worker.epoch_reported", "safetensors + optimiser state, Ray checkpoint persisted, report"),
    ("final val scoring", "worker.epoch_reported", "worker.final_val_scored", "best weights, val again"),
    ("final test scoring", "worker.final_val_scored", "worker.final_test_scored", "test read, encoded, predicted, scored"),
    ("model folder + outputs", "worker.final_test_scored", "worker.outputs_written", "model saved, reports, predictions"),
    ("MLflow artifacts", "worker.outputs_written", "worker.artifacts_logged", "final metrics, 5 artifact folders uploaded"),
    ("final checkpoint + result to Tune", "worker.artifacts_logged", "tune.final_result", "final checkpoint persisted, reported; Tune's driver holds the result"),
    ("Train shutdown", "worker.final_reported", "trial.fit_returned", "worker group and controller stop, fit returns"),
    ("trial run closed", "trial.fit_returned", "trial.end", "finish_job: set_terminated"),
]
# a trial's fixed cost: from its start to Tune holding its final result, less its steps and scoring
TRAINING = ("training steps", "validation scoring")


def run_study(root: Path, sentences: int, mode: str, n_trials: int) -> tuple[list[dict[str, float]], float]:
    """One study of ``n_trials`` 1-epoch trials run one at a time; each trial's first mark of every event."""
    name = f"timeline-{mode}"
    spec = {**base_spec(name, sentences, 1),
            "search": {"mode": "grid", "plm": ["tiny:2x32"], "loss": ["ce"], "variance_penalty": [0.0],
                       "seeds": list(range(1, n_trials + 1))}}
    spec["resources"] = {**spec["resources"], "max_concurrent": 1, "single_worker": mode}
    path, out, marks = root / f"{name}.yaml", root / name, root / f"{name}.jsonl"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {**os.environ, "NERLAB_TIMELINE": str(marks)}
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "nerlab.platform.cli", "study", "run", str(path), "--output", str(out),
                        "--json"], capture_output=True, text=True, env=env)
    wall = time.time() - t0
    if p.returncode != 0:
        sys.exit(f"study failed ({p.returncode}):\n{p.stderr[-3000:]}")
    lines = sorted((json.loads(line) for line in marks.read_text().splitlines()), key=lambda r: r["t"])
    trials: list[dict[str, float]] = []
    for r in lines:
        if r["event"] == "trial.start":
            trials.append({})
        if trials:
            trials[-1].setdefault(r["event"], r["t"])
        if r["event"] == "train_loop.imported" and trials and "worker.start" not in trials[-1]:
            trials[-1]["worker.imported"] = r["t"]  # a Train worker's process came up for this trial
    return trials, wall


def breakdown(ev: dict[str, float]) -> dict:
    phases = {name: ev[b] - ev[a] for name, a, b, _ in PHASES if a in ev and b in ev}
    if "job.fit_start" in ev:  # a Ray Train job: its worker loop starts after the worker group
        phases.pop("inline: loop start", None)
    return {"phases": phases,
            "last_epoch_to_trial_end_s": ev["trial.end"] - ev["worker.epoch_reported"],
            "trial_start_to_first_step_s": ev["worker.epoch_start"] - ev["trial.start"],
            "last_epoch_to_tune_final_s": ev["tune.final_result"] - ev["worker.epoch_reported"],
            "trial_fixed_s": (ev["tune.final_result"] - ev["trial.start"])
            - sum(phases.get(k, 0.0) for k in TRAINING)}


def summarise(trials: list[dict[str, float]]) -> dict:
    rows = [breakdown(t) for t in trials]
    warm = rows[1:] or rows
    med = lambda key: statistics.median(r[key] for r in warm)  # noqa: E731
    phases = {name: statistics.median(r["phases"][name] for r in warm if name in r["phases"])
              for name, *_ in PHASES if any(name in r["phases"] for r in warm)}
    return {"cold": rows[0], "warm": {"phases": phases, **{k: med(k) for k in KEYS}}, "trials": len(rows)}


KEYS = ("trial_start_to_first_step_s", "last_epoch_to_tune_final_s", "last_epoch_to_trial_end_s", "trial_fixed_s")
MODES = ("ray_train", "inline")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="a tiny corpus and 2 trials: checks the script works")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--out", help="keep the studies here (default: a temporary folder)")
    ap.add_argument("--trials", type=int, help="trials per study (default 4; smoke 2)")
    args = ap.parse_args(argv)
    sentences = 200 if args.smoke else 600
    n = args.trials or (2 if args.smoke else 4)
    root = Path(args.out or tempfile.mkdtemp(prefix="bench-timeline-"))
    root.mkdir(parents=True, exist_ok=True)
    fig: dict = {"smoke": args.smoke, "sentences": sentences, "trials": n}
    for mode in MODES:
        trials, wall = run_study(root, sentences, mode, n)
        fig[mode] = {**summarise(trials), "wall_s": wall}
    names = [name for name, *_ in PHASES if any(name in fig[m][w]["phases"] for m in MODES for w in ("cold", "warm"))]
    print(f"{'phase (s)':36}" + "".join(f"{m + ' ' + w:>16}" for m in MODES for w in ("cold", "warm")))
    for name in names:
        cells = [fig[m][w]["phases"].get(name) for m in MODES for w in ("cold", "warm")]
        print(f"{name:36}" + "".join(f"{'' if c is None else f'{c:.2f}':>16}" for c in cells))
    for key in KEYS:
        cells = [fig[m]["cold"][key] for m in MODES] + [fig[m]["warm"][key] for m in MODES]
        print(f"{key:36}" + "".join(f"{c:16.2f}" for c in (cells[0], cells[2], cells[1], cells[3])))
    for key in KEYS:
        fig[f"{key}_ratio"] = fig["ray_train"]["warm"][key] / max(fig["inline"]["warm"][key], 1e-9)
    print(f"study walls: ray_train {fig['ray_train']['wall_s']:.1f} s, inline {fig['inline']['wall_s']:.1f} s "
          f"({fig['ray_train']['wall_s'] / fig['inline']['wall_s']:.2f}x); warm trial start -> first step "
          f"{fig['trial_start_to_first_step_s_ratio']:.1f}x faster inline")
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
