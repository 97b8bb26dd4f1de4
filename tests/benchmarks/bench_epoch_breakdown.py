"""Benchmark: where the time of one training epoch goes, fp32 vs bf16, random vs length-bucketed batches.

One epoch of a tagger over a randomly initialised 2 x 768 encoder (the tiny-PLM recipe on the Wojood sample's train
split; CE, batch 16, lr 1e-4, as the side-by-side run against the reference system's code) on the sample's train
split, in one process, split into: data (collating a batch), forward (the task losses, under autocast),
backward, optimiser (clipping, AdamW, the schedule), validation (scoring the val split, as every epoch does) and
checkpointing (the model, optimiser and scheduler states written as the worker writes them). The steps are those
of ``nerlab.models.training``; the split needs a clock between them, so the loop is written out here step by step.
Logging (MLflow, Ray reports) happens in the Ray worker only and is not in this split.

Usage: ``python tests/benchmarks/bench_epoch_breakdown.py [--json PATH] [--threads 2]``; ``--smoke``: 2 x 64.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "data" / "wojood-sample"


def epoch(model, tok, train_w, val_s, val_w, order: str, dtype, folder: Path) -> dict:
    from safetensors.torch import save_model

    from nerlab.losses import LossConfig, multitask_loss
    from nerlab.models.encoding import iter_batches
    from nerlab.models.training import (TrainConfig, epoch_batches, evaluate, make_optimizer, seed_everything,
                                        task_losses)

    cfg = TrainConfig(batch_size=16, lr=1e-4, batch_order=order, epochs=1)
    device = torch.device("cpu")
    loss = LossConfig()
    seed_everything(cfg.seed)
    batches = epoch_batches([len(w) for w in train_w], cfg, 1)
    opt, sched = make_optimizer(model, cfg, len(batches))
    t = dict.fromkeys(("data", "forward", "backward", "optimiser", "validation", "checkpoint"), 0.0)
    model.train()
    it = iter(iter_batches(train_w, batches, tok.pad_token_id, model.schema.num_heads))
    start = time.perf_counter()
    while True:
        a = time.perf_counter()
        try:
            _, batch = next(it)
        except StopIteration:
            break
        b = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            losses = task_losses(model, batch, loss, device)
        total, _ = multitask_loss(losses, cfg.variance_penalty)
        c = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        total.backward()
        d = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        e = time.perf_counter()
        t["data"] += b - a
        t["forward"] += c - b
        t["backward"] += d - c
        t["optimiser"] += e - d
    a = time.perf_counter()
    evaluate(model, val_s, val_w, model.schema.task, 2 * cfg.batch_size, tok.pad_token_id, device, dtype)
    b = time.perf_counter()
    save_model(model, str(folder / "model.safetensors"))
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, folder / "optim.pt")
    c = time.perf_counter()
    t["validation"], t["checkpoint"] = b - a, c - b
    t["epoch"] = c - start
    t["fused_adamw"] = bool(opt.defaults.get("fused"))
    return t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--json", type=Path)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    from transformers import AutoTokenizer

    from nerlab.models.encoding import encode
    from nerlab.models.schema import LabelSchema
    from nerlab.models.tagger import MultiTaskTagger, TaggerConfig
    from nerlab.models.tiny_plm import build_tiny_plm
    from nerlab.models.wojood import read_file

    torch.set_num_threads(args.threads)
    hidden = 64 if args.smoke else 768
    tmp = Path(tempfile.mkdtemp(prefix="bench_epoch."))
    plm = build_tiny_plm([SAMPLE / "train.txt"], tmp / "plm", layers=2, hidden=hidden, heads=max(1, hidden // 64))
    tok = AutoTokenizer.from_pretrained(plm)
    schema = LabelSchema.wojood("nested")
    train_s, val_s = read_file(SAMPLE / "train.txt"), read_file(SAMPLE / "val.txt")
    if args.smoke:
        train_s, val_s = train_s[:64], val_s[:32]
    train_w, val_w = encode(train_s, tok, schema, 512), encode(val_s, tok, schema, 512)
    rows = []
    for order in ("random", "bucketed"):
        for precision, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            torch.manual_seed(0)
            model = MultiTaskTagger.from_plm(str(plm), schema, TaggerConfig(plm=str(plm)))
            t = epoch(model, tok, train_w, val_s, val_w, order, dtype, tmp)
            rows.append({"batch_order": order, "precision": precision, "seconds": t})
            print(f"{order:<8} {precision}: " + ", ".join(f"{k} {v:.2f} s" for k, v in t.items() if k != "fused_adamw"),
                  flush=True)
    results = {"encoder": f"2x{hidden}", "threads": args.threads, "train_windows": len(train_w),
               "torch": torch.__version__, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
