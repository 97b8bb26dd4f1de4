"""Benchmark: the reference system's recipe on the real Wojood sample, nested task (run by hand, not a test).

    python tests/benchmarks/bench_seed_recipe.py [--smoke] [--json PATH] [--epochs N] [--seeds S ...]

About 10 minutes with the defaults on one thread of a busy 2-core machine (12 runs x 8 epochs); --smoke: 30 s.

Trains, in one process with ``models/training.fit`` (no Ray), a tiny BERT built from the sample's training
split, with the same budget, batches and seeds for every variant:
  (a) ``unified``: nerlab's unified loss (no IRM), masked normalisation, length-bucketed batches;
  (b) ``unified-seed``: the reference system's exact unified loss, 0.4 (CE + 5 IRM) + 0.2 Dice + 0.2 Tversky + 0.2 Focal;
  (c) (b) with the reference normalisation (every padded position, O/B/I/<pad>, no attention mask), which
      needs random-order batches;
each with λ = 0 and λ = 5. Every epoch is scored on validation and test and its validation loss (without the
variance penalty) is recorded, so both selections are read off one run: the best validation F1 (nerlab) and
the lowest validation loss (the reference system). Also: the time per training epoch with the IRM term over without it
(``unified-seed`` vs ``unified`` on the same batches and weights, interleaved repeats, medians), in both
normalisations.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
from transformers import AutoTokenizer

from nerlab.losses import LossConfig, combined
from nerlab.models.encoding import encode, iter_batches
from nerlab.models.schema import LabelSchema
from nerlab.models.tagger import MultiTaskTagger, TaggerConfig
from nerlab.models.tiny_plm import build_tiny_plm
from nerlab.models.training import TrainConfig, eval_batch_size, evaluate, fit, loss_sum, make_optimizer, \
    seed_everything, train_batches, train_epoch
from nerlab.models.wojood import read_file

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "data" / "wojood-sample"
MAX_LENGTH = 512  # the reference system's window: every sample sentence fits, as in the reference (no windows)
VARIANTS = {  # name -> (loss preset, normalisation, batch order)
    "a unified": ("unified", "masked", "bucketed"),
    "b unified-seed": ("unified-seed", "masked", "bucketed"),
    "c unified-seed, reference": ("unified-seed", "reference", "random"),
}


def load(args):
    schema = LabelSchema.wojood("nested")
    splits = {s: read_file(SAMPLE / f"{s}.txt", task="nested") for s in ("train", "val", "test")}
    if args.train_sentences:
        splits["train"] = splits["train"][:args.train_sentences]
    tmp = tempfile.mkdtemp(prefix="bench-seed-plm-")
    plm = build_tiny_plm([SAMPLE / "train.txt"], Path(tmp), layers=args.layers, hidden=args.hidden,
                         heads=max(1, args.hidden // 32), intermediate=2 * args.hidden, vocab_size=1500, seed=0)
    tok = AutoTokenizer.from_pretrained(plm)
    windows = {s: encode(v, tok, schema, MAX_LENGTH) for s, v in splits.items()}
    return schema, splits, windows, str(plm), tok


def new_model(plm: str, schema, normalisation: str, seed: int) -> MultiTaskTagger:
    seed_everything(seed)
    cfg = TaggerConfig(plm=plm, max_length=MAX_LENGTH, normalisation=normalisation)
    return MultiTaskTagger.from_plm(plm, schema, cfg)


def train_variant(name: str, lam: float, seed: int, data, args) -> dict:
    schema, splits, windows, plm, tok = data
    preset, normalisation, order = VARIANTS[name]
    loss = LossConfig.preset(preset)
    cfg = TrainConfig(epochs=args.epochs, batch_size=16, lr=args.lr, warmup_ratio=0.05, variance_penalty=lam,
                      patience=args.epochs, seed=seed, batch_order=order)
    model = new_model(plm, schema, normalisation, seed)
    pad, cpu = tok.pad_token_id, torch.device("cpu")
    epochs = []

    def log(epoch, stats, report):  # as the worker loop evaluates (the reference normalisation: file order, 16)
        size = eval_batch_size(cfg, model.config.reference)
        total, n = loss_sum(model, windows["val"], size, pad, loss, cfg, cpu)
        test, _ = evaluate(model, splits["test"], windows["test"], "nested", size, pad)
        epochs.append({"epoch": epoch + 1, "val_f1": report.micro.f1, "val_loss": total / max(n, 1),
                       "test_f1": test.micro.f1, "train_seconds": stats.seconds})

    fit(model, tok, windows["train"], splits["val"], windows["val"], cfg, loss, "nested", log=log)
    by_f1 = max(epochs, key=lambda e: e["val_f1"])
    by_loss = min(epochs, key=lambda e: e["val_loss"])
    return {"variant": name, "lambda": lam, "seed": seed, "epochs": epochs,
            "by_val_f1": {k: by_f1[k] for k in ("epoch", "val_f1", "test_f1")},
            "by_val_loss": {k: by_loss[k] for k in ("epoch", "val_f1", "test_f1")}}


def irm_time_ratio(data, normalisation: str, args) -> dict:
    """Seconds per training epoch with the IRM term over without, same batches and weights, interleaved.

    A shared machine's load swings more than the IRM term costs, so the ratio is of the fastest of several
    interleaved epochs (the least disturbed), and the loss alone is timed too: forward and backward of
    ``combined`` on a real batch's head logits, with and without IRM."""
    schema, _, windows, plm, tok = data
    order = "random" if normalisation == "reference" else "bucketed"
    cfg = TrainConfig(batch_size=16, lr=1e-4, variance_penalty=5.0, batch_order=order)
    train_w = windows["train"][:args.timing_windows or None]
    batches = train_batches([len(w) for w in train_w], cfg, 0)
    model = new_model(plm, schema, normalisation, 0)
    opt, sched = make_optimizer(model, cfg, total_steps=10**6)
    presets = ("unified", "unified-seed")
    seconds: dict[str, list[float]] = {p: [] for p in presets}
    for r in range(args.repeats + 1):
        for preset in (presets if r % 2 else presets[::-1]):
            stream = (b for _, b in iter_batches(train_w, batches, tok.pad_token_id, schema.num_heads))
            stats = train_epoch(model, stream, opt, sched, LossConfig.preset(preset), cfg, torch.device("cpu"))
            if r:  # pass 0 warms up
                seconds[preset].append(stats.seconds)
    fastest = {k: min(v) for k, v in seconds.items()}
    loss_only = loss_only_times(model, train_w, batches, tok, cfg, args)
    extra_s = loss_only["extra_ms_per_step"] * len(batches) / 1000
    return {"seconds": seconds, "ratio": fastest["unified-seed"] / fastest["unified"], "windows": len(train_w),
            "steps": len(batches), "loss_only": loss_only,
            "ratio_from_loss": (fastest["unified"] + extra_s) / fastest["unified"]}


def loss_only_times(model, windows, batches, tok, cfg, args) -> dict:
    """Milliseconds per step of the loss alone (forward + backward on fixed head logits), fastest of repeats."""
    captured = []
    for _, batch in iter_batches(windows, batches[:8], tok.pad_token_id, model.schema.num_heads):
        with torch.no_grad():  # the logits the loss sees in this normalisation: (N, K, C) and targets
            if model.config.reference:
                heads, _ = model(batch["input_ids"], batch["attention_mask"], None)
                target = torch.where(batch["attention_mask"].bool()[..., None], batch["head_targets"], 3)
                captured.append((heads.flatten(0, 1), target.flatten(0, 1)))
            else:
                mask = batch["label_mask"]
                heads, _ = model(batch["input_ids"], batch["attention_mask"], mask)
                captured.append((heads, batch["head_targets"][mask]))
    out = {}
    for preset in ("unified", "unified-seed"):
        spec, best = LossConfig.preset(preset), float("inf")
        for _ in range(args.repeats * 5):
            start = time.perf_counter()
            for logits, target in captured:
                x = logits.clone().requires_grad_(True)
                combined(x, target, None, spec).sum().backward()
            best = min(best, (time.perf_counter() - start) / len(captured))
        out[preset] = best * 1000
    out["extra_ms_per_step"] = out["unified-seed"] - out["unified"]
    return out


def mean(values) -> float:
    return statistics.mean(values) if values else float("nan")


def table(runs: list[dict]) -> list[dict]:
    rows = []
    for name in VARIANTS:
        for lam in sorted({r["lambda"] for r in runs}):
            rs = [r for r in runs if r["variant"] == name and r["lambda"] == lam]
            row = {"variant": name, "lambda": lam, "seeds": len(rs)}
            for sel in ("by_val_f1", "by_val_loss"):
                for k in ("val_f1", "test_f1", "epoch"):
                    row[f"{sel}.{k}"] = mean([r[sel][k] for r in rs])
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a minute: 64 sentences, 1 epoch, 1 seed")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[3407, 1])
    parser.add_argument("--lr", type=float, default=2e-3, help="a tiny encoder from scratch needs far more than 2e-5")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--train-sentences", type=int, default=0, help="0: the whole training split")
    parser.add_argument("--timing-windows", type=int, default=0, help="0: the whole training split")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--timing-only", action="store_true",
                        help="measure the IRM cost only; keep the F1 runs of an existing --json file")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.seeds, args.train_sentences, args.timing_windows, args.repeats = 1, [3407], 64, 32, 1
        args.timing_only = False
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    start = time.perf_counter()
    data = load(args)

    runs = []
    if args.timing_only and args.json and args.json.is_file():
        runs = json.loads(args.json.read_text())["runs"]
    for name in VARIANTS if not runs else ():
        for lam in (0.0, 5.0):
            for seed in args.seeds:
                runs.append(train_variant(name, lam, seed, data, args))
                r = runs[-1]
                print(f"  {name:<27} λ={lam:g} seed {seed}: best val F1 {r['by_val_f1']['val_f1']:.4f} "
                      f"(epoch {r['by_val_f1']['epoch']}), lowest val loss at epoch {r['by_val_loss']['epoch']}",
                      flush=True)
    timing = {n: irm_time_ratio(data, n, args) for n in ("masked", "reference")}
    elapsed = time.perf_counter() - start

    rows = table(runs)
    print(f"\nWojood sample, nested: {len(data[1]['train'])} train / {len(data[1]['val'])} val / "
          f"{len(data[1]['test'])} test sentences; tiny BERT {args.layers}x{args.hidden} from scratch, lr {args.lr:g}, "
          f"{args.epochs} epochs, batch 16, seeds {args.seeds}, {args.threads} thread(s){' (smoke)' if args.smoke else ''}")
    print(f"{'variant':<27} {'λ':>3} | {'best val F1: val':>16} {'test':>7} {'epoch':>5} | "
          f"{'lowest val loss: val':>20} {'test':>7} {'epoch':>5}")
    for row in rows:
        print(f"{row['variant']:<27} {row['lambda']:>3g} | {row['by_val_f1.val_f1']:>16.4f} {row['by_val_f1.test_f1']:>7.4f} "
              f"{row['by_val_f1.epoch']:>5.1f} | {row['by_val_loss.val_f1']:>20.4f} {row['by_val_loss.test_f1']:>7.4f} "
              f"{row['by_val_loss.epoch']:>5.1f}")
    for n, t in timing.items():
        lo = t["loss_only"]
        print(f"IRM time per epoch, {n} normalisation: {t['ratio']:.3f}x (unified-seed / unified, fastest of "
              f"{args.repeats} interleaved epochs over {t['windows']} windows); the loss alone: "
              f"{lo['unified-seed']:.2f} vs {lo['unified']:.2f} ms per step, +{lo['extra_ms_per_step']:.2f} ms "
              f"x {t['steps']} steps = +{lo['extra_ms_per_step'] * t['steps'] / 1000:.2f} s per epoch of "
              f"{min(t['seconds']['unified']):.1f} s ({t['ratio_from_loss']:.3f}x)")
    print(f"total {elapsed:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"smoke": args.smoke, "layers": args.layers, "hidden": args.hidden, "epochs": args.epochs,
                  "seeds": args.seeds, "lr": args.lr, "threads": args.threads, "rows": rows, "runs": runs,
                  "irm_time": timing, "seconds": elapsed}
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
