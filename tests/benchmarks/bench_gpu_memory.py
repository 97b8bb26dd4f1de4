"""GPU memory of one trial at the seed's settings, and the largest bf16 batch that fits.

The seed's settings: a bert-base-sized tagger (``bench_gpu.py``'s model), batch 16, max length 512. A
trial's peak is its worst batch: ``batch`` windows all 512 sub-words long. Each probe trains ``--steps``
steps of the real loop (``train_epoch``: unified loss + penalty, clipping, AdamW, so the optimiser's state
counts) on such batches and reads ``torch.cuda.max_memory_allocated`` (tensors) and
``max_memory_reserved`` (what the caching allocator holds: what ``nvidia-smi`` sees, less the CUDA
context). Probes: fp32 and bf16 at batch 16; then bf16 batches doubled from 16 until one runs out of
memory, bisected down to ``--resolution``. No probe starts after ``--deadline-s``.

Usage: ``python tests/benchmarks/bench_gpu_memory.py [--json PATH] [--deadline-s 150]``; ``--smoke``:
a tiny model on the CPU, the search stopped at ``--max-batch`` (checks the script; no memory figures).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def _bench_gpu():
    path = Path(__file__).resolve().parent / "bench_gpu.py"
    spec = importlib.util.spec_from_file_location("bench_gpu", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


G = _bench_gpu()


def probe(cfg, device: torch.device, batch: int, length: int, dtype, steps: int) -> dict | None:
    """Peak memory of ``steps`` training steps at ``batch`` x ``length``; None if it ran out of memory."""
    from nerlab.losses import PRESETS, LossConfig
    from nerlab.models.encoding import iter_batches
    from nerlab.models.training import TrainConfig, make_optimizer, train_epoch

    try:
        model = G.build_model(cfg, device)
        windows = G.fixed_length_windows(batch * steps, length, cfg, model.schema, np.random.default_rng(cfg.seed))
        order = [list(range(s * batch, (s + 1) * batch)) for s in range(steps)]
        train_cfg = TrainConfig(batch_size=batch, variance_penalty=cfg.variance_penalty, seed=cfg.seed)
        opt, sched = make_optimizer(model, train_cfg, steps)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        stats = train_epoch(model, (b for _, b in iter_batches(windows, order, 0, model.schema.num_heads)), opt,
                            sched, LossConfig(weights=dict(PRESETS["unified"])), train_cfg, device, dtype)
        row = {"batch": batch, "length": length, "precision": "bf16" if dtype is torch.bfloat16 else "fp32",
               "steps": stats.steps, "seconds": time.perf_counter() - start, "fits": True}
        if device.type == "cuda":
            row.update(peak_allocated_gib=torch.cuda.max_memory_allocated(device) / 2**30,
                       peak_reserved_gib=torch.cuda.max_memory_reserved(device) / 2**30)
        return row
    except torch.OutOfMemoryError:
        return None
    finally:  # the failed probe's tensors go before the next one starts
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def largest_batch(cfg, device, length: int, steps: int, start: int, resolution: int, max_batch: int | None,
                  deadline: float) -> dict:
    """Double from ``start`` until a batch does not fit, then bisect to ``resolution``."""
    fits, fails, rows = None, None, []
    batch = start
    while fails is None and (max_batch is None or batch <= max_batch) and time.monotonic() < deadline:
        row = probe(cfg, device, batch, length, torch.bfloat16, steps)
        rows.append(row or {"batch": batch, "fits": False})
        fits, fails = (row, None) if row else (fits, batch)
        batch *= 2
    while fails is not None and fits is not None and fails - fits["batch"] > resolution and time.monotonic() < deadline:
        mid = (fits["batch"] + fails) // 2
        row = probe(cfg, device, mid, length, torch.bfloat16, steps)
        rows.append(row or {"batch": mid, "fits": False})
        fits, fails = (row, fails) if row else (fits, mid)
    return {"largest_fitting": fits, "smallest_failing": fails, "probes": rows, "resolution": resolution,
            "complete": fails is not None and fits is not None and fails - fits["batch"] <= resolution}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--json", type=Path)
    p.add_argument("--length", type=int, help="window length (default 512, the seed's max length)")
    p.add_argument("--batch", type=int, default=16, help="the seed's batch size")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--resolution", type=int, default=16)
    p.add_argument("--max-batch", type=int, help="stop the doubling here (default: none on a GPU, 32 in smoke)")
    p.add_argument("--deadline-s", type=float, default=150.0)
    args = p.parse_args(argv)
    cfg = G.SMOKE if args.smoke else G.Config()
    length = args.length or (64 if args.smoke else 512)
    if args.smoke:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda", 0)
    else:
        print("bench_gpu_memory: no CUDA device (use --smoke on a CPU)", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    deadline = time.monotonic() + args.deadline_s
    seed = {p: probe(cfg, device, args.batch, length, d, args.steps) for p, d in (("fp32", None), ("bf16", torch.bfloat16))}
    search = largest_batch(cfg, device, length, args.steps, args.batch, args.resolution,
                           args.max_batch or (32 if args.smoke else None), deadline)
    total = torch.cuda.get_device_properties(device).total_memory / 2**30 if device.type == "cuda" else None
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "total_memory_gib": total, "config": {"layers": cfg.layers, "hidden": cfg.hidden, "vocab": cfg.vocab},
              "length": length, "seed_batch": args.batch, "seed_settings": seed, "bf16_largest_batch": search}
    for name, row in seed.items():
        mem = f"{row['peak_allocated_gib']:.2f} GiB allocated, {row['peak_reserved_gib']:.2f} reserved" \
            if row and "peak_allocated_gib" in row else ("out of memory" if row is None else "n/a on CPU")
        print(f"{result['device']}: batch {args.batch} x {length}, {name}: {mem}")
    best = search["largest_fitting"]
    print(f"largest bf16 batch x {length}: {best['batch'] if best else 'none'} (first failing: "
          f"{search['smallest_failing']}; {'resolved' if search['complete'] else 'not resolved'} to {args.resolution})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
