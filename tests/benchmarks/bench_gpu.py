"""GPU benchmark: training tokens/s of a bert-base-sized tagger, bf16 autocast vs fp32, and its MFU.

One plain process on one GPU (an H100 or H200), no hub and no data files: a randomly initialised BERT with
``BertConfig`` defaults (12 layers, hidden 768, 12 heads, intermediate 3072) and a 64,000-piece
vocabulary (ARBERTv2-sized) under the 21-head multi-task tagger, trained with the unified loss
(0.4 CE + 0.2 Dice + 0.2 Tversky + 0.2 Focal) and the variance penalty (lambda 5) on synthetic token ids.
Sentence lengths are drawn log-normally, median 32 and clipped to 20..200 sub-words (the Wojood sample
averages 28 sub-words per sentence with [CLS]/[SEP], up to 320 for its longest), and batched by length as
the real loop does. The timed loop is ``nerlab.models.training.train_epoch`` itself: collation,
host-to-device copies, clipping, AdamW and the schedule all count.

fp32 runs with TF32 off, as the reference system's loop did; bf16 runs under ``torch.autocast``. MFU is
6 * N * tokens/s over the GPU's dense bf16 peak, N being the parameters that do matrix work per token
(the encoder layers and heads; the 49M-parameter embedding table is a lookup, so it is left out; the
JSON also gives the figure with all parameters). Peaks assumed (dense, no sparsity): H100/H200 SXM 989,
H100 NVL 835, H100 PCIe 756, A100 312 TFLOP/s; ``--peak-tflops`` overrides.

Speed-ups, each a setting so the GPU run can measure what it buys (``--variants`` runs several in one
process, bf16 only unless ``--precisions`` says otherwise; ``VARIANTS`` below names them):
``--attn eager|sdpa`` (transformers' default is sdpa), ``--fused-adamw`` (one AdamW kernel per step),
``--compile`` (``torch.compile`` of the encoder, dynamic shapes), ``--pin-memory`` (batches in page-locked
memory, copied asynchronously), ``--prefetch N`` (batches collated N ahead on a background thread),
``--batching random`` (no length bucketing, to see what bucketing buys). None changes the numerics except
``--compile`` (kernel fusion reorders float operations).

Usage: ``python tests/benchmarks/bench_gpu.py [--json PATH] [--batch-sizes 16 64] [--steps 100]
[--variants as-written fused-adamw ...] [--deadline-s S]``;
``--smoke`` runs a tiny config on the CPU in seconds (checks the script, measures nothing useful).
Without a CUDA device and without ``--smoke`` it exits with status 2 and says so.
"""

from __future__ import annotations

import argparse
import json
import math
import queue
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

PEAK_BF16_TFLOPS = (  # dense; first match on the device name wins
    ("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("GH200", 989.0),
    ("A100", 312.0),
)
VOCAB = 64_000  # ARBERTv2-ish
MIN_LEN, MAX_LEN, MEDIAN_LEN = 20, 200, 32


@dataclass(frozen=True)
class Config:
    layers: int = 12
    hidden: int = 768
    heads: int = 12
    vocab: int = VOCAB
    batch_sizes: tuple[int, ...] = (16, 64)
    warmup_steps: int = 20
    steps: int = 100
    variance_penalty: float = 5.0
    seed: int = 3407


SMOKE = Config(layers=2, hidden=64, heads=2, vocab=1000, batch_sizes=(8,), warmup_steps=2, steps=4)


@dataclass(frozen=True)
class Options:
    """How the loop runs; the defaults are the seed's loop as nerlab runs it (``as-written``)."""

    attn: str = "sdpa"  # transformers' default for BERT; "eager" is the unfused softmax(QK^T)V
    fused_adamw: bool | None = None  # AdamW(fused=True): one kernel for all parameters; None: nerlab's default (fused)
    compile: bool = False  # torch.compile(encoder, dynamic=True); reorders float operations
    pin_memory: bool = False  # page-locked batches, copied with non_blocking=True (GPU only)
    prefetch: int = 0  # collate this many batches ahead on a background thread
    batching: str = "bucketed"  # "random": no length bucketing (more padding)


VARIANTS = {
    "as-written": Options(),
    "eager-attention": Options(attn="eager"),
    "fused-adamw": Options(fused_adamw=True),
    "pinned-prefetch": Options(pin_memory=True, prefetch=2),
    "random-batches": Options(batching="random"),
    "compile": Options(compile=True),
    "fast": Options(fused_adamw=True, pin_memory=True, prefetch=2),
    "fast-compile": Options(fused_adamw=True, pin_memory=True, prefetch=2, compile=True),
}


def peak_tflops(device_name: str) -> float | None:
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in device_name), None)


def synthetic_windows(n: int, cfg: Config, schema, rng: np.random.Generator):
    """Windows shaped like encoded Wojood sentences: [CLS] pieces [SEP], about 2 pieces per 3 words."""
    from nerlab.models.encoding import Window

    lengths = np.clip(np.round(rng.lognormal(math.log(MEDIAN_LEN), 0.6, n)), MIN_LEN, MAX_LEN).astype(int)
    windows = []
    for i, length in enumerate(lengths):
        ids = rng.integers(5, cfg.vocab, length)
        ids[0], ids[-1] = 2, 3  # [CLS], [SEP] in the tiny PLMs' vocabulary order
        first_pieces = np.flatnonzero(rng.random(length - 2) < 0.67) + 1  # labelled first sub-words
        first_pieces = first_pieces if len(first_pieces) else np.array([1])
        # Mostly O, as in Wojood: ~8% of tokens start or continue an entity of a given head's type.
        heads = rng.choice(3, size=(len(first_pieces), schema.num_heads), p=[0.92, 0.04, 0.04]).astype(np.int8)
        windows.append(Window(i, ids.astype(np.int64), first_pieces.astype(np.int64),
                              np.arange(len(first_pieces)), heads, np.zeros(len(first_pieces), np.int16)))
    return windows


def fixed_length_windows(n: int, length: int, cfg: Config, schema, rng: np.random.Generator):
    """``n`` windows of exactly ``length`` sub-words ([CLS] ... [SEP]), two in three words labelled, mostly O
    (the memory and CPU benchmarks' worst case: every batch at full length)."""
    from nerlab.models.encoding import Window

    out = []
    for i in range(n):
        ids = rng.integers(5, cfg.vocab, length)
        ids[0], ids[-1] = 2, 3
        first = np.flatnonzero(rng.random(length - 2) < 0.67) + 1
        heads = rng.choice(3, size=(len(first), schema.num_heads), p=[0.92, 0.04, 0.04]).astype(np.int8)
        out.append(Window(i, ids.astype(np.int64), first.astype(np.int64), np.arange(len(first)), heads,
                          np.zeros(len(first), np.int16)))
    return out


def build_model(cfg: Config, device: torch.device, attn: str = "sdpa"):
    from transformers import BertConfig, BertModel

    from nerlab.models.schema import LabelSchema
    from nerlab.models.tagger import MultiTaskTagger, TaggerConfig

    torch.manual_seed(cfg.seed)
    bert = BertConfig(vocab_size=cfg.vocab, hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
                      num_attention_heads=cfg.heads, intermediate_size=4 * cfg.hidden, pad_token_id=0, attn_implementation=attn)
    model = MultiTaskTagger(BertModel(bert, add_pooling_layer=False), LabelSchema.wojood("nested"),
                            TaggerConfig(plm="random-bert", dropout=0.1))
    return model.to(device)


def param_counts(model) -> tuple[int, int]:
    """(all parameters, parameters that do matrix work per token: all but the embedding tables)."""
    total = sum(p.numel() for p in model.parameters())
    embeddings = sum(p.numel() for p in model.encoder.embeddings.parameters())
    return total, total - embeddings


def prefetched(batches, depth: int):
    """Yield ``batches`` collated up to ``depth`` ahead by a background thread (exceptions re-raised here)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def produce():
        try:
            for b in batches:
                q.put(b)
            q.put(done)
        except BaseException as e:  # noqa: BLE001
            q.put(e)

    threading.Thread(target=produce, daemon=True).start()
    while (item := q.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


def batch_stream(windows, order, num_heads: int, opts: Options, device: torch.device):
    from nerlab.models.encoding import iter_batches

    batches = (b for _, b in iter_batches(windows, order, 0, num_heads))
    if opts.pin_memory and device.type == "cuda":
        batches = ({k: v.pin_memory() for k, v in b.items()} for b in batches)
    return prefetched(batches, opts.prefetch) if opts.prefetch else batches


def measure(cfg: Config, device: torch.device, batch_size: int, dtype: torch.dtype | None,
            opts: Options = Options()) -> dict:
    """Warm up, then time ``cfg.steps`` steps of the real training loop; tokens are non-padding sub-words."""
    from nerlab.losses import PRESETS, LossConfig
    from nerlab.models.encoding import bucketed_batches, random_batches
    from nerlab.models.training import TrainConfig, make_optimizer, train_epoch

    model = build_model(cfg, device, opts.attn)
    total, dense = param_counts(model)
    rng = np.random.default_rng(cfg.seed)
    windows = synthetic_windows(batch_size * (cfg.warmup_steps + cfg.steps), cfg, model.schema, rng)
    order = (bucketed_batches([len(w) for w in windows], batch_size, cfg.seed) if opts.batching == "bucketed"
             else random_batches(len(windows), batch_size, cfg.seed))
    train_cfg = TrainConfig(batch_size=batch_size, variance_penalty=cfg.variance_penalty, seed=cfg.seed)
    opt, sched = make_optimizer(model, train_cfg, len(order), fused=opts.fused_adamw)
    loss = LossConfig(weights=dict(PRESETS["unified"]))
    if opts.compile:
        model.encoder = torch.compile(model.encoder, dynamic=True)

    def run(batches):
        return train_epoch(model, batch_stream(windows, batches, model.schema.num_heads, opts, device),
                           opt, sched, loss, train_cfg, device, dtype)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warm = time.perf_counter()
    run(order[:cfg.warmup_steps])  # kernels chosen (compiled), allocator warm
    warmup_s = time.perf_counter() - warm
    stats = run(order[cfg.warmup_steps:])
    tokens_per_s = stats.tokens / stats.seconds
    padded = sum(len(b) * max(len(windows[i]) for i in b) for b in order[cfg.warmup_steps:])
    return {
        "precision": "bf16" if dtype is torch.bfloat16 else "fp32", "batch_size": batch_size,
        "steps": stats.steps, "tokens": stats.tokens, "seconds": stats.seconds, "tokens_per_s": tokens_per_s,
        "warmup_s": warmup_s, "padding_efficiency": stats.tokens / padded,
        "loss": stats.loss, "params": total, "dense_params": dense,
        "model_tflops": 6 * dense * tokens_per_s / 1e12,
        "model_tflops_all_params": 6 * total * tokens_per_s / 1e12,
        "max_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }


PRECISIONS = {"bf16": torch.bfloat16, "fp32": None}


def run(cfg: Config, device: torch.device, peak: float | None, opts: Options = Options(),
        precisions: tuple[str, ...] = ("bf16", "fp32"), deadline: float | None = None) -> dict:
    # fp32 means true fp32 (the reference system's loop); the bf16 runs keep the same setting for what stays in fp32.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    rows, skipped = [], []
    for batch_size in cfg.batch_sizes:
        for precision in precisions:
            if deadline is not None and time.monotonic() > deadline:
                skipped.append({"batch_size": batch_size, "precision": precision, "why": "deadline"})
                continue
            row = measure(cfg, device, batch_size, PRECISIONS[precision], opts)
            if peak:
                row["mfu"] = row["model_tflops"] / peak
                row["mfu_all_params"] = row["model_tflops_all_params"] / peak
            rows.append(row)
            print(f"  {precision} batch {batch_size}: {row['tokens_per_s']:.0f} tokens/s", flush=True)
    by = {(r["batch_size"], r["precision"]): r["tokens_per_s"] for r in rows}
    speedup = {str(b): by[(b, "bf16")] / by[(b, "fp32")] for b in cfg.batch_sizes
               if (b, "bf16") in by and (b, "fp32") in by}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"device": name, "peak_bf16_tflops": peak, "config": asdict(cfg), "options": asdict(opts),
            "torch": torch.__version__, "rows": rows, "bf16_speedup": speedup, "skipped": skipped}


def table(r: dict) -> str:
    peak = f"{r['peak_bf16_tflops']:.0f} TFLOP/s bf16 dense" if r["peak_bf16_tflops"] else "unknown (no MFU)"
    c, first = r["config"], r["rows"][0]
    lines = [f"{r['device']}, peak assumed {peak}; {c['layers']}x{c['hidden']} BERT, vocab {c['vocab']}, "
             f"{first['params'] / 1e6:.1f}M params ({first['dense_params'] / 1e6:.1f}M non-embedding); "
             f"{c['steps']} timed steps after {c['warmup_steps']}",
             f"{'precision':<9} {'batch':>5} {'tokens/s':>10} {'TFLOP/s':>8} {'MFU':>6} {'mem GiB':>8}"]
    for row in r["rows"]:
        mfu = f"{row['mfu']:.1%}" if "mfu" in row else "n/a"
        mem = f"{row['max_memory_gib']:.1f}" if row["max_memory_gib"] is not None else "n/a"
        lines.append(f"{row['precision']:<9} {row['batch_size']:>5} {row['tokens_per_s']:>10.0f} "
                     f"{row['model_tflops']:>8.1f} {mfu:>6} {mem:>8}")
    speedups = ", ".join(f"batch {b}: {s:.2f}x" for b, s in r["bf16_speedup"].items())
    if speedups:
        lines.append(f"bf16 / fp32 tokens/s: {speedups}")
    if r.get("skipped"):
        lines.append(f"skipped (past the deadline): {r['skipped']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny config on the CPU: checks that the script runs")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--batch-sizes", type=int, nargs="+", help="default: 16 (the reference system's) and 64")
    p.add_argument("--steps", type=int, help="timed steps per measurement (default 100)")
    p.add_argument("--warmup-steps", type=int, help="untimed steps first (default 20)")
    p.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, if not H100/H200/A100")
    p.add_argument("--precisions", nargs="+", choices=list(PRECISIONS),
                   help="default: bf16 and fp32; with --variants: bf16")
    p.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa")
    p.add_argument("--fused-adamw", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the encoder (changes numerics)")
    p.add_argument("--pin-memory", action="store_true", help="page-locked batches, asynchronous copies")
    p.add_argument("--prefetch", type=int, default=0, help="batches collated ahead on a background thread")
    p.add_argument("--batching", choices=["bucketed", "random"], default="bucketed")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS),
                   help="run these named option sets (instead of the flags above), one after another")
    p.add_argument("--deadline-s", type=float, help="start no measurement after this many seconds")
    args = p.parse_args(argv)
    cfg = SMOKE if args.smoke else Config()
    for key in ("batch_sizes", "steps", "warmup_steps"):
        if getattr(args, key):
            value = getattr(args, key)
            cfg = replace(cfg, **{key: tuple(value) if isinstance(value, list) else value})
    if args.smoke:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda", 0)
    else:
        print("bench_gpu: no CUDA device: this benchmark needs one GPU (an H100 or H200); "
              "use --smoke for a CPU check of the script", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = args.peak_tflops or peak_tflops(name)
    if device.type == "cuda" and peak is None:
        print(f"bench_gpu: unknown peak for {name}: give --peak-tflops for MFU",
              file=sys.stderr)
    start = time.perf_counter()
    deadline = time.monotonic() + args.deadline_s if args.deadline_s else None
    if args.variants:
        precisions = tuple(args.precisions or ("bf16",))
        results = {"device": name, "peak_bf16_tflops": peak, "torch": torch.__version__, "variants": {}}
        for v in args.variants:
            print(f"variant {v}: {asdict(VARIANTS[v])}", flush=True)
            results["variants"][v] = run(cfg, device, peak, VARIANTS[v], precisions, deadline)
            if args.json:  # after each variant: a run stopped at its time limit keeps what it measured
                args.json.write_text(json.dumps({**results, "wall_s": time.perf_counter() - start}, indent=2))
        print(variants_table(results))
    else:
        opts = Options(attn=args.attn, fused_adamw=args.fused_adamw, compile=args.compile,
                       pin_memory=args.pin_memory, prefetch=args.prefetch, batching=args.batching)
        results = run(cfg, device, peak, opts, tuple(args.precisions or PRECISIONS), deadline)
        print(table(results))
    results["wall_s"] = time.perf_counter() - start
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def variants_table(r: dict) -> str:
    """tokens/s and MFU per variant and batch size, and each variant's speed-up over ``as-written``."""
    base = {(row["batch_size"], row["precision"]): row["tokens_per_s"]
            for row in r["variants"].get("as-written", {}).get("rows", [])}
    lines = [f"{r['device']}: {'variant':<16} {'prec':<5} {'batch':>5} {'tokens/s':>10} {'MFU':>6} "
             f"{'vs as-written':>13} {'mem GiB':>8}"]
    for name, v in r["variants"].items():
        for row in v["rows"]:
            b = base.get((row["batch_size"], row["precision"]))
            mfu = f"{row['mfu']:.1%}" if "mfu" in row else "n/a"
            mem = f"{row['max_memory_gib']:.1f}" if row["max_memory_gib"] is not None else "n/a"
            vs = f"{row['tokens_per_s'] / b:.2f}x" if b else "-"
            lines.append(f"{'':<{len(r['device'])}}  {name:<16} {row['precision']:<5} {row['batch_size']:>5} "
                         f"{row['tokens_per_s']:>10.0f} {mfu:>6} {vs:>13} {mem:>8}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
