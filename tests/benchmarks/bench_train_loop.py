"""Benchmark: the Ray Train worker loop against a plain PyTorch loop, a job's start-up cost, 2 workers vs 1.

On the real Wojood sample with a tiny BERT (4 layers x 256 hidden by default), on this machine's CPUs:

- ``ray_vs_plain``: steady-state training tokens/s of a 1-worker Ray Train job (MLflow's
  ``train/tokens_per_second``, epoch 1 skipped as warm-up) over a plain single-process loop
  (``nerlab.models.training.train_epoch`` on the same model, data, batches and thread count). Target >= 0.95.
  The plain loop runs before and after the Ray jobs and both runs count, so a change in the machine's load
  during the benchmark shows up as a spread instead of skewing the ratio.
- Every worker, and the plain loop, gets 1 CPU and so 1 thread (Ray sets OMP_NUM_THREADS from a worker's
  CPUs; ``cpus_per_worker: 1`` is the run spec's default). Two threads in one process are no faster on a
  shared 2-core machine: when another process takes a core, torch's threads wait for each other at every
  barrier and a 2-thread loop drops to a fraction of a 1-thread one, which would drown what is measured.
- ``startup_s``: the fixed cost of a job: the wall time of a 1-epoch job minus that epoch's training time
  (worker group start, model load, encoding, validation and test scoring, checkpoints, artifacts).
- ``two_vs_one``: tokens/s of 2 workers (DDP over gloo) over 1 worker: data-parallel scaling on 2 cores.

Usage: ``python tests/benchmarks/bench_train_loop.py [--smoke] [--json PATH] [--out DIR]``
(``--smoke``: a 2x64 BERT and 2 epochs, to check that the script works).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "data" / "wojood-sample"
TARGET_RATIO = 0.95


@dataclass(frozen=True)
class Setup:
    layers: int
    hidden: int
    epochs: int
    max_length: int = 512
    batch_size: int = 16


FULL = Setup(layers=4, hidden=256, epochs=4)
SMOKE = Setup(layers=2, hidden=64, epochs=2, max_length=128)


def build_plm(data: Path, out: Path, setup: Setup) -> Path:
    from nerlab.models.tiny_plm import build_tiny_plm

    folder = out / f"plm-{setup.layers}x{setup.hidden}"
    if not (folder / "config.json").is_file():
        build_tiny_plm([data / "train.txt"], folder, layers=setup.layers, hidden=setup.hidden,
                       heads=max(1, setup.hidden // 64))
    return folder


def write_spec(out: Path, name: str, data: Path, plm: Path, setup: Setup, epochs: int, workers: int,
               cpus_per_worker: float) -> Path:
    spec = {
        "name": name, "task": "nested",
        "data": {split: str(data / f"{split}.txt") for split in ("train", "val", "test")},
        "model": {"plm": str(plm), "max_length": setup.max_length},
        "loss": {"preset": "unified"},
        "train": {"epochs": epochs, "batch_size": setup.batch_size, "lr": 3.0e-3, "variance_penalty": 5.0,
                  "patience": epochs, "seed": 3407},
        "resources": {"workers": workers, "cpus_per_worker": cpus_per_worker, "use_gpu": False,
                      "max_failures": 0},
        "precision": "fp32",
        "output": str(out / name),
    }
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def plain_loop(spec_path: Path, threads: int, device: str = "cpu", train_file: str | None = None,
               plm: str | None = None) -> list[float]:
    """Tokens/s per epoch of the worker loop's training part, in this process, without Ray.

    Same model, data, optimiser, schedule, batches (the same seeds and sharding for one worker) and
    precision (autocast as the spec's ``precision`` gives on ``device``) as platform/training/worker.py, so the
    two differ only in what Ray adds around them. ``train_file``/``plm``: the prepared files of a spec
    whose data is synthetic or whose PLM is built on the fly.
    """
    import torch
    from transformers import AutoTokenizer

    from nerlab.models.encoding import bucketed_batches, encode, iter_batches, shard
    from nerlab.models.schema import LabelSchema
    from nerlab.models.tagger import MultiTaskTagger, TaggerConfig
    from nerlab.models.training import make_optimizer, seed_everything, train_epoch
    from nerlab.models.wojood import read_file
    from nerlab.platform.specs.run import load_run_spec
    from nerlab.models.precision import autocast_dtype

    spec = load_run_spec(spec_path)
    cfg, plm = spec.train, plm or spec.model.plm
    device = torch.device(device)
    dtype = autocast_dtype(spec.precision, device)
    torch.set_num_threads(threads)
    seed_everything(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(plm)
    schema = LabelSchema.wojood(spec.task)
    windows = encode(read_file(train_file or spec.data.train, task=spec.task), tokenizer, schema,
                     spec.model.max_length)
    tagger = TaggerConfig(plm=plm, dropout=spec.model.dropout, max_length=spec.model.max_length)
    model = MultiTaskTagger.from_plm(plm, schema, tagger).to(device)
    lengths = [len(w) for w in windows]
    steps = len(shard(bucketed_batches(lengths, cfg.batch_size, cfg.seed, cfg.bucket_batches), 0, 1, even=True))
    opt, sched = make_optimizer(model, cfg, steps * cfg.epochs)
    loss, out = spec.loss.to_loss_config(), []
    for epoch in range(1, cfg.epochs + 1):
        seed_everything(cfg.seed + epoch)
        order = shard(bucketed_batches(lengths, cfg.batch_size, cfg.seed + epoch, cfg.bucket_batches), 0, 1,
                      even=True)
        batches = (b for _, b in iter_batches(windows, order, tokenizer.pad_token_id, schema.num_heads))
        stats = train_epoch(model, batches, opt, sched, loss, cfg, device, dtype)
        out.append(stats.tokens / stats.seconds)
    return out


def ray_job(spec_path: Path) -> dict:
    """Run a job as ``nerlab train`` does; its wall time and its per-epoch MLflow metrics."""
    from mlflow.tracking import MlflowClient

    from nerlab.platform.training.job import train
    from nerlab.platform.specs.run import load_run_spec

    spec = load_run_spec(spec_path)
    start = time.perf_counter()
    result = train(spec)
    wall = time.perf_counter() - start
    client = MlflowClient(f"sqlite:///{Path(spec.output) / 'mlflow.db'}")

    def per_epoch(key: str) -> list[float]:
        return [m.value for m in sorted(client.get_metric_history(result.run_id, key), key=lambda m: m.step)]

    return {"wall_s": wall, "tokens_per_s": per_epoch("train/tokens_per_second"),
            "epoch_s": per_epoch("train/epoch_seconds"), "val_f1": result.val_f1}


def steady(per_epoch: list[float]) -> float:
    """Median tokens/s after the warm-up epoch (the median shrugs off a load spike from elsewhere)."""
    return statistics.median(per_epoch[1:] if len(per_epoch) > 1 else per_epoch)


def run(setup: Setup, data: Path, out: Path) -> dict:
    import transformers

    from nerlab.platform.training.job import connect_ray

    transformers.logging.set_verbosity_error()
    cpus = os.cpu_count() or 1
    plm = build_plm(data, out, setup)
    specs = {
        "ray_1": write_spec(out, "ray-1-worker", data, plm, setup, setup.epochs, 1, 1.0),
        "ray_2": write_spec(out, "ray-2-workers", data, plm, setup, setup.epochs, 2, 1.0),
        "startup": write_spec(out, "ray-1-epoch", data, plm, setup, 1, 1, 1.0),
    }
    load = [os.getloadavg()[0]]
    plain_before = plain_loop(specs["ray_1"], threads=1)
    start = time.perf_counter()
    connect_ray(num_cpus=cpus, log_to_driver=False)
    ray_init_s = time.perf_counter() - start
    jobs = {name: ray_job(path) for name, path in specs.items()}
    plain_after = plain_loop(specs["ray_1"], threads=1)
    load.append(os.getloadavg()[0])

    plain = statistics.mean([steady(plain_before), steady(plain_after)])
    one, two = steady(jobs["ray_1"]["tokens_per_s"]), steady(jobs["ray_2"]["tokens_per_s"])
    return {
        "setup": {**setup.__dict__, "data": str(data), "cpus": cpus, "plm": str(plm)},
        "load_average_1min": load,
        "plain_tokens_per_s": {"before": plain_before, "after": plain_after, "steady": plain},
        "ray_1_worker": jobs["ray_1"], "ray_2_workers": jobs["ray_2"], "ray_1_epoch_job": jobs["startup"],
        "ray_init_s": ray_init_s,
        "ray_vs_plain": one / plain,
        "ray_vs_plain_range": sorted([one / steady(plain_before), one / steady(plain_after)]),
        "startup_s": jobs["startup"]["wall_s"] - jobs["startup"]["epoch_s"][0],
        "two_vs_one": two / one,
        "target_ray_vs_plain": TARGET_RATIO,
    }


def report(r: dict) -> str:
    s = r["setup"]
    busy = max(r["load_average_1min"]) > 0.5 * s["cpus"]
    rows = [
        f"tiny BERT {s['layers']}x{s['hidden']}, {s['epochs']} epochs, batch {s['batch_size']}, "
        f"max_length {s['max_length']}, 1 thread per worker, {s['cpus']} CPUs; load average "
        f"{r['load_average_1min'][0]:.1f} -> {r['load_average_1min'][1]:.1f}"
        + (" (other work on this machine: expect noise)" if busy else ""),
        f"{'loop':<34} {'tokens/s (steady)':>18}",
        f"{'plain PyTorch, before / after':<34} {steady(r['plain_tokens_per_s']['before']):>8.0f} / "
        f"{steady(r['plain_tokens_per_s']['after']):.0f}",
        f"{'Ray Train, 1 worker':<34} {steady(r['ray_1_worker']['tokens_per_s']):>8.0f}",
        f"{'Ray Train, 2 workers':<34} {steady(r['ray_2_workers']['tokens_per_s']):>8.0f}",
        f"Ray vs plain: {r['ray_vs_plain']:.3f} (range {r['ray_vs_plain_range'][0]:.3f}-"
        f"{r['ray_vs_plain_range'][1]:.3f}; target >= {TARGET_RATIO})",
        f"2 workers vs 1: {r['two_vs_one']:.3f}",
        f"job start-up: {r['startup_s']:.1f} s (1-epoch job {r['ray_1_epoch_job']['wall_s']:.1f} s wall, "
        f"epoch {r['ray_1_epoch_job']['epoch_s'][0]:.1f} s); ray.init {r['ray_init_s']:.1f} s",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="a 2x64 BERT and 2 epochs: checks the script works")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--data", type=Path, default=SAMPLE, help="folder with train/val/test.txt (Wojood nested)")
    p.add_argument("--out", type=Path, help="keep jobs, PLM and MLflow stores here (default: a temporary one)")
    args = p.parse_args(argv)
    if not (args.data / "train.txt").is_file():
        print(f"bench_train_loop: {args.data}: no train.txt (give --data)", file=sys.stderr)
        return 2
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # each job's own SQLite store, under --out
    os.environ.pop("RAY_ADDRESS", None)  # a local Ray with exactly this machine's CPUs
    with tempfile.TemporaryDirectory(prefix="bench-train-loop-") as tmp:
        out = (args.out or Path(tmp)).resolve()
        out.mkdir(parents=True, exist_ok=True)
        try:
            results = run(SMOKE if args.smoke else FULL, args.data.resolve(), out)
        finally:
            import ray

            ray.shutdown()
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
