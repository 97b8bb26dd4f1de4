"""CPU benchmark: training tokens/s of a bert-base-sized tagger, bf16 autocast vs fp32, and its MFU against the
matmul peak measured in the same run on the same machine.

The model and the timed loop are bench_gpu.py's (a randomly initialised 12 x 768 BERT, 64,000-piece vocabulary,
the 21-head tagger, the unified loss with the variance penalty, ``nerlab.models.training.train_epoch`` itself),
here on batches of 16 windows of exactly 128 sub-words (``--length``), with ``torch.set_num_threads(--threads)``
(default 2: the threads a worker of ``cpus_per_worker: 2`` gets).

MFU = (6 x non-embedding parameters x tokens/s + attention) / peak, attention counting 12 x layers x length x
hidden FLOPs per token (QK^T and AV, forward and backward), peak being the best of ``--peak-reps`` square
``--peak-n`` matmuls in the same dtype, measured before and after the variants (the machine is shared; the
higher figure is the peak). Variants, interleaved round by round (``--rounds``), the median kept:
fp32 (the reference system's precision), bf16 (autocast as ``precision: auto`` gives on a CPU with AMX or
AVX512-BF16), bf16 with eager attention instead of SDPA, bf16 with AdamW's per-tensor loop instead of its fused
kernel (nerlab's default), and fp32 with eager attention.

Usage: ``python tests/benchmarks/bench_cpu.py [--json PATH] [--steps 4] [--rounds 1]``; ``--smoke``: a tiny
encoder in seconds (checks the script, measures nothing useful).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gpu import SMOKE, Config, Options, build_model, fixed_length_windows, param_counts  # noqa: E402

VARIANTS = {  # name -> (autocast dtype, loop options)
    "fp32": (None, Options()),
    "bf16": (torch.bfloat16, Options()),
    "bf16-eager-attention": (torch.bfloat16, Options(attn="eager")),
    "bf16-unfused-adamw": (torch.bfloat16, Options(fused_adamw=False)),  # nerlab's optimiser before it fused
    "fp32-eager-attention": (None, Options(attn="eager")),
}


def matmul_peak(n: int, dtype: torch.dtype, reps: int) -> float:
    """Best TFLOP/s of an n x n x n matmul in ``dtype`` (one warm-up first)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e12)
    return best


def measure(cfg: Config, batch_size: int, length: int, dtype, opts: Options, steps: int, warmup: int) -> dict:
    from nerlab.losses import PRESETS, LossConfig
    from nerlab.models.encoding import iter_batches
    from nerlab.models.training import TrainConfig, make_optimizer, train_epoch

    device = torch.device("cpu")
    model = build_model(cfg, device, opts.attn)
    total, dense = param_counts(model)
    windows = fixed_length_windows(batch_size * (warmup + steps), length, cfg, model.schema, np.random.default_rng(cfg.seed))
    order = [list(range(i, i + batch_size)) for i in range(0, len(windows), batch_size)]
    train_cfg = TrainConfig(batch_size=batch_size, variance_penalty=cfg.variance_penalty, seed=cfg.seed)
    opt, sched = make_optimizer(model, train_cfg, len(order), fused=opts.fused_adamw)
    loss = LossConfig(weights=dict(PRESETS["unified"]))

    def run(batches):
        return train_epoch(model, (b for _, b in iter_batches(windows, batches, 0, model.schema.num_heads)),
                           opt, sched, loss, train_cfg, device, dtype)

    run(order[:warmup])
    stats = run(order[warmup:])
    tokens_per_s = stats.tokens / stats.seconds
    flops_per_token = 6 * dense + 12 * cfg.layers * length * cfg.hidden
    return {"tokens_per_s": tokens_per_s, "tflops": flops_per_token * tokens_per_s / 1e12, "steps": stats.steps,
            "seconds": stats.seconds, "params": total, "dense_params": dense, "loss": stats.loss}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--json", type=Path)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--peak-n", type=int, default=4096)
    p.add_argument("--peak-reps", type=int, default=5)
    args = p.parse_args(argv)
    cfg = Config()
    if args.smoke:
        cfg = replace(SMOKE)
        args.length, args.steps, args.warmup_steps, args.peak_n, args.peak_reps = 32, 2, 1, 256, 2
    torch.set_num_threads(args.threads)
    from nerlab.models.precision import cpu_bf16_supported

    start, load_before = time.perf_counter(), os.getloadavg()[0]
    peaks = {"fp32": [matmul_peak(args.peak_n, torch.float32, args.peak_reps)],
             "bf16": [matmul_peak(args.peak_n, torch.bfloat16, args.peak_reps)]}
    per_variant: dict[str, list[dict]] = {v: [] for v in args.variants}
    for r in range(args.rounds):
        for v in args.variants:
            dtype, opts = VARIANTS[v]
            row = measure(cfg, args.batch_size, args.length, dtype, opts, args.steps, args.warmup_steps)
            per_variant[v].append(row)
            print(f"round {r + 1} {v}: {row['tokens_per_s']:.0f} tokens/s, {row['tflops']:.3f} TFLOP/s", flush=True)
    peaks["fp32"].append(matmul_peak(args.peak_n, torch.float32, args.peak_reps))
    peaks["bf16"].append(matmul_peak(args.peak_n, torch.bfloat16, args.peak_reps))
    peak = {k: max(v) for k, v in peaks.items()}
    rows = []
    for v, runs in per_variant.items():
        tps = statistics.median(x["tokens_per_s"] for x in runs)
        tflops = statistics.median(x["tflops"] for x in runs)
        prec = "fp32" if VARIANTS[v][0] is None else "bf16"
        rows.append({"variant": v, "precision": prec, "tokens_per_s": tps, "tflops": tflops,
                     "mfu": tflops / peak[prec], "runs": runs, "options": asdict(VARIANTS[v][1])})
    base = next((r["tokens_per_s"] for r in rows if r["variant"] == "fp32"), None)
    for row in rows:
        row["vs_fp32"] = row["tokens_per_s"] / base if base else None
    results = {"cpu_bf16_supported": cpu_bf16_supported(), "threads": args.threads, "batch_size": args.batch_size,
               "length": args.length, "config": asdict(cfg), "peak_tflops": peak, "peak_runs": peaks,
               "torch": torch.__version__, "rows": rows, "wall_s": time.perf_counter() - start,
               "load_avg_1min": [load_before, os.getloadavg()[0]], "cpus": os.cpu_count()}
    print(f"matmul peak {args.peak_n}^2 ({args.threads} threads): fp32 {peak['fp32']:.2f}, "
          f"bf16 {peak['bf16']:.2f} TFLOP/s")
    for row in rows:
        vs = f"{row['vs_fp32']:.2f}x" if row["vs_fp32"] else "-"
        print(f"  {row['variant']:<22} {row['tokens_per_s']:>8.0f} tokens/s {row['tflops']:>6.3f} TFLOP/s "
              f"MFU {row['mfu']:.1%} of the {row['precision']} peak, {vs} fp32")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
