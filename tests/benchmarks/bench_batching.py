"""Benchmark: length-bucketed vs random-order batches on the real Wojood sample (run by hand, not a test).

    python tests/benchmarks/bench_batching.py [--smoke] [--json PATH]

Reports (a) padding efficiency (real tokens / padded positions) of both batchings, each dynamically padded
to its longest window, at batch sizes 16 and 32; (b) training throughput of the tagger in real tokens per
second with both batchings, measured side by side in one process: the same windows each repeat, the two
orders interleaved so that drift in machine load hits both alike, medians reported.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
from transformers import AutoTokenizer

from nerlab.losses import LossConfig
from nerlab.models.encoding import Window, bucketed_batches, encode, iter_batches, padding_efficiency, random_batches
from nerlab.models.schema import LabelSchema
from nerlab.models.tagger import MultiTaskTagger, TaggerConfig
from nerlab.models.tiny_plm import build_tiny_plm
from nerlab.models.training import TrainConfig, make_optimizer, train_epoch
from nerlab.models.wojood import read_file

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_TRAIN = ROOT / "tests" / "data" / "wojood-sample" / "train.txt"
MAX_LENGTH = 512  # the reference system's window: the whole sample fits, so padding is all that differs


def padding_table(lengths: list[int], batch_sizes: list[int], seeds: int) -> dict:
    """Mean padding efficiency over ``seeds`` shuffles for each batch size."""
    out = {}
    for bs in batch_sizes:
        bucketed = statistics.mean(padding_efficiency(lengths, bucketed_batches(lengths, bs, s)) for s in range(seeds))
        rand = statistics.mean(padding_efficiency(lengths, random_batches(len(lengths), bs, s)) for s in range(seeds))
        out[bs] = {"bucketed": bucketed, "random": rand, "ratio": bucketed / rand}
    return out


def run_once(model, windows: list[Window], batches: list[list[int]], pad_id: int, cfg: TrainConfig,
             opt, sched, loss: LossConfig) -> float:
    """Train over ``batches`` once; real (non-padding) tokens per second."""
    stream = (b for _, b in iter_batches(windows, batches, pad_id, model.schema.num_heads))
    stats = train_epoch(model, stream, opt, sched, loss, cfg, torch.device("cpu"))
    return stats.tokens_per_second


def throughput(model, windows: list[Window], pad_id: int, batch_size: int, repeats: int) -> dict:
    """Median tokens/s of both batchings over ``repeats`` interleaved passes (one warm-up pass each)."""
    cfg = TrainConfig(batch_size=batch_size, lr=1e-4, variance_penalty=5.0)
    loss = LossConfig.preset("unified")
    lengths = [len(w) for w in windows]
    opt, sched = make_optimizer(model, cfg, total_steps=10**6)  # a flat schedule: lr barely moves
    results: dict[str, list[float]] = {"bucketed": [], "random": []}
    for r in range(repeats + 1):
        orders = {"bucketed": bucketed_batches(lengths, batch_size, seed=r),
                  "random": random_batches(len(lengths), batch_size, seed=r)}
        # Alternate which goes first, so neither always runs on a warmer cache or a quieter machine.
        for name in (("bucketed", "random") if r % 2 else ("random", "bucketed")):
            tps = run_once(model, windows, orders[name], pad_id, cfg, opt, sched, loss)
            if r:  # pass 0 warms up allocators and kernels
                results[name].append(tps)
    med = {k: statistics.median(v) for k, v in results.items()}
    return {"tokens_per_s": results, "median_bucketed": med["bucketed"], "median_random": med["random"],
            "ratio": med["bucketed"] / med["random"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds: small subset, one repeat")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--windows", type=int, default=384, help="windows trained on per pass")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.smoke:
        args.layers, args.hidden, args.windows, args.repeats = 2, 64, 32, 1
    transformers.logging.set_verbosity_error()  # the unused pooler's load report is noise here
    transformers.logging.disable_progress_bar()
    batch_sizes = [16, 32]
    start = time.perf_counter()

    sentences = read_file(SAMPLE_TRAIN)
    schema = LabelSchema.wojood("nested")
    with tempfile.TemporaryDirectory() as tmp:
        plm = build_tiny_plm([SAMPLE_TRAIN], Path(tmp) / "plm", layers=args.layers, hidden=args.hidden,
                             heads=max(1, args.hidden // 64), seed=0)
        tok = AutoTokenizer.from_pretrained(plm)
        torch.manual_seed(0)
        model = MultiTaskTagger.from_plm(str(plm), schema, TaggerConfig(plm=str(plm), max_length=MAX_LENGTH))
    windows = encode(sentences, tok, schema, MAX_LENGTH)
    lengths = [len(w) for w in windows]
    padding = padding_table(lengths, batch_sizes, seeds=5)

    # The same random subset of windows for both batchings: equal work, only the grouping differs.
    subset = random.Random(0).sample(windows, min(args.windows, len(windows)))
    speed = {bs: throughput(model, subset, tok.pad_token_id, bs, args.repeats) for bs in batch_sizes}
    elapsed = time.perf_counter() - start

    print(f"Wojood sample train: {len(sentences)} sentences, {len(windows)} windows, {sum(lengths)} sub-words; "
          f"tiny BERT {args.layers}x{args.hidden}, {torch.get_num_threads()} CPU threads, "
          f"{len(subset)} windows x {args.repeats} interleaved repeats{' (smoke)' if args.smoke else ''}")
    print(f"{'batch':>5} | {'pad eff bucketed':>16} {'random':>7} {'ratio':>6} | "
          f"{'tok/s bucketed':>14} {'random':>7} {'ratio':>6}")
    for bs in batch_sizes:
        p, s = padding[bs], speed[bs]
        print(f"{bs:>5} | {p['bucketed']:>16.3f} {p['random']:>7.3f} {p['ratio']:>6.2f} | "
              f"{s['median_bucketed']:>14.0f} {s['median_random']:>7.0f} {s['ratio']:>6.2f}")
    print(f"total {elapsed:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"smoke": args.smoke, "layers": args.layers, "hidden": args.hidden, "threads": torch.get_num_threads(),
                  "windows": len(windows), "subset_windows": len(subset), "repeats": args.repeats,
                  "padding_efficiency": {str(k): v for k, v in padding.items()},
                  "throughput": {str(k): v for k, v in speed.items()}, "seconds": elapsed}
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
