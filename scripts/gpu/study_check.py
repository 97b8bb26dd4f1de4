"""Step 3 of the GPU proof: a study whose 4 trials share one GPU (0.25 each), against the same trials in turn.

Runs ``python -m nerlab.platform.cli study run gpu-study.yaml --json`` twice in subprocesses, each into its
own output folder: ``max_concurrent: 4`` (shared) and ``max_concurrent: 1`` (serial), while a thread
samples ``nvidia-smi`` every second (GPU utilisation, memory used, the processes holding the GPU). Then,
from each study's MLflow store: every trial FINISHED with exactly one run, how many trials ran at once
(the most overlapping [start, end] intervals of the trial runs), their steady tokens/s; and the wall time
of the shared study against the serial one. The serial study is skipped if it would not end within
``--budget-s`` (estimated as 3.5 x the shared study's wall time).

Writes ``OUT/gpu_study.json``, ``OUT/nvidia-smi.csv`` and ``OUT/step3-study.log``. ``--smoke``: on the CPU,
two trials of a tiny PLM (2 at once vs 1), one epoch, no nvidia-smi. Exit 1 if a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from nerlab.models import names as N

SPEC = Path(__file__).resolve().parent / "gpu-study.yaml"
SMI_GPU = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used,memory.total", "--format=csv,noheader,nounits"]
SMI_APPS = ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]


class GpuSampler(threading.Thread):
    """``nvidia-smi`` every ``interval`` seconds: (t, run, utilisation %, memory MiB, GPU processes, their MiB)."""

    def __init__(self, interval: float = 1.0):
        super().__init__(daemon=True)
        self.interval, self.rows, self.run_name = interval, [], ""
        self.available = shutil.which("nvidia-smi") is not None
        self._halt, self.t0 = threading.Event(), time.monotonic()

    def run(self) -> None:
        while self.available and not self._halt.is_set():
            try:
                util, used, _ = subprocess.run(SMI_GPU, capture_output=True, text=True, timeout=10).stdout.split("\n")[0].split(", ")
                apps = [line.split(", ") for line in subprocess.run(SMI_APPS, capture_output=True, text=True,
                                                                     timeout=10).stdout.strip().splitlines()]
                self.rows.append((round(time.monotonic() - self.t0, 1), self.run_name, float(util), float(used),
                                  len(apps), "+".join(a[1] for a in apps if len(a) > 1)))
            except (ValueError, subprocess.SubprocessError, OSError):
                pass
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=15)

    def summary(self, run_name: str) -> dict:
        rows = [r for r in self.rows if r[1] == run_name]
        if not rows:
            return {"samples": 0}
        busy = [r for r in rows if r[4] > 0]
        return {"samples": len(rows), "max_gpu_processes": max(r[4] for r in rows),
                "peak_memory_mib": max(r[3] for r in rows),
                "mean_util_while_busy": statistics.mean(r[2] for r in busy) if busy else 0.0,
                "max_util": max(r[2] for r in rows)}

    def write_csv(self, path: Path) -> None:
        lines = ["t_s,study,util_percent,memory_used_mib,gpu_processes,process_mib"]
        lines += [",".join(map(str, r)) for r in self.rows]
        path.write_text("\n".join(lines) + "\n")


def write_spec(work: Path, name: str, max_concurrent: int, smoke: bool) -> Path:
    raw = yaml.safe_load(SPEC.read_text())
    if smoke:
        raw = {**raw, "data": {"synth": {"sentences": 200, "seed": 0}},
               "model": {**raw["model"], "max_length": 64}, "train": {**raw["train"], "epochs": 1, "lr": 3.0e-3},
               "search": {**raw["search"], "plm": ["tiny:2x32"], "loss": ["ce"]},
               "resources": {**raw["resources"], "use_gpu": False, "cpus_per_worker": 0.5}}
    raw = {**raw, "name": name, "output": str(work / name),
           "resources": {**raw["resources"], "max_concurrent": max_concurrent}}
    path = work / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


def max_overlap(intervals: list[tuple[int, int]]) -> int:
    """The most intervals open at one instant (an end at t closes before a start at t opens)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def trials(output: Path, name: str) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{output / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    runs = [r for r in client.search_runs([exp.experiment_id], max_results=1000) if N.TRIAL_TAG in r.data.tags]
    per_trial: dict[str, int] = {}
    rows = []
    for r in runs:
        per_trial[r.data.tags[N.TRIAL_TAG]] = per_trial.get(r.data.tags[N.TRIAL_TAG], 0) + 1
        tps = [m.value for m in sorted(client.get_metric_history(r.info.run_id, N.TOKENS_PER_S),
                                       key=lambda m: m.step)]
        rows.append({"trial": r.data.tags[N.TRIAL_TAG], "status": r.info.status,
                     "seconds": ((r.info.end_time or r.info.start_time) - r.info.start_time) / 1000,
                     "device": r.data.tags.get(N.DEVICE_TAG), "precision": r.data.tags.get(N.PRECISION_TAG),
                     "tokens_per_s": statistics.median(tps[1:] if len(tps) > 1 else tps) if tps else None,
                     "val_f1": r.data.metrics.get(N.BEST_VAL_F1)})
    ends = [(r.info.start_time, r.info.end_time or r.info.start_time) for r in runs]
    return {"runs": len(runs), "trials": len(per_trial), "runs_per_trial": per_trial, "rows": rows,
            "max_concurrent_trials": max_overlap(ends) if ends else 0}


def run_study(spec: Path, sampler: GpuSampler, log: Path, timeout: float) -> dict:
    """The study in a subprocess, its output streamed to ``log`` (kept even if it is stopped at ``timeout``)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    sampler.run_name = spec.stem
    start = time.perf_counter()
    with log.open("a") as f:
        f.write(f"=== {spec.stem}\n")
        f.flush()
        try:
            code = subprocess.run([sys.executable, "-m", "nerlab.platform.cli", "study", "run", str(spec), "--json"],
                                  stdout=f, stderr=subprocess.STDOUT, env=env, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
        wall = time.perf_counter() - start
        f.write(f"=== {spec.stem}: exit {code}, {wall:.1f} s\n")
    raw = yaml.safe_load(spec.read_text())
    out = {"exit": code, "wall_s": wall, "max_concurrent": raw["resources"]["max_concurrent"]}
    if (Path(raw["output"]) / "mlflow.db").is_file():
        out.update(trials(Path(raw["output"]), raw["name"]))
    out["gpu"] = sampler.summary(spec.stem)
    return out


def problems(r: dict, want_trials: int, want_at_once: int, device: str) -> list[str]:
    name, out = f"max_concurrent {r['max_concurrent']}", []
    if r["exit"] != 0:
        out.append(f"{name}: study exited {r['exit']} (see step3-study.log)")
    if r.get("trials") != want_trials or r.get("runs") != want_trials:
        out.append(f"{name}: {r.get('runs')} MLflow runs for {r.get('trials')} trials, want {want_trials} each")
    out += [f"{name}: trial {row['trial']} {row['status']}" for row in r.get("rows", []) if row["status"] != "FINISHED"]
    out += [f"{name}: trial {row['trial']} ran on {row['device']}" for row in r.get("rows", []) if row["device"] != device]
    if r.get("max_concurrent_trials", 0) < want_at_once:
        out.append(f"{name}: at most {r.get('max_concurrent_trials')} trials ran at once, want {want_at_once}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="CPU rehearsal: 2 tiny trials, 2 at once vs 1")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "runs/gpu-proof")))
    p.add_argument("--work", type=Path, default=Path("/tmp/nerlab-step3"))
    p.add_argument("--budget-s", type=float, default=400.0, help="skip the serial study if it would end later")
    args = p.parse_args(argv)
    start = time.monotonic()
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    raw = yaml.safe_load(SPEC.read_text())
    at_once = 2 if args.smoke else raw["resources"]["max_concurrent"]
    n_trials = 2 if args.smoke else len(raw["search"]["loss"]) * len(raw["search"]["variance_penalty"])
    device = "cpu" if args.smoke else "cuda"
    log = args.out / "step3-study.log"
    log.write_text("")
    sampler = GpuSampler()
    sampler.start()
    report = {"shared": run_study(write_spec(work, "gpu-study-shared", at_once, args.smoke), sampler, log,
                                  timeout=args.budget_s * 0.4)}
    left = args.budget_s - (time.monotonic() - start)
    if report["shared"]["exit"] == 0 and 3.5 * report["shared"]["wall_s"] < left:
        report["serial"] = run_study(write_spec(work, "gpu-study-serial", 1, args.smoke), sampler, log, timeout=left)
    else:
        report["serial"] = {"skipped": f"the shared study failed, or the serial one would pass --budget-s {args.budget_s:g}"}
    sampler.stop()
    sampler.write_csv(args.out / "nvidia-smi.csv")
    found = problems(report["shared"], n_trials, at_once, device)
    if "wall_s" in report["serial"]:
        found += problems(report["serial"], n_trials, 1, device)
        report["serial_over_shared_wall"] = report["serial"]["wall_s"] / report["shared"]["wall_s"]
    report["problems"] = found
    (args.out / "gpu_study.json").write_text(json.dumps(report, indent=2, default=str))
    for key in ("shared", "serial"):
        r = report[key]
        if "wall_s" in r:
            print(f"step 3 {key}: {r.get('trials')} trials, at most {r.get('max_concurrent_trials')} at once, "
                  f"{r['wall_s']:.0f} s wall; GPU {r['gpu']}")
    if "serial_over_shared_wall" in report:
        print(f"step 3: serial / shared wall time = {report['serial_over_shared_wall']:.2f}x")
    for problem in found:
        print(f"step 3 FAILED: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
